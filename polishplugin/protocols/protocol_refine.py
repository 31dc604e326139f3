"""Scipion protocol: gold-standard 3D auto-refinement with a Gaussian (Tikhonov), RED or
confidence-weighted RED prior (Kimanius et al. 2021).

Converts the particles to a RELION 3.1 STAR and the maps to MRC with the set's pixel size, runs
``polishplugin.programs.refine`` through runJob and registers its final map with the
unregularised half maps attached (B / K, what the FSC is computed from, as scipion-em-relion
attaches RELION's ``_unfil`` halves), the FSC (with a mask also the masked FSC corrected by
phase randomisation) and the particles with their refined alignment.
"""
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA

from ..core.refine.confidence import CW_SHELLS, thresholds_for
from ..core.refine.denoisers import DENOISERS, TTA, TV_WEIGHT, UNET_TTA, default_denoiser
from .protocol_base import ProtPolishBase

#: the refine program's --mode choices (core.refine.loop.MODES, not imported: healpy is slow)
MODES = ("tikhonov", "red", "cw-red")
MODE_TIKHONOV, MODE_RED, MODE_CWRED = range(3)


def volume_file(obj):
    """The file of a pwem Volume without Scipion's ``:mrc`` format suffix."""
    name = obj.getFileName()
    return name.rsplit(":", 1)[0] if ":" in os.path.basename(name) else name


