"""Scipion protocol: Bayesian polishing (per-particle motion under a GP prior, MAP by L-BFGS).

Converts the inputs to RELION files, runs ``polishplugin.programs.polish`` through runJob (so
Scipion's threads, MPI and queue settings apply) and registers the particles with their tracks.
"""
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pyworkflow.object import Integer, String

from ..constants import (DEFAULT_SIGMA_ACC, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_VEL,
                         DEFAULT_SPECTRA_MB)
from .protocol_base import ProtPolishMovieBase

SIGMAS_FROM_DATA = 0   # sigmaSource: polish --sigmas auto


class ProtPolishBayesian(ProtPolishMovieBase):
    """Estimate each particle's trajectory through the movie frames (Zivanov et al. 2019):
    a Gaussian-process prior on the velocities (sigma_vel, sigma_div, sigma_acc) and the
    cross-correlation of every frame with a projection of the particle's own half map; the
    most probable tracks are found with L-BFGS."""
    _label = "bayesian polishing"
    _devStatus = BETA
    _possibleOutputs = {"outputParticles": "SetOfParticles"}

    def _defineParams(self, form):
        self._definePolishParams(form)
        form.addParallelSection(threads=1, mpi=1)

    def _definePolishParams(self, form, shiny=True):
        """Inputs, motion and (with ``shiny``) shiny-particle sections."""
        form.addSection(label="Input")
        self._defineInputParams(form)
        form.addSection(label="Motion")
        form.addParam("inputTraining", params.PointerParam, pointerClass="ProtPolishTrain",
                      allowsNull=True, label="Trained sigmas (optional)",
                      help="A 'train motion parameters' run: its sigmas replace the ones below.")
        form.addParam("sigmaSource", params.EnumParam, default=SIGMAS_FROM_DATA,
                      choices=["from each micrograph's data", "given below"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Motion-prior sigmas",
                      help="From the data: each micrograph's sigmas maximise the marginal "
                           "likelihood of its own CC maps (polish --sigmas auto; chosen values "
                           "and their spread in extra/polish/sigmas.json). Given: the three "
                           "values below (RELION's tutorial defaults unless changed).")
        form.addParam("sigmaVel", params.FloatParam, default=DEFAULT_SIGMA_VEL,
                      condition="sigmaSource == 1",
                      label="sigma_vel (A/dose)", help="Expected velocity (eq. 2), A per e/A^2.")
        form.addParam("sigmaDiv", params.FloatParam, default=DEFAULT_SIGMA_DIV,
                      condition="sigmaSource == 1",
                      label="sigma_div (A)", help="Spatial correlation length (eq. 2).")
        form.addParam("sigmaAcc", params.FloatParam, default=DEFAULT_SIGMA_ACC,
                      condition="sigmaSource == 1", label="sigma_acc (A/dose)",
                      help="Expected acceleration (eq. 10); <= 0 disables the term.")
        form.addParam("paramsFile", params.PathParam, default="", label="Sigmas file (optional)",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="A 'sigma_vel sigma_div sigma_acc' file (RELION opt_params style); "
                           "overrides the three values above.")
        form.addLine("Frames")
        form.addParam("firstFrame", params.IntParam, default=1, label="first")
        form.addParam("lastFrame", params.IntParam, default=-1, label="last (-1: all)")
        form.addParam("window", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Search radius (px)", help="0 = chosen from sigma_vel and frames.")
        self._defineMaxEdParam(form)
        form.addParam("initFromData", params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED, label="Initial track from the data?",
                      help="Ignore the movies' alignment and estimate a global track first.")
        form.addParam("detectDefects", params.BooleanParam, default=True,
                      expertLevel=params.LEVEL_ADVANCED, label="Detect hot/dead pixels?",
                      help="Find hot and dead pixels from the movies themselves and keep them "
                           "out of the fit.")
        form.addParam("spectraMemory", params.IntParam, default=DEFAULT_SPECTRA_MB,
                      expertLevel=params.LEVEL_ADVANCED, validators=[params.Positive],
                      label="Spectra memory (MB)",
                      help="Memory for one micrograph's particle spectra (about 90 kB per "
                           "particle and frame at the default patch). A micrograph needing more "
                           "keeps them, and its predictions, in a scratch file in this run's "
                           "folder (about 100 kB of disk per particle and frame, deleted when "
                           "the micrograph is done) and reads them back this many MB at a "
                           "time: less memory for the same tracks, at the cost of that disk "
                           "space and its traffic (no measurable CPU on a local disk). Raise "
                           "it to keep every micrograph in memory where memory is plentiful and "
                           "the run's disk slow or small; lower it where memory is short "
                           "(polish --spectra-memory).")
        if not shiny:
            return
        form.addSection(label="Shiny particles")
        form.addParam("doShiny", params.BooleanParam, default=True,
                      label="Write shiny particles?",
                      help="Fit per-frame B-factors to the FCC of the polished particles and sum "
                           "their frames along the tracks with those weights (eq. 20-22); the "
                           "output particles are then the shiny ones. The 'B-factor weighting' "
                           "protocol can redo this later with other settings.")

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertConvertStep()
        self._insertFunctionStep(self.polishStep, self._programArgs(), needsGPU=False)
        if self.doShiny.get():
            self._insertFunctionStep(self.shinyStep, self._shinyArgs(), needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _programArgs(self, input_dir=None, out=None, threads=None):
        """Arguments of the polish program (inputs in ``input_dir``, outputs in ``out``;
        default extra/input and extra/polish with the form's threads)."""
        args = self._inputArgs(input_dir) + [
            "--out %s" % os.path.abspath(out or self._getExtraPath("polish")),
            "--first-frame %d --last-frame %d" % (self.firstFrame.get(), self.lastFrame.get()),
            "--window %d" % self.window.get(), self._maxEdArg(),
            "--threads %d" % (threads or self.numberOfThreads.get()),
            "--spectra-memory %d" % self.spectraMemory.get(),
            "--allow-partial"]  # failed micrographs: listed in the summary
        train = self.inputTraining.get()
        if train is not None:
            args.append("--params-file %s" % os.path.abspath(train.getOptParamsFile()))
        elif self.paramsFile.get():
            args.append("--params-file %s" % os.path.abspath(self.paramsFile.get()))
        elif self.sigmaSource.get() != SIGMAS_FROM_DATA:
            args.append("--sigma-vel %g --sigma-div %g --sigma-acc %g"
                        % (self.sigmaVel.get(), self.sigmaDiv.get(), self.sigmaAcc.get()))
        # else: the program's default, --sigmas auto (a --params-file added later wins)
        if self.initFromData.get():
            args.append("--init data")
        if not self.detectDefects.get():
            args.append("--no-defects")
        return " ".join(args)

    def polishStep(self, args):
        self.runProgram("polish", args, numberOfMpi=self.numberOfMpi.get())

    def _shinyArgs(self):
        args = self._inputArgs() + [
            "--polish %s" % os.path.abspath(self._getExtraPath("polish")),
            "--out %s" % os.path.abspath(self._getExtraPath("shiny")),
            "--threads %d" % self.numberOfThreads.get(),
            "--allow-partial"]  # failed micrographs: listed in the summary
        if not self.detectDefects.get():
            args.append("--no-defects")
        return " ".join(args)

    def shinyStep(self, args):
        self.runProgram("bfactors", args, numberOfMpi=self.numberOfMpi.get())

    def createOutputStep(self):
        from ..programs.polish import output_paths
        from .outputs import polished_rows, shiny_particles
        inp = self.inputParticles.get()
        polish_dir = self._getExtraPath("polish")
        if self.doShiny.get():
            out = shiny_particles(self, inp, self.convertedIds(), polish_dir,
                                  self._getExtraPath("shiny"))
        else:
            rows = polished_rows(polish_dir, lambda m: output_paths(polish_dir, m)["tracks"])
            ids = self.convertedIds()
            keep = {ids[row]: v for row, v in rows.items()}
            out = self._createSetOfParticles()
            out.copyInfo(inp)
            for item in inp.iterItems(orderBy="id"):
                if item.getObjId() in keep:
                    p = item.clone()
                    index, path = keep[item.getObjId()]
                    p._polishTracks = String(path)        # RELION _tracks.star of its micrograph
                    p._polishTrackIndex = Integer(index)  # its data_<index> block there
                    out.append(p)
        self._defineOutputs(outputParticles=out)
        self._defineTransformRelation(self.inputParticles, out)

    # ----------------------------------------------------------------- info
    def _validate(self):
        errors = self._validateInputs(self.firstFrame.get(), self.lastFrame.get())
        errors += self._maxEdErrors()
        train = self.inputTraining.get()
        if train is not None and not train.isFinished():
            errors.append("The training run has not finished: its sigmas are not known yet.")
        if self.paramsFile.get() and not os.path.exists(self.paramsFile.get()):
            errors.append("Sigmas file not found: %s" % self.paramsFile.get())
        return errors

    def _summary(self):
        if not self.hasAttribute("outputParticles"):
            return ["Outputs not ready yet."]
        lines = ["%d particles polished with sigmas %s" % (self.outputParticles.getSize(),
                                                            self._sigmaText())]
        failed = self._getExtraPath("polish", "failed.txt")
        if os.path.exists(failed) and open(failed).read().strip():
            lines.append("FAILED micrographs: see %s" % failed)
        return lines

    def _sigmaText(self):
        train = self.inputTraining.get()
        if train is not None and train.hasAttribute("sigmaVel"):
            return "trained: vel %g, div %g, acc %g" % (train.sigmaVel.get(), train.sigmaDiv.get(),
                                                        train.sigmaAcc.get())
        if self.paramsFile.get():
            return "from %s" % self.paramsFile.get()
        if self.sigmaSource.get() == SIGMAS_FROM_DATA:
            path = self._getExtraPath("polish", "sigmas.json")
            if not os.path.exists(path):
                return "chosen per micrograph from its own data"
            import json
            with open(path) as fh:
                d = json.load(fh)
            return ("chosen per micrograph from its own data: geometric mean vel %.3g, div %.4g, "
                    "acc %.3g, spread over micrographs x%s (%s)"
                    % (tuple(d["geometric_mean"]) + ("/".join(
                        "%.2f" % v for v in d["geometric_sd_over_micrographs"]), path)))
        return "vel %g, div %g, acc %g" % (self.sigmaVel.get(), self.sigmaDiv.get(),
                                           self.sigmaAcc.get())

    def _methods(self):
        return ["Particle motion was estimated by Bayesian polishing [Zivanov2019] (sigmas %s)."
                % self._sigmaText()]

    def _citations(self):
        return ["Zivanov2019", "Liu1989"]
