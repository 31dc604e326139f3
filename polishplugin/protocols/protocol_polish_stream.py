"""Scipion protocol: Bayesian polishing in streaming, micrograph by micrograph as movies and
particles arrive in open input sets.

Built on pyworkflow's ``ProtStreamingBase`` (a generator step inserts one step per micrograph and
a closing step), the engine scipion-em-motioncorr's current streaming protocol
(``ProtMotionCorrNewStreaming``) uses; the older ``_stepsCheck`` pattern of pwem's
``ProtProcessMovies`` re-reads the input on a timer inside the executor and is what pyworkflow
keeps for legacy protocols.

Each check reads only the items added to the input sets since the last one (by object id) and
matches only those (plus the particles still waiting for their movie), so a check stays cheap as
the sets grow. A micrograph is polished once its movie and its particles are present and its
particle count was the same at two successive checks (or the particle set is closed): a *pass*
(``extra/stream/<mic>/``, its particles in ``pass.json``). Particles that arrive after their
micrograph's pass was made are polished in a further pass of their own
(``extra/stream/<mic>_late<k>/``) on the same movie; every particle is in exactly one pass, so
none is lost or output twice. Each pass appends its particles, with their tracks, to the open
output set, closed when both inputs are closed and every pass is done.

Shiny particles (the output's images) use a per-frame B-factor table: a fixed one of an earlier
run, or a running one fitted in the stream (``extra/bfactor_tables/<n>/``) on the first K
polished micrographs and refitted on all polished micrographs each time M more have been
polished; a micrograph uses the newest table when its polishing finishes (recorded per particle
as ``_polishBfactorTable`` and per pass in ``bfactor_table.txt``). A micrograph the programs
cannot read or fit is listed in ``extra/failed_micrographs.txt`` and skipped; particles whose
movie never came, in ``extra/unmatched_particles.txt``.
"""
import json
import os
import time

import pyworkflow.protocol.params as params
from pyworkflow.object import Integer, Set, String
from pyworkflow.protocol import ProtStreamingBase, STEPS_PARALLEL
from pyworkflow.constants import BETA

from .protocol_polish import ProtPolishBayesian

NO_BFACTORS, FIXED_BFACTORS, RUNNING_BFACTORS = 0, 1, 2


def _fresh(pointer):
    """A new view of the set a pointer holds, re-read from its sqlite (another process grows
    it)."""
    current = pointer.get()
    fresh = type(current)(filename=current.getFileName())
    fresh.loadAllProperties()
    return fresh


def _tracking(items, ids):
    """Yield ``items``, appending each one's object id to ``ids``."""
    for item in items:
        ids.append(item.getObjId())
        yield item


class _StreamState:
    """What the generator step knows of the stream between checks."""

    def __init__(self):
        from ..io.convert import MovieMatcher
        self.matcher = MovieMatcher()
        self.last_movie = self.last_part = 0  # highest object ids read so far
        self.unclaimed = {}   # micrograph: particle ids matched to it, in no pass yet
        self.claimed = {}     # micrograph: particle ids in a pass
        self.passes = {}      # micrograph: passes made
        self.counts = {}      # micrograph: its unclaimed particles at the last check
        self.unmatched = {}   # particle id: what it had (no movie claims it yet)
        self.polishing = {}   # running table: passes being polished
        self.waiting = []     # running table: polished passes waiting for a table
        self.polished = []    # running table: first passes polished (what a fit uses)
        self.tables = []      # running table: [(step id, bfactors.star)]
        self.fitted_on = 0    # running table: micrographs in the newest fit
        self.table_base = 0   # running table: tables fitted by an earlier run of the protocol


