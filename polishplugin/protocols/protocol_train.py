"""Scipion protocol: train the motion-prior parameters (sigma_vel, sigma_div, sigma_acc) over
random subsets of micrographs, by the marginal likelihood of the subset's CC maps (default,
core/motion/evidence.py) or by the TCC of eq. 19 (Zivanov 2019 §2.2).

Runs ``polishplugin.programs.train`` through runJob and registers the trained sigmas as Float
outputs (sigmaVel, sigmaDiv, sigmaAcc), their max/min spread over restarts (sigmaSpread, a CsvList
"vel,div,acc") and the RELION-style params file (optParamsFile) that ProtPolishBayesian reads.
"""
import json
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pyworkflow.object import CsvList, Float, String

from .protocol_base import ProtPolishMovieBase


class ProtPolishTrain(ProtPolishMovieBase):
    """Find the sigmas of the motion prior from a random subset of micrographs. Evidence
    (default): the sigmas that make the subset's cross-correlation maps most probable under the
    motion model (marginal likelihood), with the width of each optimum. TCC (Zivanov et al.
    2019, §2.2): align on the low frequencies with a trial triplet, score the agreement with the
    opposite half map at the high frequencies, and let Nelder-Mead choose the next triplet.
    Several restarts on different subsets show how well determined the sigmas are."""
    _label = "train motion parameters"
    _devStatus = BETA
    METHODS = ("evidence", "tcc")   # the choices of the Method parameter, in order
    _possibleOutputs = {"sigmaVel": Float, "sigmaDiv": Float, "sigmaAcc": Float,
                        "sigmaSpread": CsvList, "optParamsFile": String}

    def _defineParams(self, form):
        form.addSection(label="Input")
        self._defineInputParams(form)
        form.addSection(label="Training")
        form.addParam("method", params.EnumParam, choices=list(self.METHODS),
                      default=0, display=params.EnumParam.DISPLAY_HLIST, label="Method",
                      help="evidence: maximise the marginal likelihood of the subset's CC maps "
                           "(one alignment per restart, a few times cheaper than tcc; its sigmas "
                           "polished within 1 % of the true ones in our benchmarks). tcc: the "
                           "paper's TCC maximisation with Nelder-Mead (every evaluation "
                           "re-aligns the subset).")
        form.addParam("minParticles", params.IntParam, default=4000, validators=[params.GE(2)],
                      label="Particles per subset",
                      help="Random micrographs are taken until this many particles (RELION "
                           "--min_p). More particles: steadier sigmas, more memory and time.")
        form.addParam("restarts", params.IntParam, default=3, validators=[params.GE(1)],
                      label="Restarts",
                      help="Independent trainings, each on its own random subset; the geometric "
                           "mean of their optima is written, their spread is reported.")
        form.addParam("alignFrac", params.FloatParam, default=0.5,
                      validators=[params.Range(0.05, 0.95)], label="Alignment fraction",
                      help="Area fraction of the frequency disc used to align; the rest "
                           "(evaluation ring) scores the alignment (RELION --align_frac).")
        form.addParam("fitAcc", params.BooleanParam, default=True, label="Fit sigma_acc?",
                      help="No: sigma_vel and sigma_div only, acceleration term off.")
        form.addParam("evalMaxRes", params.FloatParam, default=0.0,
                      expertLevel=params.LEVEL_ADVANCED, label="Evaluation limit (A)",
                      help="Outer edge of the evaluation ring; 0 = the half maps' FSC 0.143 "
                           "resolution.")
        form.addParam("memoryBudget", params.FloatParam, default=0.0,
                      expertLevel=params.LEVEL_ADVANCED, label="Memory budget (GB)",
                      help="Per subset; 0 = no limit.")
        form.addParam("maxEvals", params.IntParam, default=100, validators=[params.GE(5)],
                      expertLevel=params.LEVEL_ADVANCED, condition="method == 1", label="Evaluations per restart (max)",
                      help="Cap on the TCC evaluations of one Nelder-Mead run.")
        form.addParam("seed", params.IntParam, default=23, expertLevel=params.LEVEL_ADVANCED,
                      label="Random seed")
        self._defineMaxEdParam(form)
        form.addLine("Frames")
        form.addParam("firstFrame", params.IntParam, default=1, label="first")
        form.addParam("lastFrame", params.IntParam, default=-1, label="last (-1: all)")
        form.addParallelSection(threads=1, mpi=1)

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertConvertStep()
        self._insertFunctionStep(self.trainStep, self._programArgs(), needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _trainDir(self, *p):
        return self._getExtraPath("train", *p)

    def _programArgs(self):
        args = self._inputArgs() + [
            "--out %s" % os.path.abspath(self._trainDir()),
            "--method %s" % self.getMethod(),
            "--first-frame %d --last-frame %d" % (self.firstFrame.get(), self.lastFrame.get()),
            "--min-particles %d --restarts %d --align-frac %g --seed %d --max-evals %d"
            % (self.minParticles.get(), self.restarts.get(), self.alignFrac.get(),
               self.seed.get(), self.maxEvals.get()),
            "--eval-max-res %g --memory-budget %g" % (self.evalMaxRes.get(),
                                                      self.memoryBudget.get()),
            "--fit-acc" if self.fitAcc.get() else "--no-fit-acc", self._maxEdArg(),
            "--threads %d" % self.numberOfThreads.get(),
            "--allow-partial"]  # failed micrographs: listed in the summary
        return " ".join(args)

    def trainStep(self, args):
        self.runProgram("train", args, numberOfMpi=self.numberOfMpi.get())

    def createOutputStep(self):
        with open(self._trainDir("train.json")) as fh:
            report = json.load(fh)
        vel, div, acc = report["sigmas"]
        spread = CsvList(pType=float)
        spread.set([float("nan") if v is None else v for v in report["spread"]])
        self._defineOutputs(sigmaVel=Float(vel), sigmaDiv=Float(div), sigmaAcc=Float(acc),
                            sigmaSpread=spread,
                            optParamsFile=String(os.path.abspath(self.getOptParamsFile())))

    def getMethod(self):
        """'evidence' or 'tcc' (the train program's --method)."""
        return self.METHODS[self.method.get()]

    def getOptParamsFile(self):
        """The RELION-style 'sigma_vel sigma_div sigma_acc' file written by the training."""
        return self._trainDir("opt_params_all_groups.txt")

    # ----------------------------------------------------------------- info
    def _validate(self):
        errors = self._validateInputs(self.firstFrame.get(), self.lastFrame.get())
        errors += self._maxEdErrors()
        parts = self.inputParticles.get()
        if parts is not None and parts.getSize() < self.minParticles.get():
            errors.append("Only %d particles, fewer than the %d asked per subset."
                          % (parts.getSize(), self.minParticles.get()))
        return errors

    def _summary(self):
        if not self.hasAttribute("sigmaVel"):
            return ["Outputs not ready yet."]
        spread = self.sigmaSpread.get().split(",") if self.sigmaSpread.get() else []
        return ["Trained sigmas (%s method, geometric mean of %d restarts): vel %.4g A/dose, "
                "div %.5g A, acc %.4g A/dose" % (self.getMethod(), self.restarts.get(),
                                                 self.sigmaVel.get(), self.sigmaDiv.get(),
                                                 self.sigmaAcc.get()),
                "Spread over restarts (max/min): %s" % " / ".join(spread),
                "Params file: %s" % self.optParamsFile.get()]

    def _methods(self):
        if self.getMethod() == "tcc":
            how = ("maximising the thick-cylinder correlation [Zivanov2019] with Nelder-Mead "
                   "[Nelder1965]")
        else:
            how = ("maximising the marginal likelihood of the particles' cross-correlation maps "
                   "under the motion prior of [Zivanov2019]")
        return ["The motion-prior parameters were trained by %s over %d random subsets of %d "
                "particles." % (how, self.restarts.get(), self.minParticles.get())]

    def _citations(self):
        return ["Zivanov2019"] + (["Nelder1965"] if self.getMethod() == "tcc" else [])
