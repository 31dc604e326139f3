"""What every polishplugin protocol shares: running one of our programs through ``runJob`` (so
Scipion's MPI and queue submission apply) with the plugin's environment."""
import os

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol

from .. import Plugin


MOVIE_INPUTS = ("Movies", "Particles", "Volume", "Mask")


def link_inputs(prot, source, names=MOVIE_INPUTS, **outputs):
    """Point ``prot.input<Name>`` at ``source.output<Name>`` (or at the output attribute
    ``outputs[Name]``) for each name, as choosing the input in the protocol's form does (e.g. a
    polishing run fed by a simulation)."""
    for name in names:
        pointer = getattr(prot, "input" + name)
        pointer.set(source)
        pointer.setExtended(outputs.get(name, "output" + name))


class ProgramError(Exception):
    """A program of ours failed; the message is its own one-line reason."""


class ProtPolishBase(EMProtocol):
    """Base class (no ``_label``: hidden from the GUI)."""

    def runProgram(self, program, args, numberOfMpi=1, numberOfThreads=1, tag=None):
        """Run ``python -m polishplugin.programs.<program> <args>`` in the run folder. When it
        fails, the reason it wrote to ``$POLISHPLUGIN_ERROR_FILE`` becomes the step's error
        (Scipion shows it as the protocol's error message), not just the exit status. ``tag``
        names the error file of one of several runs going on at once."""
        from ..programs.cli import ERROR_FILE_VAR
        error_file = os.path.abspath(self._getLogsPath(
            "%s%s_error.txt" % (program, "_" + tag if tag else "")))
        if os.path.exists(error_file):
            os.remove(error_file)
        env = Plugin.getEnviron()
        env[ERROR_FILE_VAR] = error_file
        try:
            self.runJob(Plugin.getPython(), "-m polishplugin.programs.%s %s" % (program, args),
                        env=env, numberOfMpi=numberOfMpi, numberOfThreads=numberOfThreads)
        except Exception as exc:
            if not os.path.exists(error_file):
                raise
            with open(error_file) as fh:
                reason = fh.read().strip()
            raise ProgramError("%s failed: %s" % (program, reason)) from exc

    def _inputDir(self, *p):
        """extra/input: the inputs converted to RELION files."""
        return self._getExtraPath("input", *p)

    def _writeConvertedIds(self, ids):
        with open(self._inputDir("particle_ids.txt"), "w") as fh:
            fh.write("\n".join(str(i) for i in ids) + "\n")

    def convertedIds(self):
        """Ids of the input particles in the rows of the converted particles.star (all of them,
        in id order, for runs converted before unmatched particles could be left out)."""
        path = self._inputDir("particle_ids.txt")
        if not os.path.exists(path):
            return [p.getObjId() for p in self.inputParticles.get().iterItems(orderBy="id")]
        with open(path) as fh:
            return [int(v) for v in fh.read().split()]


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
        form.addParam("moviePixelSize", params.FloatParam, default=0.0,
                      expertLevel=params.LEVEL_ADVANCED, label="Movie pixel size (A)",
                      help="Pixel size of the movies' frames, overriding the files'; 0 = the "
                           "movie set's, or the movie files' header (MRC) when the set's is a "
                           "multiple of it: a motion correction that bins its micrographs may "
                           "label its output movies with the binned size although their frames "
                           "are the raw ones. TIFF movies carry no pixel size: binned TIFF "
                           "movies need it here.")
        form.addParam("dropUnmatched", params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Leave out particles without a movie?",
                      help="Particles are paired with movies by micrograph name (without folders "
                           "and extensions); particles without a micrograph name by micrograph "
                           "id, then stack name. By default a particle without a movie is an "
                           "error listed by the form's check.")

    def _insertConvertStep(self):
        ids = [self.inputMovies.get().getObjId(), self.inputParticles.get().getObjId(),
               self.inputVolume.get().getObjId()]
        self._insertFunctionStep(self.convertInputStep, *ids, needsGPU=False)

    def convertInputStep(self, movId, partId, volId):
        """Movies -> corrected_micrographs.star + metadata STARs; particles -> particles.star,
        named after the movie each particle was matched to."""
        from ..io import convert
        os.makedirs(self._inputDir("metadata"), exist_ok=True)
        movies, parts = self.inputMovies.get(), self.inputParticles.get()
        names, unmatched = convert.match_particles_to_movies(parts, movies)
        if unmatched and not self._allowUnmatched():
            raise ValueError(self._unmatchedText(unmatched))
        convert.write_set_of_movies(movies, self._inputDir("corrected_micrographs.star"),
                                    self._inputDir("metadata"), self._moviePixelSize(),
                                    no_alignment=self._initFromData())
        convert.write_set_of_particles(parts, self._inputDir("particles.star"), names)
        self._writeConvertedIds(sorted(names))

    def _allowUnmatched(self):
        """Whether particles without a movie are left out rather than refused."""
        return self.dropUnmatched.get()

    def _initFromData(self):
        """True when the initial tracks come from the data (the movies' alignment unused)."""
        return bool(self.getAttributeValue("initFromData", False))

    def _moviePixelSize(self):
        return self._moviePixelSource()[0]

    def _moviePixelSource(self):
        """(pixel size of the movies' frames, where it came from): the form's override, else
        the files' (:func:`~polishplugin.io.convert.movie_pixel_source`)."""
        from ..io.convert import movie_pixel_source
        if self.moviePixelSize.get():
            return self.moviePixelSize.get(), "the form's 'Movie pixel size'"
        return movie_pixel_source(self.inputMovies.get())

    @staticmethod
    def _unmatchedText(unmatched):
        return ("%d particle(s) match no movie (by micrograph name, id or stack name), e.g. %s"
                % (len(unmatched), "; ".join("particle %d (%s)" % u for u in unmatched[:5])))

    def _halfMaps(self):
        vol = self.inputVolume.get()
        halves = [h for h in ((vol.getHalfMaps() if vol is not None else "") or "").split(",")
                  if h]
        return halves if len(halves) == 2 else (None, None)

    def _inputArgs(self, input_dir=None):
        """The program arguments naming the converted inputs (in ``input_dir``, default
        extra/input), half maps and mask."""
        half1, half2 = self._halfMaps()
        folder = input_dir or self._inputDir()
        args = ["--particles %s" % os.path.abspath(os.path.join(folder, "particles.star")),
                "--mics %s" % os.path.abspath(os.path.join(folder,
                                                           "corrected_micrographs.star")),
                "--half1 %s --half2 %s" % (os.path.abspath(half1), os.path.abspath(half2))]
        if self.inputMask.get() is not None:
            args.append("--mask %s" % os.path.abspath(self.inputMask.get().getFileName()))
        return args

    def _defineMaxEdParam(self, form):
        """The expert 'max eigendeformations' of the motion programs (polish / train
        --max-ed)."""
        form.addParam("maxEd", params.IntParam, default=-1, expertLevel=params.LEVEL_ADVANCED,
                      label="Max eigendeformations (-1: all)",
                      help="The GP motion prior's basis keeps at most this many of its largest "
                           "eigendeformations per micrograph (RELION's --max_ed); -1 = all "
                           "(the paper's and RELION's default). A small number (e.g. 50) makes "
                           "the basis without a particles x particles matrix: memory no longer "
                           "grows with the square of the particles per micrograph, and the "
                           "tracks keep only the smoothest deformations (BENCHMARKS.md).")

    def _maxEdArg(self):
        return "--max-ed %d" % self.maxEd.get()

    def _maxEdErrors(self):
        k = self.maxEd.get()
        return [] if k == -1 or k >= 1 else [
            "Max eigendeformations must be -1 (all) or at least 1, got %d." % k]

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
        movie_errors, names = self._validateMovies(movies, parts, first_frame)
        errors += movie_errors
        pp, pv = parts.getSamplingRate(), vol.getSamplingRate()
        pm, source = (pp, "") if movie_errors else self._moviePixelSource()  # reads a header
        if abs(pm - pp) > 1e-3 * pp:
            errors.append("Pixel sizes differ: movie frames %.4f A (from %s), particles %.4f A "
                          "(re-extract the particles at the movies' pixel size, or give the "
                          "frames' real pixel size under 'Movie pixel size')." % (pm, source, pp))
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
        if not errors:
            errors += self._programInputCheck(names)
        return errors

    def _validateMovies(self, movies, parts, first_frame):
        """(errors, {particle id: movie name}): what the conversion or the program would
        refuse about the movies: files, alignment, aligned (motion-corrected) movies, the frame
        range of the alignment, unmatched particles."""
        from ..io.convert import aligned_movie_reason, match_particles_to_movies
        errors = []
        missing = [m.getFileName() for m in movies.iterItems() if not
                   os.path.exists(m.getFileName())]
        if missing:
            errors.append("%d movie file(s) missing, e.g. %s" % (len(missing), missing[0]))
        gain = movies.getGain()
        if gain and not os.path.exists(gain):
            errors.append("Gain reference missing: %s" % gain)
        first = movies.getFirstItem()
        if first is None:
            return errors + ["The movie set is empty."], {}
        aligned = [r for r in map(aligned_movie_reason, movies.iterItems()) if r]
        if aligned:
            errors.append("Aligned movies cannot be polished (%s): polishing needs the raw "
                          "movies with the alignment of their motion correction (run it "
                          "without saving aligned movies)." % aligned[0])
        align = first.getAlignment()
        if align is None and not self._initFromData():
            errors.append("The movies have no alignment (global shifts): import them with "
                          "their motion correction ('import movies with alignment') or "
                          "estimate the initial track from the data.")
        elif align is not None and not self._initFromData():
            a0 = max(int(align.getRange()[0] or 1), 1)
            nframes = (movies.getDim() or (0, 0, 0))[2]
            if len(align.getShifts()[0]) != nframes and first_frame < a0:
                errors.append("The movies' alignment starts at frame %d: set the first frame "
                              "to %d or later." % (a0, a0))
        names, unmatched = match_particles_to_movies(parts, movies)
        if unmatched and not self._allowUnmatched():
            errors.append(self._unmatchedText(unmatched))
        elif not names:
            errors.append("No particle matches a movie.")
        return errors, names

    def _programInputCheck(self, names):
        """The program's own input checks (files, frame counts, gain and map shapes, pixel
        sizes, NaNs, centres inside the micrograph, dose) on the first movie with particles and
        its particles, converted to a scratch folder as the run would convert them."""
        import tempfile
        from ..io import convert
        from ..io.errors import InputError
        from ..io.polish_inputs import load_polish_inputs
        first = next(iter(sorted(names)))
        mic = names[first]
        sub = {i: n for i, n in names.items() if n == mic}
        movie_id = next(m.getObjId() for m in self.inputMovies.get().iterItems()
                        if convert.movie_mic_name(m) == mic)
        half1, half2 = self._halfMaps()
        mask = self.inputMask.get()
        with tempfile.TemporaryDirectory(prefix="polish_check_") as tmp:
            try:
                star = os.path.join(tmp, "corrected_micrographs.star")
                convert.write_set_of_movies(self.inputMovies.get(), star,
                                            os.path.join(tmp, "metadata"),
                                            self._moviePixelSize(),
                                            no_alignment=self._initFromData(), only={movie_id})
                convert.write_set_of_particles(self.inputParticles.get(),
                                               os.path.join(tmp, "particles.star"), sub)
                load_polish_inputs(os.path.join(tmp, "particles.star"), star, None, half1, half2,
                                   mask.getFileName() if mask is not None else None)
            except (InputError, ValueError) as exc:
                return ["Checking micrograph %s as the program will: %s" % (mic, exc)]
        return []