class ProtPolishStreaming(ProtPolishBayesian, ProtStreamingBase):
    """Bayesian polishing (Zivanov et al. 2019) of micrographs as they arrive: tracks (and shiny
    particles) for the particles of each new micrograph, appended to an open output set that
    closes when the input movies and particles close."""
    _label = "bayesian polishing (streaming)"
    _devStatus = BETA
    stepsExecutionMode = STEPS_PARALLEL
    OUTPUT = "outputParticles"
    _possibleOutputs = {OUTPUT: "SetOfParticles"}

    def _defineParams(self, form):
        self._definePolishParams(form, shiny=False)
        form.addSection(label="Shiny particles")
        form.addParam("bfactorSource", params.EnumParam, default=NO_BFACTORS,
                      choices=["none (tracks only)", "fixed: an earlier run's table",
                               "running: fitted in the stream"],
                      label="Per-frame B-factors",
                      help="none: the output particles keep their images and get tracks. "
                           "fixed: the table of an earlier run weights every micrograph's "
                           "frames (never refitted). running: fitted on the first K polished "
                           "micrographs, refitted on all polished ones every M more; each "
                           "micrograph uses the newest table when its polishing finishes. With "
                           "a table the output particles are shiny ones.")
        form.addParam("inputBfactors", params.PointerParam, allowsNull=True,
                      condition="bfactorSource == %d" % FIXED_BFACTORS,
                      pointerClass="ProtPolishBayesian,ProtPolishBFactors",
                      label="B-factors of an earlier run",
                      help="A finished polishing run with shiny particles, a B-factor "
                           "weighting run, or a streaming run with a running table (its newest "
                           "one): its per-frame B-factors.")
        form.addParam("bfacFirst", params.IntParam, default=5,
                      condition="bfactorSource == %d" % RUNNING_BFACTORS,
                      label="First fit after K micrographs",
                      help="The first table is fitted once K micrographs are polished (or on "
                           "all of them when the stream closes with fewer).")
        form.addParam("bfacEvery", params.IntParam, default=20,
                      condition="bfactorSource == %d" % RUNNING_BFACTORS,
                      label="Refit every M micrographs",
                      help="The table is refitted on all polished micrographs each time M more "
                           "have been polished since the last fit.")
        form.addSection(label="Training in the stream")
        form.addParam("trainFirst", params.IntParam, default=0,
                      label="Train on the first N particles (0: no)",
                      help="When no training run or sigmas file is given: train the sigmas on "
                           "the micrographs that bring the first N particles of the stream, "
                           "then polish every micrograph with them.")
        form.addParam("trainRestarts", params.IntParam, default=3, condition="trainFirst > 0",
                      expertLevel=params.LEVEL_ADVANCED, label="Training restarts")
        form.addParam("trainEvalMaxRes", params.FloatParam, default=0.0,
                      condition="trainFirst > 0", expertLevel=params.LEVEL_ADVANCED,
                      label="Training resolution limit (A, 0: auto)",
                      help="k_max of the training (train --eval-max-res): the alignment circle "
                           "is the inner half of the disc up to it; 0: the half maps' FSC 0.143.")
        self._defineStreamingParams(form)
        form.addParallelSection(threads=3, mpi=0)

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        ProtStreamingBase._insertAllSteps(self)

    def _stepsCheck(self):
        ProtStreamingBase._stepsCheck(self)

    def _passDir(self, key, *p):
        return self._getExtraPath("stream", key, *p)

    def _passInfo(self, key):
        """{micrograph, movie_id, pass, particles} of a pass."""
        with open(self._passDir(key, "pass.json")) as fh:
            return json.load(fh)

    def _outcome(self, key):
        """'done', 'failed', 'polished' (running table: waiting for it) or None."""
        for outcome in ("done", "failed", "polished"):
            if os.path.exists(self._passDir(key, outcome + ".txt")):
                return outcome
        return None

    def _running(self):
        return self.bfactorSource.get() == RUNNING_BFACTORS

    def _restore(self, state):
        """Passes made by an earlier run of this protocol: finished ones keep their particles;
        unfinished ones are left and their particles go to a new pass."""
        stream = self._getExtraPath("stream")
        for key in sorted(os.listdir(stream)) if os.path.isdir(stream) else []:
            if not os.path.exists(self._passDir(key, "pass.json")):
                continue
            info = self._passInfo(key)
            mic = info["micrograph"]
            state.passes[mic] = max(state.passes.get(mic, 0), info["pass"] + 1)
            if self._outcome(key) in ("done", "failed"):
                state.claimed.setdefault(mic, set()).update(info["particles"])
                if self._outcome(key) == "done" and info["pass"] == 0 and self._running():
                    state.polished.append(key)
        tables = self._getExtraPath("bfactor_tables")
        state.table_base = len(os.listdir(tables)) if os.path.isdir(tables) else 0

    def _check(self, state):
        """Read the items added to the inputs since the last check, match the new particles
        (and those still waiting for their movie when new movies came); returns whether the
        movies and the particles are closed."""
        from ..io.convert import iter_by_ids
        with self._lock:
            movies, parts = _fresh(self.inputMovies), _fresh(self.inputParticles)
            try:
                closed = movies.isStreamClosed(), parts.isStreamClosed()
                movie_ids, part_ids = [], []
                state.matcher.add_movies(_tracking(movies.iterItems(
                    orderBy="id", where="id > %d" % state.last_movie), movie_ids))
                names, unmatched = state.matcher.match(_tracking(parts.iterItems(
                    orderBy="id", where="id > %d" % state.last_part), part_ids))
                if movie_ids and state.unmatched:
                    more, unmatched_again = state.matcher.match(iter_by_ids(parts,
                                                                            state.unmatched))
                    state.unmatched = dict(unmatched_again)
                    names.update(more)
            finally:
                movies.close()
                parts.close()
        state.last_movie = max(movie_ids + [state.last_movie])
        state.last_part = max(part_ids + [state.last_part])
        state.unmatched.update(dict(unmatched))
        for pid, mic in names.items():
            if pid not in state.claimed.get(mic, ()):
                state.unclaimed.setdefault(mic, set()).add(pid)
        return closed

    def _newPass(self, state, mic):
        """Make the next pass of ``mic`` with its unclaimed particles; returns its folder key."""
        from ..io.convert import mic_key
        pids = sorted(state.unclaimed.pop(mic))
        state.counts.pop(mic, None)
        k = state.passes.get(mic, 0)
        state.passes[mic] = k + 1
        state.claimed.setdefault(mic, set()).update(pids)
        key = mic_key(mic) + ("_late%d" % k if k else "")
        os.makedirs(self._passDir(key), exist_ok=True)
        with open(self._passDir(key, "pass.json"), "w") as fh:
            json.dump({"micrograph": mic, "movie_id": state.matcher.movie_ids[mic], "pass": k,
                       "particles": pids}, fh)
        return key

    def _trainInStream(self):
        """Whether the sigmas are trained on the stream's first particles (and not yet)."""
        return (self.trainFirst.get() > 0 and self.inputTraining.get() is None and
                not self.paramsFile.get())

    def _streamParamsFile(self):
        return self._getExtraPath("stream_train", "train", "opt_params_all_groups.txt")

    def stepsGeneratorStep(self):
        """Insert one polishing step per pass (a micrograph whose particles have stopped
        arriving; later particles of it make a further pass), after a training step on the first
        micrographs when asked; with a running B-factor table, the fits and the shiny steps as
        micrographs finish; then the closing step once both inputs are closed and every pass is
        done."""
        state = _StreamState()
        self._restore(state)
        steps, pool = [], []
        train = self._trainInStream() and not os.path.exists(self._streamParamsFile())
        after = []  # prerequisites of the polishing steps: the training step, when there is one
        fixed = self._bfactorsTable() if self.bfactorSource.get() == FIXED_BFACTORS else None
        while True:
            movies_closed, parts_closed = self._check(state)
            ready = []
            for mic in sorted(state.unclaimed):
                n = len(state.unclaimed[mic])
                if parts_closed or state.counts.get(mic) == n:
                    ready.append(self._newPass(state, mic))
                else:
                    state.counts[mic] = n
            if train:
                pool += ready
                n = sum(len(self._passInfo(k)["particles"]) for k in pool)
                inputs_in = movies_closed and parts_closed and not state.unclaimed
                if n >= self.trainFirst.get() or (inputs_in and pool):
                    after = [self._insertFunctionStep(self.trainStreamStep, pool,
                                                      prerequisites=[], needsGPU=False)]
                    steps += after
                    ready, pool, train = pool, [], False
                else:
                    ready = []
            for key in ready:
                steps.append(self._insertFunctionStep(self.polishMicrographStep, key, fixed,
                                                      prerequisites=after, needsGPU=False))
                if self._running():
                    state.polishing[key] = steps[-1]
            inputs_done = movies_closed and parts_closed and not state.unclaimed and not pool
            if self._running():
                steps += self._runningTable(state, inputs_done)
            if inputs_done and not state.polishing and not state.waiting:
                with open(self._getExtraPath("unmatched_particles.txt"), "w") as fh:
                    fh.write("".join("%d\t%s\n" % u for u in sorted(state.unmatched.items())))
                self._insertFunctionStep(self.closeOutputStep, prerequisites=steps,
                                         needsGPU=False)
                return
            time.sleep(max(1, self._getStreamingSleepOnWait()))

    def _runningTable(self, state, inputs_done):
        """Running B-factor table: passes whose polishing finished wait for a table; fit the
        first on K polished micrographs (all when the inputs are done with fewer), refit on all
        each time M more are polished; give the waiting passes the newest. Returns the steps
        inserted."""
        for key in list(state.polishing):
            outcome = self._outcome(key)
            if outcome in ("polished", "failed"):
                del state.polishing[key]
            if outcome == "polished":
                state.waiting.append(key)
                if self._passInfo(key)["pass"] == 0:
                    state.polished.append(key)
        inserted, n = [], len(state.polished)
        last = inputs_done and not state.polishing
        if n and ((not state.tables and (n >= self.bfacFirst.get() or last)) or
                  (state.tables and n - state.fitted_on >= self.bfacEvery.get())):
            version = state.table_base + len(state.tables) + 1
            inserted.append(self._insertFunctionStep(self.fitBfactorsStep, version,
                                                     list(state.polished), prerequisites=[],
                                                     needsGPU=False))
            state.tables.append((inserted[-1], self._tableFile(version)))
            state.fitted_on = n
        if state.tables:
            step, table = state.tables[-1]
            for key in state.waiting:
                inserted.append(self._insertFunctionStep(self.shinyMicrographStep, key, table,
                                                         prerequisites=[step], needsGPU=False))
            state.waiting = []
        elif last and state.waiting:  # only late passes polished: no micrograph to fit on
            for key in state.waiting:
                with open(self._passDir(key, "failed.txt"), "w") as fh:
                    fh.write("no polished micrograph to fit the B-factors on\n")
            state.waiting = []
        return inserted

    def _convertMicrographs(self, folder, keys):
        """Write the movies and particles of the passes ``keys`` as RELION files in
        ``folder``."""
        from ..io import convert
        infos = [self._passInfo(k) for k in keys]
        names = {pid: i["micrograph"] for i in infos for pid in i["particles"]}
        with self._lock:
            movies, parts = _fresh(self.inputMovies), _fresh(self.inputParticles)
            try:
                convert.write_set_of_movies(
                    movies, os.path.join(folder, "corrected_micrographs.star"),
                    os.path.join(folder, "metadata"),
                    self.moviePixelSize.get() or convert.movie_pixel_size(movies),
                    no_alignment=self._initFromData(), only={i["movie_id"] for i in infos})
                convert.write_set_of_particles(parts, os.path.join(folder, "particles.star"),
                                               names)
            finally:
                movies.close()
                parts.close()

    def trainStreamStep(self, keys):
        """Train the sigmas on the micrographs of the passes ``keys``."""
        folder = self._getExtraPath("stream_train")
        os.makedirs(folder, exist_ok=True)
        self._convertMicrographs(folder, keys)
        args = self._inputArgs(folder) + [
            "--out %s" % os.path.abspath(os.path.join(folder, "train")),
            "--first-frame %d --last-frame %d" % (self.firstFrame.get(), self.lastFrame.get()),
            "--min-particles %d --restarts %d --eval-max-res %g --threads 1"   # default method
            % (self.trainFirst.get(), self.trainRestarts.get(), self.trainEvalMaxRes.get()),
            self._maxEdArg()]
        self.runProgram("train", " ".join(args))

    def polishMicrographStep(self, key, table=None):
        """Convert one pass's movie and particles and polish them; then, with a fixed table
        (``table``) or none, write their shiny particles and append them; with a running table
        mark the pass polished (its shiny step comes once a table is fitted)."""
        folder = self._passDir(key)
        self._convertMicrographs(folder, [key])
        out = os.path.join(folder, "polish")
        args = self._programArgs(input_dir=folder, out=out, threads=1) + " --no-figures"
        if self.trainFirst.get() > 0 and os.path.exists(self._streamParamsFile()):
            args += " --params-file %s" % os.path.abspath(self._streamParamsFile())
        if not self._runOrSkip("polish", args, key):
            return
        if self._running():
            open(os.path.join(folder, "polished.txt"), "w").close()
            return
        self._finishPass(key, table)

    def shinyMicrographStep(self, key, table):
        """Shiny particles of a polished pass with the running table ``table``; append them."""
        os.remove(self._passDir(key, "polished.txt"))
        self._finishPass(key, table)

    def _finishPass(self, key, table):
        """Shiny particles with ``table`` (when given), append the pass's particles, mark it
        done."""
        folder = self._passDir(key)
        out, shiny = os.path.join(folder, "polish"), None
        if table:
            shiny = os.path.join(folder, "shiny")
            args = " ".join(self._inputArgs(folder) + [
                "--polish %s" % os.path.abspath(out), "--out %s" % os.path.abspath(shiny),
                "--bfactors %s" % os.path.abspath(table), "--threads 1",
                "--no-figures"] + ([] if self.detectDefects.get() else ["--no-defects"]))
            if not self._runOrSkip("bfactors", args, key):
                return
            with open(os.path.join(folder, "bfactor_table.txt"), "w") as fh:
                fh.write(os.path.abspath(table) + "\n")
        self._appendTracks(key, out, shiny, table)
        with open(os.path.join(folder, "done.txt"), "w") as fh:
            fh.write("%d particles\n" % len(self._passInfo(key)["particles"]))

    def _tableFile(self, version):
        return self._getExtraPath("bfactor_tables", "%03d" % version, "fit", "bfactors.star")

    def fitBfactorsStep(self, version, keys):
        """Fit the running table ``version`` on the FCC sums of the polished passes ``keys``
        (eq. 20-21): the bfactors program on their folders, fit only."""
        folder = self._getExtraPath("bfactor_tables", "%03d" % version)
        os.makedirs(folder, exist_ok=True)
        self._convertMicrographs(folder, keys)
        listing = os.path.join(folder, "polish_folders.txt")
        with open(listing, "w") as fh:
            fh.write("".join(os.path.abspath(self._passDir(k, "polish")) + "\n" for k in keys))
        args = self._inputArgs(folder) + [
            "--polish %s" % os.path.abspath(listing),
            "--out %s" % os.path.abspath(os.path.dirname(self._tableFile(version))),
            "--only-bfactors --threads 1 --no-figures"]
        self.runProgram("bfactors", " ".join(args), tag="table%03d" % version)

    def _runOrSkip(self, program, args, key):
        """Run ``program`` for one pass of the stream; on failure log it, leave its reason in
        ``<pass folder>/failed.txt`` (the pass is skipped, the stream goes on) and return
        False."""
        from .protocol_base import ProgramError
        try:
            self.runProgram(program, args, tag=key)
        except ProgramError as exc:
            self.error("micrograph %s skipped: %s" % (key, exc))
            with open(self._passDir(key, "failed.txt"), "w") as fh:
                fh.write("%s\n" % exc)
            return False
        return True

    def newestTableDir(self):
        """The folder of the newest running B-factor fit (bfactors.star, .json, FCC), or
        None."""
        tables = self._getExtraPath("bfactor_tables")
        fits = [os.path.join(tables, d, "fit") for d in sorted(os.listdir(tables))] \
            if os.path.isdir(tables) else []
        fits = [d for d in fits if os.path.exists(os.path.join(d, "bfactors.star"))]
        return fits[-1] if fits else None

    def _bfactorsTable(self):
        """bfactors.star of the run chosen for a fixed table (a streaming run's: its newest
        running table), or None."""
        run = self.inputBfactors.get()
        if run is None or self.bfactorSource.get() != FIXED_BFACTORS:
            return None
        if isinstance(run, ProtPolishStreaming):
            fit = run.newestTableDir()
            return os.path.join(fit, "bfactors.star") if fit else \
                run._getExtraPath("bfactor_tables")
        if isinstance(run, ProtPolishBayesian):
            return run._getExtraPath("shiny", "bfactors.star")
        return run._outDir("bfactors.star")

    def _appendTracks(self, key, polish_dir, shiny_dir=None, table=None):
        """Append the pass's particles with their tracks (and, with ``shiny_dir``, their shiny
        images and the B-factor table used) to the open output set."""
        from pwem.objects import SetOfParticles
        from ..io.convert import iter_by_ids
        from ..programs.bfactors import shiny_path
        from ..programs.polish import output_paths
        from .outputs import polished_rows
        pids = self._passInfo(key)["particles"]
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
            by_id = {p.getObjId(): p.clone() for p in iter_by_ids(parts, pids)}
            for row, (index, tracks) in sorted(rows.items()):
                p = by_id[pids[row]]
                if shiny_dir:
                    index_in_stack, stack = stacks[row]
                    p.setLocation((index_in_stack + 1, stack))
                    p._polishBfactorTable = String(os.path.abspath(table))
                p._polishTracks = String(tracks)
                p._polishTrackIndex = Integer(index)
                out.append(p)
            parts.close()
            first = not self.hasAttribute(self.OUTPUT)
            self._updateOutputSet(self.OUTPUT, out, Set.STREAM_OPEN)
            if first:
                self._defineTransformRelation(self.inputParticles, out)

    def closeOutputStep(self):
        stream = self._getExtraPath("stream")
        failed = ["%s\t%s" % (d, open(os.path.join(stream, d, "failed.txt")).read().strip())
                  for d in sorted(os.listdir(stream))
                  if os.path.exists(os.path.join(stream, d, "failed.txt"))] \
            if os.path.isdir(stream) else []
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
        if self.bfactorSource.get() == FIXED_BFACTORS and self.inputBfactors.get() is None:
            errors.append("Choose the run whose B-factor table is used (or another source).")
        if table and not os.path.exists(table):
            errors.append("The chosen run has no B-factor table (%s): run it first, with shiny "
                          "particles." % table)
        if self._running() and (self.bfacFirst.get() < 1 or self.bfacEvery.get() < 1):
            errors.append("K and M of the running B-factor table must be at least 1.")
        movies, parts = self.inputMovies.get(), self.inputParticles.get()
        if movies is not None and parts is not None and (movies.getSize() == 0 or
                                                          parts.getSize() == 0):
            return errors + self._maxEdErrors() + self._validateReference()
        return errors + ProtPolishBayesian._validate(self)

    def _validateReference(self):
        return ["The reference volume has no half maps: each particle is aligned against "
                "the half map of its own half-set."] if None in self._halfMaps() else []

    def _summary(self):
        lines = []
        if self.hasAttribute(self.OUTPUT):
            lines.append("%d particles polished so far (sigmas %s)"
                         % (getattr(self, self.OUTPUT).getSize(), self._sigmaText()))
        newest = self.newestTableDir()
        if newest:
            with open(os.path.join(os.path.dirname(newest), "polish_folders.txt")) as fh:
                lines.append("running B-factor table: %d fit(s), the last on %d micrographs"
                             % (int(os.path.basename(os.path.dirname(newest))),
                                len(fh.read().split())))
        failed = self._getExtraPath("failed_micrographs.txt")
        if os.path.exists(failed) and open(failed).read().strip():
            lines.append("SKIPPED micrographs: see %s" % failed)
        unmatched = self._getExtraPath("unmatched_particles.txt")
        if os.path.exists(unmatched) and open(unmatched).read().strip():
            lines.append("%d particles never met their movie: see %s"
                         % (len(open(unmatched).read().splitlines()), unmatched))
        return lines or ["No micrograph polished yet."]
