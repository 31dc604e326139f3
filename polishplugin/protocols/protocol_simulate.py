"""Scipion protocol: simulate a movie data set with known motion, damage and noise.

Runs ``polishplugin.programs.simulate`` (RELION-layout files plus ground truth) and registers
the results as pwem objects: movies with their earlier (noisy) global alignment, particles with
3D alignment, CTF and coordinates, the half maps with a mask, and the true volume.
"""
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA

from .protocol_base import ProtPolishBase


class ProtPolishSimulate(ProtPolishBase):
    """Simulate movies of a known structure with known per-particle motion (drawn from the GP
    prior of Zivanov et al. 2019), per-frame radiation damage, CTF and counting noise. The ground
    truth (true tracks, sigmas, volume) is kept beside the data for benchmarking."""
    _label = "simulate dataset"
    _devStatus = BETA
    _possibleOutputs = {"outputMovies": "SetOfMovies", "outputParticles": "SetOfParticles",
                        "outputVolume": "Volume", "outputMask": "VolumeMask",
                        "outputTruthVolume": "Volume"}

    VOLUME_PHANTOM, VOLUME_MODEL = 0, 1

    def _defineParams(self, form):
        form.addSection(label="Sample")
        form.addParam("volumeSource", params.EnumParam, default=self.VOLUME_PHANTOM,
                      choices=["pseudo-protein phantom", "atomic model (PDB/mmCIF)"],
                      display=params.EnumParam.DISPLAY_HLIST, label="Structure",
                      help="A synthetic pseudo-protein needs no file; an atomic model is turned "
                           "into an electron-scattering density map with gemmi.")
        form.addParam("modelFile", params.PathParam, condition="volumeSource==1",
                      label="Atomic model", help="PDB or mmCIF file.")
        form.addParam("boxSize", params.IntParam, default=96, validators=[params.Range(32, 512)],
                      label="Particle box (px)")
        form.addParam("pixelSize", params.FloatParam, default=1.2, validators=[params.Positive],
                      label="Pixel size (A)")
        form.addParam("halfMapResolution", params.FloatParam, default=4.0,
                      label="Half-map resolution (A)",
                      help="The half maps are the truth plus independent noise whose level makes "
                           "their FSC cross 0.143 at this resolution.")
        form.addSection(label="Movies")
        form.addParam("numberOfMicrographs", params.IntParam, default=4,
                      validators=[params.Positive], label="Micrographs")
        form.addParam("micrographSize", params.IntParam, default=1024,
                      validators=[params.Range(128, 8192)], label="Micrograph size (px)")
        form.addParam("numberOfFrames", params.IntParam, default=24,
                      validators=[params.Range(2, 200)], label="Frames")
        form.addParam("particlesPerMicrograph", params.IntParam, default=30,
                      validators=[params.Positive], label="Particles per micrograph")
        form.addParam("dosePerFrame", params.FloatParam, default=1.25,
                      validators=[params.Positive], label="Dose per frame (e/A^2)")
        form.addParam("snr", params.FloatParam, default=0.01, validators=[params.Positive],
                      label="Particle SNR",
                      help="Signal variance over noise variance of a full-dose particle image "
                           "in its box (real data: ~0.01).")
        form.addParam("voltage", params.FloatParam, default=300.0, label="Voltage (kV)")
        form.addParam("sphericalAberration", params.FloatParam, default=2.7, label="Cs (mm)")
        form.addParam("amplitudeContrast", params.FloatParam, default=0.1, label="Q0")
        form.addLine("Defocus range (A)")
        form.addParam("defocusMin", params.FloatParam, default=8000.0, label="min")
        form.addParam("defocusMax", params.FloatParam, default=25000.0, label="max")
        form.addSection(label="Motion and detector")
        form.addParam("sigmaVel", params.FloatParam, default=0.5, label="sigma_vel (A/dose)",
                      help="Velocity prior of Zivanov et al. 2019 (eq. 2), A per e/A^2.")
        form.addParam("sigmaDiv", params.FloatParam, default=5000.0, label="sigma_div (A)",
                      help="Spatial correlation length of the velocities (eq. 2).")
        form.addParam("sigmaAcc", params.FloatParam, default=2.0, label="sigma_acc (A/dose)",
                      help="Acceleration prior (eq. 10), A per e/A^2.")
        form.addParam("stageDrift", params.FloatParam, default=4.0, label="Stage drift (A)",
                      help="Total length of the global (whole-micrograph) drift.")
        form.addParam("writeTiff", params.BooleanParam, default=True,
                      label="Counts as TIFF + gain reference?",
                      help="Store raw counts as TIFF with a gain reference (pixel sensitivity "
                           "varying by ~10%, a few dead columns), as a counting detector would.")
        form.addParam("hotPixels", params.IntParam, default=0, label="Hot pixels per movie")
        form.addParam("seed", params.IntParam, default=2019, label="Random seed",
                      expertLevel=params.LEVEL_ADVANCED)
        form.addParallelSection(threads=1, mpi=0)

    # ----------------------------------------------------------------- steps
    def _insertAllSteps(self):
        self._insertFunctionStep(self.simulateStep, self._programArgs(), needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def _programArgs(self):
        args = ["--out %s" % self._getExtraPath(),
                "--seed %d" % self.seed.get(), "--micrographs %d" % self.numberOfMicrographs.get(),
                "--mic-size %d" % self.micrographSize.get(), "--frames %d" % self.numberOfFrames.get(),
                "--particles %d" % self.particlesPerMicrograph.get(), "--box %d" % self.boxSize.get(),
                "--pixel-size %g" % self.pixelSize.get(), "--dose-per-frame %g" % self.dosePerFrame.get(),
                "--snr %g" % self.snr.get(), "--voltage %g" % self.voltage.get(),
                "--cs %g" % self.sphericalAberration.get(), "--q0 %g" % self.amplitudeContrast.get(),
                "--defocus %g %g" % (self.defocusMin.get(), self.defocusMax.get()),
                "--sigma-vel %g" % self.sigmaVel.get(), "--sigma-div %g" % self.sigmaDiv.get(),
                "--sigma-acc %g" % self.sigmaAcc.get(), "--drift %g" % self.stageDrift.get(),
                "--half-map-resolution %g" % self.halfMapResolution.get(),
                "--hot-pixels %d" % self.hotPixels.get()]
        if self.writeTiff.get():
            args.append("--tiff")
        if self.volumeSource.get() == self.VOLUME_MODEL:
            args.append("--model %s" % os.path.abspath(self.modelFile.get()))
        return " ".join(args)

    def simulateStep(self, args):
        self.runProgram("simulate", args)

    def createOutputStep(self):
        from .outputs import simulated_dataset_outputs
        out = simulated_dataset_outputs(self, self._getExtraPath())
        self._defineOutputs(**out)

    # ----------------------------------------------------------------- info
    def _validate(self):
        errors = []
        if self.volumeSource.get() == self.VOLUME_MODEL:
            path = self.modelFile.get() or ""
            if not os.path.exists(path):
                errors.append("Atomic model file not found: %r" % path)
        if self.defocusMin.get() >= self.defocusMax.get():
            errors.append("Defocus min (%g) must be below max (%g)"
                          % (self.defocusMin.get(), self.defocusMax.get()))
        if self.micrographSize.get() < 2 * self.boxSize.get():
            errors.append("Micrographs (%d px) must be at least twice the box (%d px)"
                          % (self.micrographSize.get(), self.boxSize.get()))
        return errors

    def _summary(self):
        lines = ["%d micrographs x %d frames, %d particles each, box %d at %.3g A/px"
                 % (self.numberOfMicrographs.get(), self.numberOfFrames.get(), self.particlesPerMicrograph.get(),
                    self.boxSize.get(), self.pixelSize.get()),
                 "true sigmas: vel %g, div %g, acc %g; SNR %g"
                 % (self.sigmaVel.get(), self.sigmaDiv.get(), self.sigmaAcc.get(), self.snr.get())]
        if not self.hasAttribute("outputParticles"):
            lines.append("Outputs not ready yet.")
        return lines

    def _methods(self):
        return ["Movies were simulated with known particle motion drawn from the Gaussian-"
                "process prior of [Zivanov2019] (sigma_vel %g A/dose, sigma_div %g A, sigma_acc "
                "%g A/dose), exposure damage after [Grant2015] and counting noise at %g e/A^2 "
                "per frame." % (self.sigmaVel.get(), self.sigmaDiv.get(), self.sigmaAcc.get(), self.dosePerFrame.get())]

    def _citations(self):
        return ["Zivanov2019", "Grant2015"]
