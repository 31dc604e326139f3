"""Scipion protocol: per-frame B-factor weighting and shiny particles (Zivanov et al. 2019,
section 2.3, eq. 20-22).

Takes a finished Bayesian polishing run (its extra/polish folder holds the tracks and FCC sums,
its extra/input the RELION files of its movies and particles, its inputs the half maps), runs
``polishplugin.programs.bfactors`` through runJob (Scipion's threads, MPI and queue apply) and
registers the shiny particles: the polishing run's input particles with new image locations and
the same alignment and CTF (shifts scaled when the output box is rescaled).
"""
import json
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA

from .protocol_base import ProtPolishBase


class ProtPolishBFactors(ProtPolishBase):
    """Fit a relative B-factor and scale per movie frame to the Fourier cylinder correlation of
    the polished particles with the opposite half map (eq. 20-21), and sum every particle's
    frames at its tracked positions with the frequency-dependent weights they give (eq. 22):
    "shiny" particles for a new refinement."""
    _label = "B-factor weighting"
    _devStatus = BETA
    _possibleOutputs = {"outputParticles": "SetOfParticles"}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputPolish", params.PointerParam, pointerClass="ProtPolishBayesian",
                      important=True, label="Bayesian polishing run",
                      help="A finished polishing run: its tracks and FCC sums are used, and its "
                           "movies, particles and half maps.")
        form.addSection(label="B-factors")
        form.addParam("bfacMinRes", params.FloatParam, default=20.0,
                      label="Lowest resolution fitted (A)")
        form.addParam("bfacMaxRes", params.FloatParam, default=-1.0,
                      label="Highest resolution fitted (A)",
                      help="-1: the FSC = 0.143 resolution of the half maps.")
        form.addSection(label="Shiny particles")
        form.addParam("boxSize", params.IntParam, default=-1, label="Box cut from the movies (px)",
                      help="-1: the input particles' box.")
        form.addParam("rescaledSize", params.IntParam, default=-1, label="Rescaled box (px)",
                      help="Fourier rescaling of the output; -1: no rescaling.")
        form.addParam("float16", params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED, label="Write float16 stacks?")
        form.addParallelSection(threads=1, mpi=1)

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertFunctionStep(self.bfactorsStep, self._programArgs(), needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _polishDir(self, *p):
        return self.inputPolish.get()._getExtraPath("polish", *p)

    def _outDir(self, *p):
        return self._getExtraPath("bfactors", *p)

    def _programArgs(self):
        pol = self.inputPolish.get()
        half1, half2 = pol._halfMaps()
        inp = lambda name: os.path.abspath(pol._getExtraPath("input", name))  # noqa: E731
        args = ["--polish %s" % os.path.abspath(self._polishDir()),
                "--particles %s" % inp("particles.star"),
                "--mics %s" % inp("corrected_micrographs.star"),
                "--half1 %s --half2 %s" % (os.path.abspath(half1), os.path.abspath(half2)),
                "--out %s" % os.path.abspath(self._outDir()),
                "--bfac-minres %g --bfac-maxres %g" % (self.bfacMinRes.get(),
                                                       self.bfacMaxRes.get()),
                "--box %d --scale %d" % (self.boxSize.get(), self.rescaledSize.get()),
                "--threads %d" % self.numberOfThreads.get(),
                "--allow-partial"]  # failed micrographs: listed in the summary
        if pol.inputMask.get() is not None:
            args.append("--mask %s" % os.path.abspath(pol.inputMask.get().getFileName()))
        if not pol.detectDefects.get():
            args.append("--no-defects")
        if self.float16.get():
            args.append("--float16")
        return " ".join(args)

    def bfactorsStep(self, args):
        self.runProgram("bfactors", args, numberOfMpi=self.numberOfMpi.get())

    def createOutputStep(self):
        from .outputs import shiny_particles
        pol = self.inputPolish.get()
        out = shiny_particles(self, pol.inputParticles.get(), pol.convertedIds(),
                              self._polishDir(), self._outDir(), self.boxSize.get(),
                              self.rescaledSize.get())
        self._defineOutputs(outputParticles=out)
        self._defineTransformRelation(pol.inputParticles, out)

    # ----------------------------------------------------------------- info
    def _validate(self):
        pol = self.inputPolish.get()
        if pol is None:
            return ["A Bayesian polishing run is needed."]
        errors = []
        from .protocol_polish_stream import ProtPolishStreaming
        if isinstance(pol, ProtPolishStreaming):
            return ["%s is a streaming polishing run: it weights its micrographs itself as they "
                    "arrive (its 'Per-frame B-factors': fixed, or running, refitted in the "
                    "stream). This protocol re-weights a non-streaming polishing run."
                    % pol.getObjLabel()]
        if not os.path.isdir(self._polishDir("tracks")):
            errors.append("The polishing run has no tracks yet (run it first).")
        if None in pol._halfMaps():
            errors.append("The polishing run's reference has no half maps.")
        if self.bfacMaxRes.get() != -1 and not 0 < self.bfacMaxRes.get() < self.bfacMinRes.get():
            errors.append("The highest resolution fitted must be finer (smaller in A) than the "
                          "lowest.")
        for name, value in (("Box", self.boxSize.get()), ("Rescaled box",
                                                          self.rescaledSize.get())):
            if value != -1 and (value < 16 or value % 2):
                errors.append("%s must be even and at least 16 px (or -1)." % name)
        return errors

    def _summary(self):
        if not self.hasAttribute("outputParticles"):
            return ["Outputs not ready yet."]
        lines = ["%d shiny particles" % self.outputParticles.getSize()]
        info = self._outDir("bfactors.json")
        if os.path.exists(info):
            with open(info) as fh:
                b = json.load(fh)["bfactors_A2"]
            lines.append("per-frame B-factors from %.0f to %.0f A^2 (amplitude convention, "
                         "max 0)" % (min(b), max(b)))
        return lines

    def _methods(self):
        return ["Frames were weighted with per-frame B-factors fitted to the Fourier cylinder "
                "correlation and summed along the polished tracks [Zivanov2019]."]

    def _citations(self):
        return ["Zivanov2019"]
