"""Scipion protocol: Bayesian polishing in streaming, micrograph by micrograph as movies and
particles arrive in open input sets.

Built on pyworkflow's ``ProtStreamingBase`` (a generator step inserts one step per micrograph and
a closing step), the engine scipion-em-motioncorr's current streaming protocol
(``ProtMotionCorrNewStreaming``) uses; the older ``_stepsCheck`` pattern of pwem's
``ProtProcessMovies`` re-reads the input on a timer inside the executor and is what pyworkflow
keeps for legacy protocols.

A micrograph is polished once its movie and its particles are present and its particle count was
the same at two successive checks (or the particle set is closed); each runs the polish program
on its own converted inputs (``extra/stream/<mic>/``) and appends its particles, with their
tracks, to the open output set, closed when both inputs are closed and every micrograph is
done. With the per-frame B-factors of an earlier run (a fixed table, not refitted), each
micrograph's shiny particles are written too and are the output's images. A micrograph the
programs cannot read or fit is listed in ``extra/failed_micrographs.txt`` and skipped; particles
whose movie never came, in ``extra/unmatched_particles.txt``.
"""
import os
import time

import pyworkflow.protocol.params as params
from pyworkflow.object import Integer, Set, String
from pyworkflow.protocol import ProtStreamingBase, STEPS_PARALLEL
from pyworkflow.constants import BETA

from .protocol_polish import ProtPolishBayesian


def _fresh(pointer):
    """A new view of the set a pointer holds, re-read from its sqlite (another process grows
    it)."""
    current = pointer.get()
    fresh = type(current)(filename=current.getFileName())
    fresh.loadAllProperties()
    return fresh