class ProtPolishRefine(ProtPolishBase):
    """Refine the orientations and origins of the particles and two independent half maps
    against a starting map (gold-standard auto-refinement, coarse to fine). Each iteration
    regularises the half maps with a Gaussian prior whose power comes from the FSC (eq. 11,
    Tikhonov, as RELION's auto-refine does) or with a denoiser (RED, eq. 17), whose weight lambda
    may follow the current resolution (CW-RED, section 4.3). The output map's half maps are the
    last iteration's unregularised ones (B / K, no prior, no denoiser): the maps the reported FSC
    is computed from, so that validation by other plugins (postprocessing, local resolution)
    sees no features the two halves share through the prior (Kimanius et al. 2021, section
    4.3)."""
    _label = "denoiser-regularised refinement"
    _devStatus = BETA
    _possibleOutputs = {"outputVolume": "Volume", "outputParticles": "SetOfParticles",
                        "outputFSC": "FSC", "outputFSCCorrected": "FSC"}

    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      important=True, label="Particles",
                      help="Particles with CTF. An existing alignment is optional: its origins "
                           "centre the first translational search, the orientations are searched "
                           "globally. Half-sets from _rlnRandomSubset when present, else "
                           "alternating.")
        form.addParam("inputVolume", params.PointerParam, pointerClass="Volume",
                      important=True, label="Starting map",
                      help="MRC map of the particles' box and pixel size; low-passed at the "
                           "initial resolution below.")
        form.addParam("inputMask", params.PointerParam, pointerClass="VolumeMask",
                      allowsNull=True, label="Solvent mask (optional)",
                      help="Values in [0, 1]; default: a soft sphere of the particle diameter. "
                           "With a mask, also the masked FSC of the final half maps corrected "
                           "by phase randomisation (as relion_postprocess's; Chen et al. "
                           "2013) as a second FSC output.")
        form.addParam("particleDiameter", params.FloatParam, default=-1,
                      label="Particle diameter (A)",
                      help="Solvent sphere and the angular step needed; -1: 0.8 of the box.")
        form.addParam("iniHigh", params.FloatParam, default=30.0,
                      validators=[params.Positive], label="Initial low-pass (A)",
                      help="The starting map is low-passed to this resolution.")

        form.addSection(label="Prior")
        form.addParam("mode", params.EnumParam, choices=list(MODES), default=MODE_CWRED,
                      display=params.EnumParam.DISPLAY_HLIST, label="Regularisation",
                      help="tikhonov: Gaussian prior from the FSC (eq. 11, RELION's baseline); "
                           "red: the denoiser's output as prior mean with a fixed lambda "
                           "(eq. 17); cw-red: lambda from the current resolution, 0 at or worse "
                           "than the low threshold, 1 at or better than the high one.")
        form.addParam("denoiser", params.EnumParam, choices=list(DENOISERS),
                      default=DENOISERS.index(default_denoiser()),
                      condition="mode!=%d" % MODE_TIKHONOV, label="Denoiser",
                      help="Applied to the standardised unregularised map B/K (section 3.1). "
                           "Default: unet where torch (the plugin's unet extra) is installed, "
                           "else tv; the U-Net was measured better than TV against RELION.")
        form.addParam("tvWeight", params.FloatParam, default=TV_WEIGHT,
                      condition="mode!=%d and denoiser==%d" % (
                          MODE_TIKHONOV, DENOISERS.index("tv") if "tv" in DENOISERS else -1),
                      expertLevel=params.LEVEL_ADVANCED, label="TV weight",
                      help="Smoothing weight of the total-variation denoiser.")
        form.addParam("unetWeights", params.FileParam, default="",
                      condition="mode!=%d and denoiser==%d" % (
                          MODE_TIKHONOV, DENOISERS.index("unet") if "unet" in DENOISERS else -1),
                      expertLevel=params.LEVEL_ADVANCED, label="U-Net weights (optional)",
                      help="A weights file written by the train_denoiser program; empty: the "
                           "weights shipped with the plugin.")
        form.addParam("unetTta", params.EnumParam, choices=[str(t) for t in TTA],
                      default=TTA.index(UNET_TTA),
                      condition="mode!=%d and denoiser==%d" % (
                          MODE_TIKHONOV, DENOISERS.index("unet") if "unet" in DENOISERS else -1),
                      display=params.EnumParam.DISPLAY_HLIST,
                      expertLevel=params.LEVEL_ADVANCED, label="U-Net test-time augmentation",
                      help="Average the network over this many symmetries of the cube (8: the "
                           "axis flips; 48: also the axis permutations), each undone on its "
                           "output; that many times the denoiser's CPU. 1: the plain network.")
        form.addParam("lam", params.FloatParam, default=1.0, condition="mode==%d" % MODE_RED,
                      validators=[params.Range(0.0, 1.0)], label="Lambda",
                      help="Weight of the denoiser's prior mean (eq. 17), in [0, 1].")
        line = form.addLine("CW-RED lambda thresholds (A)", condition="mode==%d" % MODE_CWRED,
                            help="lambda = 0 at or worse than the first resolution, 1 at or "
                                 "better than the second, linear in between (section 4.3). "
                                 "Empty: the denoiser's own, derived from its single-pass gain "
                                 "(U-Net), or the paper's 10 and 4.5 A (others).")
        line.addParam("cwLow", params.FloatParam, default=None, allowsNull=True,
                      label="lambda 0 at")
        line.addParam("cwHigh", params.FloatParam, default=None, allowsNull=True,
                      label="lambda 1 at")
        form.addParam("cwShells", params.EnumParam, choices=list(CW_SHELLS),
                      default=CW_SHELLS.index("final"), condition="mode!=%d" % MODE_TIKHONOV,
                      display=params.EnumParam.DISPLAY_HLIST,
                      expertLevel=params.LEVEL_ADVANCED, label="Prior mean weighted per shell",
                      help="Weight the denoiser's prior mean per Fourier shell by the half-map "
                           "FSC (0 where the halves disagree: the Gaussian prior there). final: "
                           "in the final map of both halves only (the default, the setting "
                           "measured against RELION); all: in every update; none: nowhere "
                           "(the paper's eq. 17).")
        form.addParam("tau2Fudge", params.FloatParam, default=1.0, validators=[params.Positive],
                      label="tau^2 fudge factor",
                      help="Multiplies the signal power of eq. 12 (RELION's --tau2_fudge).")

        form.addSection(label="Sampling")
        form.addParam("healpixOrder", params.IntParam, default=1,
                      validators=[params.GE(0)], label="Initial HEALPix order",
                      help="Global search at this order (1: 30 degrees, 2: 15, 3: 7.5 ...).")
        form.addParam("localOrder", params.IntParam, default=3, validators=[params.GE(1)],
                      label="Local searches from order",
                      help="From this order on, orientations are searched around each "
                           "particle's previous pose.")
        form.addParam("maxOrder", params.IntParam, default=6, validators=[params.GE(0)],
                      label="Finest HEALPix order",
                      help="The order goes up when the resolution stalls or the step is "
                           "coarser than the resolution needs, never beyond this (6: 0.94 "
                           "degrees).")
        form.addParam("offsetRange", params.FloatParam, default=3.0,
                      validators=[params.Positive], label="Offset search range (px)")
        form.addParam("offsetStep", params.FloatParam, default=1.0,
                      validators=[params.Positive], label="Offset search step (px)")
        form.addParam("sigmaOffset", params.FloatParam, default=10.0,
                      validators=[params.GE(0)], expertLevel=params.LEVEL_ADVANCED,
                      label="Offset prior sigma (A)",
                      help="First standard deviation of the Gaussian prior on the offsets from "
                           "the box centre, then estimated from the data (RELION's --offset); "
                           "0: uniform prior.")
        form.addParam("maxIter", params.IntParam, default=25, validators=[params.GE(1)],
                      label="Maximum iterations")

        form.addSection(label="Ground truth")
        form.addParam("inputTruthVolume", params.PointerParam, pointerClass="Volume",
                      allowsNull=True, expertLevel=params.LEVEL_ADVANCED,
                      label="True map (optional)",
                      help="Benchmarks on simulated data: the viewer adds the FSC of the result "
                           "against it. Same box and pixel size as the particles.")
        form.addParam("inputTruthParticles", params.PointerParam, pointerClass="SetOfParticles",
                      pointerCondition="hasAlignmentProj", allowsNull=True,
                      expertLevel=params.LEVEL_ADVANCED, label="Particles with true poses",
                      help="Benchmarks on simulated data: the viewer shows the angular error of "
                           "the refined orientations (particles matched by id).")
        form.addParallelSection(threads=1, mpi=1)

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, self.inputParticles.get().getObjId(),
                                 self.inputVolume.get().getObjId(), needsGPU=False)
        self._insertFunctionStep(self.refineStep, self._programArgs(), needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _refineDir(self, *p):
        return self._getExtraPath("refine", *p)

    def convertInputStep(self, partId, volId):
        """Particles -> particles.star (rows in id order); starting map and mask -> MRC with the
        pixel size the sets declare (a stale MRC header would make the program refuse them)."""
        from ..io import convert
        from ..io.mrc import read_mrc, write_mrc
        os.makedirs(self._inputDir(), exist_ok=True)
        parts = self.inputParticles.get()
        convert.write_set_of_particles(parts, self._inputDir("particles.star"))
        self._writeConvertedIds(p.getObjId() for p in parts.iterItems(orderBy="id"))
        px = parts.getSamplingRate()
        for obj, name in ((self.inputVolume.get(), "reference.mrc"),
                          (self.inputMask.get(), "mask.mrc")):
            if obj is not None:
                data, _ = read_mrc(volume_file(obj))
                write_mrc(self._inputDir(name), data, px)

    def _programArgs(self):
        mode = MODES[self.mode.get()]
        args = ["--particles %s" % os.path.abspath(self._inputDir("particles.star")),
                "--ref %s" % os.path.abspath(self._inputDir("reference.mrc")),
                "--out %s" % os.path.abspath(self._refineDir()),
                "--mode %s" % mode, "--tau2-fudge %g" % self.tau2Fudge.get(),
                "--ini-high %g" % self.iniHigh.get(),
                "--healpix-order %d" % self.healpixOrder.get(),
                "--local-order %d" % self.localOrder.get(),
                "--max-order %d" % self.maxOrder.get(),
                "--offset-range %g --offset-step %g" % (self.offsetRange.get(),
                                                        self.offsetStep.get()),
                "--sigma-offset %g" % self.sigmaOffset.get(),
                "--max-iter %d" % self.maxIter.get(), "--threads %d" % self.numberOfThreads.get()]
        if self.inputMask.get() is not None:
            args.append("--mask %s" % os.path.abspath(self._inputDir("mask.mrc")))
        if self.particleDiameter.get() > 0:
            args.append("--particle-diameter %g" % self.particleDiameter.get())
        if mode != "tikhonov":
            denoiser = DENOISERS[self.denoiser.get()]
            args.append("--denoiser %s" % denoiser)
            if denoiser == "tv":
                args.append("--tv-weight %g" % self.tvWeight.get())
            if denoiser == "unet" and self.unetWeights.get():
                args.append("--unet-weights '%s'" % os.path.abspath(self.unetWeights.get()))
            if denoiser == "unet":
                args.append("--unet-tta %d" % TTA[self.unetTta.get()])
            args.append("--cw-shells %s" % CW_SHELLS[self.cwShells.get()])
        if mode == "red":
            args.append("--lambda %g" % self.lam.get())
        if mode == "cw-red":
            args.append("--cw-low %g --cw-high %g" % self._cwThresholds())
        return " ".join(args)

    def refineStep(self, args):
        """Runs the program (under mpirun with MPI processes > 1: each scores a share of both
        half-sets' particles, the result is the one-process run's); on Scipion's 'continue' the
        same arguments meet the program's saved state in extra/refine and it resumes after its
        last finished iteration."""
        self.runProgram("refine", args, numberOfMpi=self.numberOfMpi.get(),
                        numberOfThreads=self.numberOfThreads.get())

    def createOutputStep(self):
        from ..programs.refine import UNREGULARISED
        from .outputs import refined_particles, refinement_fsc, volume_with_halves
        inp = self.inputParticles.get()
        px = inp.getSamplingRate()
        # the unregularised halves: the FSC's own, free of the prior's shared features
        volume = volume_with_halves(self, self._refineDir("map.mrc"), px,
                                    *[self._refineDir(UNREGULARISED % h) for h in (1, 2)])
        particles = refined_particles(self, inp, self.convertedIds(),
                                      self._refineDir("particles.star"))
        fsc = refinement_fsc(self._refineDir("fsc.star"), label=self.getRunName())
        self._defineOutputs(outputVolume=volume, outputParticles=particles, outputFSC=fsc)
        # with a mask: the masked FSC corrected by phase randomisation, as relion_postprocess's
        corrected = refinement_fsc(self._refineDir("fsc.star"), self.getRunName() + " masked",
                                   "rlnFourierShellCorrelationCorrected")
        if corrected is not None:
            self._defineOutputs(outputFSCCorrected=corrected)
        self._defineSourceRelation(self.inputParticles, volume)
        self._defineSourceRelation(self.inputVolume, volume)
        self._defineTransformRelation(self.inputParticles, particles)

    # ----------------------------------------------------------------- info
    def _validate(self):
        """What the program would refuse, before any work: an empty set, no CTF, box or pixel
        size of the maps unlike the particles', an empty half-set, contradictory settings."""
        from ..io.errors import InputError
        from ..io.mrc import read_mrc_header
        parts, vol = self.inputParticles.get(), self.inputVolume.get()
        if parts is None or vol is None:
            return ["Particles and a starting map are needed."]
        errors = []
        if parts.getSize() == 0:
            return ["The particle set is empty."]
        if not parts.hasCTF():
            errors.append("The particles have no CTF: estimate it (and attach it to the "
                          "particles) first.")
        px = parts.getSamplingRate()
        box = parts.getXDim()
        if not box:
            try:
                box = read_mrc_header(parts.getFirstItem().getFileName()).nx
            except InputError as exc:
                errors.append("Particle images: %s" % exc)
        if parts.getFirstItem().hasAttribute("_rlnRandomSubset"):
            halves = sorted(int(h) for h in parts.getUniqueValues("_rlnRandomSubset"))
            if halves != [1, 2]:
                errors.append("The particles' half-sets (_rlnRandomSubset) are %s: gold-standard "
                              "refinement needs particles in half-sets 1 and 2, and no others."
                              % halves)
        maps = [("Starting map", vol), ("Mask", self.inputMask.get()),
                ("True map", self.inputTruthVolume.get())]
        for name, obj in maps:
            if obj is None:
                continue
            if abs(obj.getSamplingRate() - px) > 1e-3 * px:
                errors.append("Pixel sizes differ: %s %.4f A, particles %.4f A (rescale it "
                              "first)." % (name.lower(), obj.getSamplingRate(), px))
            try:
                h = read_mrc_header(volume_file(obj))
            except InputError as exc:
                errors.append("%s: %s (an MRC map is needed)" % (name, exc))
                continue
            if box and (h.nx, h.ny, h.nz) != (box, box, box):
                errors.append("%s is %d x %d x %d, the particles' box is %d." % (
                    name, h.nx, h.ny, h.nz, box))
        if self.mode.get() == MODE_CWRED and self._cwThresholds()[1] >= self._cwThresholds()[0]:
            errors.append("CW-RED: lambda reaches 1 at a finer resolution than where it leaves 0 "
                          "(now %g A and %g A)." % self._cwThresholds()[::-1])
        if self.maxOrder.get() < self.healpixOrder.get():
            errors.append("The finest HEALPix order (%d) is below the initial one (%d)."
                          % (self.maxOrder.get(), self.healpixOrder.get()))
        if self.iniHigh.get() < 2 * px:
            errors.append("Initial low-pass %g A is beyond Nyquist (%g A)." % (self.iniHigh.get(),
                                                                               2 * px))
        if self.offsetStep.get() > self.offsetRange.get():
            errors.append("The offset step (%g px) exceeds the range (%g px)."
                          % (self.offsetStep.get(), self.offsetRange.get()))
        weights = self.unetWeights.get()
        if (self.mode.get() != MODE_TIKHONOV and DENOISERS[self.denoiser.get()] == "unet"
                and weights and not os.path.isfile(weights)):
            errors.append("U-Net weights file not found: %s" % weights)
        truth = self.inputTruthParticles.get()
        if truth is not None and truth.getAlignment() != "Projection":
            errors.append("The particles with true poses have no 3D alignment.")
        return errors

    def _modeText(self):
        mode = MODES[self.mode.get()]
        if mode == "tikhonov":
            return "Tikhonov (Gaussian prior)"
        text = "%s, denoiser %s" % (mode.upper(), DENOISERS[self.denoiser.get()])
        if mode == "red":
            return text + ", lambda %g" % self.lam.get()
        return text + ", lambda 0 at %g A to 1 at %g A" % self._cwThresholds()

    def _cwThresholds(self):
        """CW-RED's (lambda 0, lambda 1) resolutions: the form's, else the denoiser's."""
        low, high = thresholds_for(DENOISERS[self.denoiser.get()])
        return (low if self.cwLow.get() is None else self.cwLow.get(),
                high if self.cwHigh.get() is None else self.cwHigh.get())

    def _summary(self):
        import json
        path = self._refineDir("refine.json")
        if not os.path.exists(path):
            return ["Outputs not ready yet."]
        with open(path) as fh:
            info = json.load(fh)
        its = info["iterations"]
        lines = ["lambda per iteration: %s" % " ".join("%.2f" % r["lambda"] for r in its),
                 "CPU time %.0f s" % info["cpu_s_total"]]
        if not self.hasAttribute("outputVolume"):
            last = its[-1] if its else {"iteration": 0, "resolution": float("nan")}
            return ["%s: iteration %d done, resolution %.2f A" % (
                self._modeText(), last["iteration"], last["resolution"])] + lines
        if self.hasAttribute("outputFSCCorrected"):   # the program's number (log, figure)
            from ..io.star import read_star
            general = read_star(self._refineDir("fsc.star"))["general"]
            lines.insert(0, "masked, corrected FSC 0.143: %.2f A"
                         % float(general["rlnPpCorrectedResolution"][0]))
        return ["%s: %d particles, %d iterations (%s), resolution %.2f A (half-map FSC 0.143)"
                % (self._modeText(), self.outputParticles.getSize(), len(its),
                   "converged" if info["converged"] else "maximum reached",
                   info["resolution"])] + lines + [
            "outputVolume's half maps: the unregularised halves B/K (no prior, no denoiser) "
            "the FSC is computed from, for validation by other programs"]

    def _methods(self):
        return ["Particles were refined by gold-standard 3D auto-refinement [Scheres2012] with "
                "%s regularisation [Kimanius2021]." % self._modeText()]

    def _citations(self):
        return ["Kimanius2021", "Scheres2012"] + (["Chen2013"] if self.inputMask.get() else [])
