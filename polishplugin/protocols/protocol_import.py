"""Scipion protocol: import movies together with their global alignment from a RELION MotionCorr
job (``corrected_micrographs.star`` and its per-movie metadata STARs), so that polishing and
training can start from an alignment made outside Scipion."""
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA

from .protocol_base import ProtPolishBase


def find_relion_root(star):
    """The folder the STAR's paths are relative to: RELION writes them relative to its project
    folder (``MotionCorr/job002/...``), so the nearest folder above the STAR where the first
    metadata file exists; None when none does."""
    from ..io.motioncorr import read_corrected_micrographs
    _, mics = read_corrected_micrographs(star)
    mics.require(("rlnMicrographMetadata",), star, "micrographs")
    meta = str(mics["rlnMicrographMetadata"][0])
    if os.path.isabs(meta):
        return os.path.dirname(meta) if os.path.exists(meta) else None
    folder = os.path.dirname(os.path.abspath(star))
    while True:
        if os.path.exists(os.path.join(folder, meta)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


class ProtPolishImportMovies(ProtPolishBase):
    """Import the movies of a RELION MotionCorr job with their global shifts (its
    corrected_micrographs.star and the metadata STAR of each movie): pixel size, dose, voltage
    and gain come from those files, the shifts become each movie's alignment."""
    _label = "import movies with alignment"
    _devStatus = BETA
    _possibleOutputs = {"outputMovies": "SetOfMovies"}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("starFile", params.FileParam, important=True,
                      label="corrected_micrographs.star",
                      help="The STAR a RELION MotionCorr job (or MotionCor2/3 through RELION) "
                           "writes; each row names a movie's metadata STAR with its shifts.")
        form.addParam("projectDir", params.FolderParam, default="",
                      label="RELION project folder (optional)",
                      help="Folder the STAR's paths are relative to; empty = the nearest folder "
                           "above the STAR where they exist.")

    def _insertAllSteps(self):
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _root(self):
        return self.projectDir.get() or find_relion_root(self.starFile.get())

    def createOutputStep(self):
        from ..io.convert import read_set_of_movies
        movies = self._createSetOfMovies()
        read_set_of_movies(os.path.abspath(self.starFile.get()), movies,
                           os.path.abspath(self._root()))
        self._defineOutputs(outputMovies=movies)

    def _validate(self):
        from ..io.errors import InputError
        star = self.starFile.get() or ""
        if not os.path.exists(star):
            return ["File not found: %r" % star]
        try:
            root = self._root()
        except InputError as exc:
            return [str(exc)]
        if root is None:
            return ["The metadata STARs %s names were not found in any folder above it: give "
                    "the RELION project folder." % star]
        from ..io.motioncorr import read_corrected_micrographs, read_micrograph_metadata
        _, mics = read_corrected_micrographs(star)
        errors = []
        for meta in mics["rlnMicrographMetadata"]:
            path = meta if os.path.isabs(str(meta)) else os.path.join(root, str(meta))
            if not os.path.exists(path):
                errors.append("Metadata STAR missing: %s" % path)
                continue
            md = read_micrograph_metadata(path)
            for f in (md.movie_name, md.gain_name):
                if f and not os.path.exists(f if os.path.isabs(f) else os.path.join(root, f)):
                    errors.append("File missing: %s (named in %s)" % (f, path))
        return errors[:10]

    def _summary(self):
        if not self.hasAttribute("outputMovies"):
            return ["Outputs not ready yet."]
        return ["%d movies with their global alignment from %s"
                % (self.outputMovies.getSize(), self.starFile.get())]

    def _citations(self):
        return ["Zivanov2019"]