class ProtPolishStreaming(ProtPolishBayesian, ProtStreamingBase):
    """Bayesian polishing (Zivanov et al. 2019) of micrographs as they arrive: tracks for the
    particles of each new micrograph, appended to an open output set that closes when the
    input movies and particles close."""
    _label = "bayesian polishing (streaming)"
    _devStatus = BETA
    stepsExecutionMode = STEPS_PARALLEL
    OUTPUT = "outputParticles"
    _possibleOutputs = {OUTPUT: "SetOfParticles"}

    def _defineParams(self, form):
        self._definePolishParams(form, shiny=False)
        form.addSection(label="Shiny particles")
        form.addParam("inputBfactors", params.PointerParam, allowsNull=True,
                      pointerClass="ProtPolishBayesian,ProtPolishBFactors",
                      label="B-factors of an earlier run (optional)",
                      help="A finished polishing run with shiny particles, or a B-factor "
                           "weighting run: its per-frame B-factors (a fixed table, not refitted "
                           "as the stream grows) weight the frames of each new micrograph, and "
                           "the output particles are then shiny ones. Empty: tracks only.")
        form.addSection(label="Training in the stream")
        form.addParam("trainFirst", params.IntParam, default=0,
                      label="Train on the first N particles (0: no)",
                      help="When no training run or sigmas file is given: train the sigmas on "
                           "the micrographs that bring the first N particles of the stream, "
                           "then polish every micrograph with them.")
        form.addParam("trainRestarts", params.IntParam, default=3, condition="trainFirst > 0",
                      expertLevel=params.LEVEL_ADVANCED, label="Training restarts")
        form.addParam("trainMaxEvals", params.IntParam, default=100, condition="trainFirst > 0",
                      expertLevel=params.LEVEL_ADVANCED, label="TCC evaluations per restart")
        form.addParam("trainEvalMaxRes", params.FloatParam, default=0.0,
                      condition="trainFirst > 0", expertLevel=params.LEVEL_ADVANCED,
                      label="Highest resolution of the TCC (A, 0: auto)")
        self._defineStreamingParams(form)
        form.addParallelSection(threads=3, mpi=0)

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        ProtStreamingBase._insertAllSteps(self)

    def _stepsCheck(self):
        ProtStreamingBase._stepsCheck(self)

    def _streamDir(self, mic, *p):
        from ..io.convert import mic_key
        return self._getExtraPath("stream", mic_key(mic), *p)

    def _outcome(self, mic):
        """'done', 'failed' or None (not processed yet)."""
        for outcome in ("done", "failed"):
            if os.path.exists(self._streamDir(mic, outcome + ".txt")):
                return outcome
        return None

    def _pending(self):
        """({micrograph: sorted particle ids} of movies present, both inputs closed); the
        particles no movie claims are kept in ``self._unmatched``."""
        from ..io.convert import match_particles_to_movies
        with self._lock:
            movies, parts = _fresh(self.inputMovies), _fresh(self.inputParticles)
            try:
                closed = movies.isStreamClosed(), parts.isStreamClosed()
                names, self._unmatched = match_particles_to_movies(parts, movies)
            finally:
                movies.close()
                parts.close()
        per_mic = {}
        for pid, name in names.items():
            per_mic.setdefault(name, []).append(pid)
        return {k: sorted(v) for k, v in per_mic.items()}, closed

    def _trainInStream(self):
        """Whether the sigmas are trained on the stream's first particles (and not yet)."""
        return (self.trainFirst.get() > 0 and self.inputTraining.get() is None and
                not self.paramsFile.get())

    def _streamParamsFile(self):
        return self._getExtraPath("stream_train", "train", "opt_params_all_groups.txt")

    def stepsGeneratorStep(self):
        """Insert one polishing step per micrograph whose particles have stopped arriving (after
        a training step on the first micrographs, when asked), then the closing step once both
        inputs are closed and every micrograph has been seen."""
        steps, seen, counts, pool = [], set(), {}, {}
        train = self._trainInStream() and not os.path.exists(self._streamParamsFile())
        after = []  # prerequisites of the polishing steps: the training step, when there is one
        while True:
            per_mic, (movies_closed, parts_closed) = self._pending()
            ready = []
            for mic, pids in sorted(per_mic.items()):
                if mic in seen or mic in pool:
                    continue
                if self._outcome(mic):  # done in an earlier run of this protocol
                    seen.add(mic)
                    continue
                if parts_closed or counts.get(mic) == len(pids):
                    ready.append(mic)
                counts[mic] = len(pids)
            if train:
                pool.update({mic: per_mic[mic] for mic in ready})
                n = sum(len(v) for v in pool.values())
                if n >= self.trainFirst.get() or (movies_closed and parts_closed and pool):
                    after = [self._insertFunctionStep(self.trainStreamStep, pool,
                                                      prerequisites=[], needsGPU=False)]
                    ready, train = sorted(pool), False
                    pool = {}
                else:
                    ready = []
            for mic in ready:
                steps.append(self._insertFunctionStep(self.polishMicrographStep, mic,
                                                      per_mic[mic], prerequisites=after,
                                                      needsGPU=False))
                seen.add(mic)
            if movies_closed and parts_closed and set(per_mic) <= seen:
                with open(self._getExtraPath("unmatched_particles.txt"), "w") as fh:
                    fh.write("".join("%d\t%s\n" % u for u in self._unmatched))
                self._insertFunctionStep(self.closeOutputStep, prerequisites=steps,
                                         needsGPU=False)
                return
            time.sleep(max(1, self._getStreamingSleepOnWait()))

    def _convertMicrographs(self, folder, names):
        """Write the movies and particles of ``names`` ({particle id: micrograph}) as RELION
        files in ``folder``."""
        from ..io import convert
        with self._lock:
            movies, parts = _fresh(self.inputMovies), _fresh(self.inputParticles)
            try:
                convert.write_set_of_movies(
                    movies, os.path.join(folder, "corrected_micrographs.star"),
                    os.path.join(folder, "metadata"),
                    self.moviePixelSize.get() or convert.movie_pixel_size(movies),
                    no_alignment=self._initFromData(), only=set(names.values()))
                convert.write_set_of_particles(parts, os.path.join(folder, "particles.star"),
                                               names)
            finally:
                movies.close()
                parts.close()

    def trainStreamStep(self, pool):
        """Train the sigmas on the micrographs of ``pool`` ({micrograph: particle ids})."""
        folder = self._getExtraPath("stream_train")
        os.makedirs(folder, exist_ok=True)
        self._convertMicrographs(folder, {pid: mic for mic, pids in pool.items() for pid in pids})
        args = self._inputArgs(folder) + [
            "--out %s" % os.path.abspath(os.path.join(folder, "train")),
            "--first-frame %d --last-frame %d" % (self.firstFrame.get(), self.lastFrame.get()),
            "--min-particles %d --restarts %d --max-evals %d --eval-max-res %g --threads 1"
            % (self.trainFirst.get(), self.trainRestarts.get(), self.trainMaxEvals.get(),
               self.trainEvalMaxRes.get())]
        self.runProgram("train", " ".join(args))

    def polishMicrographStep(self, mic, pids):
        """Convert one micrograph's movie and particles, polish them, append the tracks."""
        folder = self._streamDir(mic)
        os.makedirs(folder, exist_ok=True)
        self._convertMicrographs(folder, {pid: mic for pid in pids})
        out = os.path.join(folder, "polish")
        args = self._programArgs(input_dir=folder, out=out, threads=1) + " --no-figures"
        if self.trainFirst.get() > 0 and os.path.exists(self._streamParamsFile()):
            args += " --params-file %s" % os.path.abspath(self._streamParamsFile())
        if not self._runOrSkip("polish", args, mic, folder):
            return
        shiny = None
        if self._bfactorsTable():
            shiny = os.path.join(folder, "shiny")
            args = " ".join(self._inputArgs(folder) + [
                "--polish %s" % os.path.abspath(out), "--out %s" % os.path.abspath(shiny),
                "--bfactors %s" % os.path.abspath(self._bfactorsTable()), "--threads 1",
                "--no-figures"] + ([] if self.detectDefects.get() else ["--no-defects"]))
            if not self._runOrSkip("bfactors", args, mic, folder):
                return
        self._appendTracks(mic, pids, out, shiny)
        with open(os.path.join(folder, "done.txt"), "w") as fh:
            fh.write("%d particles\n" % len(pids))

    def _runOrSkip(self, program, args, mic, folder):
        """Run ``program`` for one micrograph of the stream; on failure log it, leave its reason
        in ``<folder>/failed.txt`` (the micrograph is skipped, the stream goes on) and return
        False."""
        from .protocol_base import ProgramError
        try:
            self.runProgram(program, args, tag=os.path.basename(folder))
        except ProgramError as exc:
            self.error("micrograph %s skipped: %s" % (mic, exc))
            with open(os.path.join(folder, "failed.txt"), "w") as fh:
                fh.write("%s\n" % exc)
            return False
        return True

    def _bfactorsTable(self):
        """bfactors.star of the run chosen for shiny particles, or None."""
        run = self.inputBfactors.get()
        if run is None:
            return None
        if isinstance(run, ProtPolishBayesian):
            return run._getExtraPath("shiny", "bfactors.star")
        return run._outDir("bfactors.star")

    def _appendTracks(self, mic, pids, polish_dir, shiny_dir=None):
        """Append the micrograph's particles with their tracks (and, with ``shiny_dir``, their
        shiny images) to the open output set."""
        from pwem.objects import SetOfParticles
        from ..programs.bfactors import shiny_path
        from ..programs.polish import output_paths
        from .outputs import polished_rows
        rows = polished_rows(polish_dir, lambda m: output_paths(polish_dir, m)["tracks"])
        stacks = polished_rows(polish_dir, lambda m: shiny_path(shiny_dir, m)) \
            if shiny_dir else {}
        with self._lock:
            parts = _fresh(self.inputParticles)
            path = self._getPath("particles.sqlite")
            if self.hasAttribute(self.OUTPUT):
                out = SetOfParticles(filename=path)
                out.loadAllProperties()
                out.enableAppend()
            else:
                out = self._createSetOfParticles()
                out.copyInfo(parts)
                out.setStreamState(Set.STREAM_OPEN)
            for row, (index, tracks) in sorted(rows.items()):
                p = parts[pids[row]].clone()
                if shiny_dir:
                    index_in_stack, stack = stacks[row]
                    p.setLocation((index_in_stack + 1, stack))
                p._polishTracks = String(tracks)
                p._polishTrackIndex = Integer(index)
                out.append(p)
            parts.close()
            first = not self.hasAttribute(self.OUTPUT)
            self._updateOutputSet(self.OUTPUT, out, Set.STREAM_OPEN)
            if first:
                self._defineTransformRelation(self.inputParticles, out)

    def closeOutputStep(self):
        failed = ["%s\t%s" % (d, open(self._getExtraPath("stream", d, "failed.txt")).read()
                              .strip())
                  for d in sorted(os.listdir(self._getExtraPath("stream")))
                  if os.path.exists(self._getExtraPath("stream", d, "failed.txt"))] \
            if os.path.exists(self._getExtraPath("stream")) else []
        with open(self._getExtraPath("failed_micrographs.txt"), "w") as fh:
            fh.write("".join(line + "\n" for line in failed))
        if not self.hasAttribute(self.OUTPUT):
            raise Exception("no micrograph could be polished (%d failed, see %s)"
                            % (len(failed), self._getExtraPath("failed_micrographs.txt")))
        with self._lock:
            self._closeOutputSet()

    # ----------------------------------------------------------------- info
    def _allowUnmatched(self):
        return True  # particles of movies still to come wait for them

    def _validate(self):
        errors = []
        self._validateThreads(errors)
        table = self._bfactorsTable()
        if table and not os.path.exists(table):
            errors.append("The chosen run has no B-factor table (%s): run it first, with shiny "
                          "particles." % table)
        movies, parts = self.inputMovies.get(), self.inputParticles.get()
        if movies is not None and parts is not None and (movies.getSize() == 0 or
                                                          parts.getSize() == 0):
            return errors + [e for e in self._validateReference()]
        return errors + ProtPolishBayesian._validate(self)

    def _validateReference(self):
        return ["The reference volume has no half maps: each particle is aligned against "
                "the half map of its own half-set."] if None in self._halfMaps() else []

    def _summary(self):
        lines = []
        if self.hasAttribute(self.OUTPUT):
            lines.append("%d particles polished so far (sigmas %s)"
                         % (getattr(self, self.OUTPUT).getSize(), self._sigmaText()))
        failed = self._getExtraPath("failed_micrographs.txt")
        if os.path.exists(failed) and open(failed).read().strip():
            lines.append("SKIPPED micrographs: see %s" % failed)
        unmatched = self._getExtraPath("unmatched_particles.txt")
        if os.path.exists(unmatched) and open(unmatched).read().strip():
            lines.append("%d particles never met their movie: see %s"
                         % (len(open(unmatched).read().splitlines()), unmatched))
        return lines or ["No micrograph polished yet."]
