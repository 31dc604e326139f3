"""What every polishplugin protocol shares: running one of our programs through ``runJob`` (so
Scipion's MPI and queue submission apply) with the plugin's environment."""
import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol

from .. import Plugin


class ProtPolishBase(EMProtocol):
    """Base class (no ``_label``: hidden from the GUI)."""

    def runProgram(self, program, args, numberOfMpi=1, numberOfThreads=1):
        """Run ``python -m polishplugin.programs.<program> <args>`` in the run folder."""
        self.runJob(Plugin.getPython(), "-m polishplugin.programs.%s %s" % (program, args),
                    env=Plugin.getEnviron(), numberOfMpi=numberOfMpi,
                    numberOfThreads=numberOfThreads)


class ProtPolishMovieBase(ProtPolishBase):
    """Base of the protocols that read movies with their particles and half maps (training,
    polishing): the input form, their conversion to RELION files, and the checks they share.
    No ``_label``: hidden from the GUI."""

    def _defineInputParams(self, form):
        form.addParam("inputMovies", params.PointerParam, pointerClass="SetOfMovies",
                      important=True, label="Movies",
                      help="Movies with their global alignment (the earlier motion correction): "
                           "its shifts start the tracks. Gain and dose come from the set.")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      pointerCondition="hasAlignmentProj", important=True, label="Particles",
                      help="Particles with 3D alignment, CTF, coordinates and half-sets "
                           "(_rlnRandomSubset), at the movies' pixel size.")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume", important=True,
                      label="Reference with half maps",
                      help="The refinement's map; its two half maps are used, each particle "
                           "against the map of its own half-set.")
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask",
                      allowsNull=True, label="Mask (optional)")

    def _insertConvertStep(self):
        ids = [self.inputMovies.get().getObjId(), self.inputParticles.get().getObjId(),
               self.inputVolume.get().getObjId()]
        self._insertFunctionStep(self.convertInputStep, *ids, needsGPU=False)

    def _inputDir(self, *p):
        return self._getExtraPath("input", *p)

    def convertInputStep(self, movId, partId, volId):
        """Movies -> corrected_micrographs.star + metadata STARs; particles -> particles.star."""
        from ..io import convert
        os.makedirs(self._inputDir("metadata"), exist_ok=True)
        convert.write_set_of_movies(self.inputMovies.get(),
                                    self._inputDir("corrected_micrographs.star"),
                                    self._inputDir("metadata"))
        convert.write_set_of_particles(self.inputParticles.get(), self._inputDir("particles.star"))

    def _halfMaps(self):
        vol = self.inputVolume.get()
        halves = [h for h in ((vol.getHalfMaps() if vol is not None else "") or "").split(",")
                  if h]
        return halves if len(halves) == 2 else (None, None)

    def _inputArgs(self):
        """The program arguments naming the converted inputs, half maps and mask."""
        half1, half2 = self._halfMaps()
        args = ["--particles %s" % os.path.abspath(self._inputDir("particles.star")),
                "--mics %s" % os.path.abspath(self._inputDir("corrected_micrographs.star")),
                "--half1 %s --half2 %s" % (os.path.abspath(half1), os.path.abspath(half2))]
        if self.inputMask.get() is not None:
            args.append("--mask %s" % os.path.abspath(self.inputMask.get().getFileName()))
        return args

    def _validateInputs(self, first_frame, last_frame):
        """Errors shared by every movie job (before any work starts)."""
        movies, parts, vol = (self.inputMovies.get(), self.inputParticles.get(),
                              self.inputVolume.get())
        if movies is None or parts is None or vol is None:
            return ["Movies, particles and a reference volume are needed."]
        errors = []
        if None in self._halfMaps():
            errors.append("The reference volume has no half maps: each particle is aligned "
                          "against the half map of its own half-set.")
        if parts.getAlignment() != "Projection":
            errors.append("The particles have no 3D alignment (projection angles).")
        if not parts.hasCTF():
            errors.append("The particles have no CTF.")
        first = parts.getFirstItem()
        if first is not None and (first.getCoordinate() is None or
                                  first.getCoordinate().getX() is None):
            errors.append("The particles have no coordinates on the micrographs.")
        pm, pp, pv = movies.getSamplingRate(), parts.getSamplingRate(), vol.getSamplingRate()
        if abs(pm - pp) > 1e-3 * pp:
            errors.append("Pixel sizes differ: movies %.4f A, particles %.4f A (re-extract the "
                          "particles at the movies' pixel size)." % (pm, pp))
        if abs(pv - pp) > 1e-3 * pp:
            errors.append("Pixel sizes differ: reference %.4f A, particles %.4f A." % (pv, pp))
        dims = movies.getDim()
        nframes = dims[2] if dims else None
        last = last_frame if last_frame != -1 else nframes
        if nframes is not None and (last - first_frame + 1 < 3 or last > nframes):
            errors.append("Frames %d-%s of %d-frame movies: at least 3 frames are needed."
                          % (first_frame, last, nframes))
        if not (movies.getAcquisition().getDosePerFrame() or 0) > 0:
            errors.append("The movies' acquisition has no dose per frame.")
        return errors
