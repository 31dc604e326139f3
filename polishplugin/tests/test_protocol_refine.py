"""Headless Scipion test of ProtPolishRefine: simulated particles (core simulator, true poses
kept) and maps imported with pwem's own import protocols into a real project; a tiny CW-RED run;
its outputs checked for content (finite maps with half maps, FSC, refined alignment close to the
truth); Scipion's continue resuming the program from its last finished iteration; the viewer's
figures rendered headless; RELION's 3D auto-refine convert step taking the refined particles;
validate() refusing maps of another pixel size and box."""
import importlib.util
import json
import os

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.core.refine.denoisers import DENOISERS
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import lowpass, pseudo_protein
from polishplugin.io.convert import matrix_to_relion, read_set_of_particles
from polishplugin.io.mrc import read_mrc, write_mrc
from polishplugin.io.particle_set import write_particle_set
from polishplugin.io.star import read_particles_star
from polishplugin.protocols import ProtPolishRefine
from polishplugin.protocols.protocol_refine import MODE_CWRED, MODES, volume_file
from polishplugin.tests.mpi import MPIRUN
from polishplugin.tests.relion_form import (check_relion_refine_takes, needs_relion_plugin,
                                            relion_rotation)

MPI = os.path.exists(MPIRUN) and importlib.util.find_spec("mpi4py") is not None

N, PX, COUNT, SNR = 24, 5.0, 100, 2.0
# lambda between 0 (40 A) and 1 (12 A): at this box the resolution lands in between
REFINE = dict(mode=MODE_CWRED, denoiser=DENOISERS.index("tv"), cwLow=40.0, cwHigh=12.0,
              maxIter=3, healpixOrder=1, localOrder=2, maxOrder=2, iniHigh=30.0,
              particleDiameter=90.0)


class TestProtPolishRefine(BaseTest):
    @classmethod
    def setUpClass(cls):
        from pwem.protocols import ProtImportMask, ProtImportParticles, ProtImportVolumes
        from pwem.objects import SetOfParticles
        setupTestProject(cls)
        folder = os.path.abspath(cls.proj.getTmpPath("sim"))
        os.makedirs(folder)
        rng = np.random.default_rng(11)
        cls.truth = pseudo_protein(N, PX, rng)
        cls.ps = simulate_particles(cls.truth, COUNT, PX, SNR, rng)
        star = write_particle_set(folder, cls.ps, PX)
        write_mrc(os.path.join(folder, "start.mrc"), lowpass(cls.truth, 30.0, PX), PX)
        write_mrc(os.path.join(folder, "truth.mrc"), cls.truth, PX)
        r = np.linalg.norm(np.indices((N,) * 3) - N // 2, axis=0)
        write_mrc(os.path.join(folder, "mask.mrc"),
                  np.clip((N / 2 - 1 - r) / 3.0, 0.0, 1.0).astype(np.float32), PX)
        write_mrc(os.path.join(folder, "other.mrc"), cls.truth[:20, :20, :20], 2 * PX)
        # the simulated particles (true poses, CTF, half-sets) as a Scipion sqlite, imported
        sqlite = os.path.join(folder, "particles.sqlite")
        parts = SetOfParticles(filename=sqlite)
        read_set_of_particles(star, parts, root=folder)
        parts.write()
        parts.close()
        cls.imp = cls.newProtocol(ProtImportParticles, objLabel="simulated particles",
                                  importFrom=ProtImportParticles.IMPORT_FROM_SCIPION,
                                  sqliteFile=sqlite, samplingRate=PX, voltage=300,
                                  sphericalAberration=2.7, amplitudeContrast=0.1)
        cls.launchProtocol(cls.imp)
        cls.vols = {}
        for name, px in (("start", PX), ("truth", PX), ("other", 2 * PX)):
            prot = cls.newProtocol(ProtImportVolumes, objLabel=name,
                                   filesPath=os.path.join(folder, name + ".mrc"), samplingRate=px)
            cls.launchProtocol(prot)
            cls.vols[name] = prot
        cls.mask = cls.newProtocol(ProtImportMask, maskPath=os.path.join(folder, "mask.mrc"),
                                   samplingRate=PX)
        cls.launchProtocol(cls.mask)
        # with an MPI launcher the form's MPI: 2 ranks (the program test compares them with one)
        cls.prot = cls._refine(numberOfMpi=2 if MPI else 1, numberOfThreads=1 if MPI else 2,
                               **REFINE)
        cls._launch(cls.prot)

    @classmethod
    def _launch(cls, prot):
        from unittest import mock
        env = {}
        if prot.numberOfMpi.get() > 1:
            env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                   "OMPI_MCA_rmaps_base_oversubscribe": "1",
                   "PATH": os.path.dirname(MPIRUN) + os.pathsep + os.environ["PATH"]}
        with mock.patch.dict(os.environ, env):
            cls.launchProtocol(prot)

    @classmethod
    def _refine(cls, start="start", **kwargs):
        prot = cls.newProtocol(ProtPolishRefine, **kwargs)
        prot.inputParticles.set(cls.imp)
        prot.inputParticles.setExtended("outputParticles")
        prot.inputVolume.set(cls.vols[start])
        prot.inputVolume.setExtended("outputVolume")
        prot.inputMask.set(cls.mask)
        prot.inputMask.setExtended("outputMask")
        prot.inputTruthVolume.set(cls.vols["truth"])
        prot.inputTruthVolume.setExtended("outputVolume")
        prot.inputTruthParticles.set(cls.imp)
        prot.inputTruthParticles.setExtended("outputParticles")
        return prot

    def test_modes_are_the_programs(self):
        from polishplugin.core.refine.loop import MODES as ENGINE_MODES
        self.assertEqual(MODES, ENGINE_MODES)

    def test_outputs(self):
        prot = self.prot
        # final map with its half maps; finite, at the particles' pixel size, closer to the
        # truth than the starting map at the resolutions refinement adds
        vol = prot.outputVolume
        self.assertAlmostEqual(vol.getSamplingRate(), PX)
        halves = vol.getHalfMaps().split(",")
        self.assertEqual(len(halves), 2)
        from polishplugin.core.fourier import fsc
        final = read_mrc(vol.getFileName())[0]
        self.assertTrue(np.all(np.isfinite(final)) and final.std() > 0)
        for h in halves:
            self.assertEqual(read_mrc(h)[0].shape, (N, N, N))
        # the half maps are the unregularised ones the reported FSC is computed from (not the
        # regularised half<h>.mrc): fsc.star's unmasked and masked FSC are theirs
        self.assertEqual([os.path.basename(h) for h in halves],
                         ["half1_unregularised.mrc", "half2_unregularised.mrc"])
        from polishplugin.core.masked_fsc import masked_fsc
        from polishplugin.io.star import read_star
        table = read_star(prot._getExtraPath("refine", "fsc.star"))["fsc"]
        ours = masked_fsc(read_mrc(halves[0])[0], read_mrc(halves[1])[0],
                          read_mrc(volume_file(prot.inputMask.get()))[0])
        np.testing.assert_allclose(ours.unmasked, table["rlnFourierShellCorrelationUnmaskedMaps"],
                                   atol=1e-5)
        np.testing.assert_allclose(ours.masked, table["rlnFourierShellCorrelationMaskedMaps"],
                                   atol=1e-5)
        self.assertIn("unregularised", "\n".join(prot.summary()))
        band = slice(int(N * PX / 30.0) + 1, int(N * PX / 12.0) + 1)
        start = lowpass(self.truth, 30.0, PX)
        self.assertGreater(fsc(final, self.truth)[band].mean(), fsc(start, self.truth)[band].mean())
        # FSC object: 1/A up to Nyquist, starting near 1
        x, y = prot.outputFSC.getData()
        self.assertEqual(len(x), N // 2 + 1)
        self.assertAlmostEqual(float(x[-1]), 1.0 / (2 * PX), places=6)
        self.assertGreater(float(y[1]), 0.8)
        res = float(prot.outputFSC.calculateResolution())
        self.assertTrue(2 * PX <= res < 40.0, res)
        self.assertAlmostEqual(res, json.load(open(prot._getExtraPath("refine", "refine.json")))[
            "resolution"], delta=0.1 * res)
        # the mask: relion_postprocess's masked FSC corrected by phase randomisation, a 2nd FSC
        from polishplugin.io.star import read_star
        fsc_star = read_star(prot._getExtraPath("refine", "fsc.star"))
        x2, y2 = prot.outputFSCCorrected.getData()
        np.testing.assert_allclose(x2, x)
        np.testing.assert_allclose(y2, fsc_star["fsc"]["rlnFourierShellCorrelationCorrected"])
        self.assertAlmostEqual(float(prot.outputFSCCorrected.calculateResolution()), float(
            fsc_star["general"]["rlnPpCorrectedResolution"][0]), delta=0.05 * res)
        self.assertIn("Chen2013", prot._citations())
        # lambda followed the resolution (cw-red): between 0 and 1, as the program recorded
        info = json.load(open(prot._getExtraPath("refine", "refine.json")))
        self.assertEqual(info["settings"]["mode"], "cw-red")
        self.assertEqual(len(info["iterations"]), 3)
        self.assertTrue(all(0.0 <= r["lambda"] <= 1.0 for r in info["iterations"]))
        self.assertGreater(info["iterations"][-1]["lambda"], 0.0)
        # the denoiser's input x~ = B/K and output of both halves, as the program wrote them
        for h in (1, 2):
            x = read_mrc(prot._getExtraPath("refine", "half%d_denoiser_input.mrc" % h))[0]
            f = read_mrc(prot._getExtraPath("refine", "half%d_denoised.mrc" % h))[0]
            self.assertEqual(x.shape, (N, N, N))
            self.assertGreater(np.abs(x - f).max(), 1e-3 * np.abs(x).max())
        if MPI:
            with open(prot._getLogsPath("run.stdout")) as fh:
                self.assertIn("mpirun -np 2", fh.read())
        # particles: projection alignment, same ids, CTF and half-sets kept, angles near the truth
        out = prot.outputParticles
        self.assertSetSize(out, COUNT)
        self.assertEqual(out.getAlignment(), "Projection")
        self.assertTrue(out.hasCTF())
        star = read_particles_star(prot._getExtraPath("refine", "particles.star"))[1]
        from polishplugin.core.refine.sampling import angular_distance
        errs = []
        for i, (p, t) in enumerate(zip(out.iterItems(orderBy="id"),
                                       self.imp.outputParticles.iterItems(orderBy="id"))):
            self.assertEqual(p.getObjId(), t.getObjId())
            self.assertEqual(p.getCTF().getDefocusU(), t.getCTF().getDefocusU())
            self.assertEqual(p._rlnRandomSubset.get(), t._rlnRandomSubset.get())
            angles, origin = matrix_to_relion(p.getTransform().getMatrix(), PX)
            # the Transform holds what the program wrote (origins in A -> pixels and back)
            got = [float(star[k][i]) for k in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
            self.assertTrue(np.allclose(relion_rotation(angles), relion_rotation(got), atol=1e-5))
            np.testing.assert_allclose(origin, [star["rlnOriginXAngst"][i],
                                                star["rlnOriginYAngst"][i]], atol=1e-4)
            true_angles = matrix_to_relion(t.getTransform().getMatrix(), PX)[0]
            errs.append(angular_distance(np.deg2rad(angles), np.deg2rad(true_angles)))
        # refined (random orientations: median ~126 deg), not the input's copied
        self.assertTrue(1e-3 < np.median(errs) < 30.0, np.median(errs))
        self.assertIn("resolution", "\n".join(prot.summary()))
        # the summary's masked resolution is the program's (as its log and the FSC figure)
        self.assertIn("masked, corrected FSC 0.143: %.2f A" % float(
            fsc_star["general"]["rlnPpCorrectedResolution"][0]), prot.summary())

    def test_continue_resumes_after_the_last_finished_iteration(self):
        """The run interrupted after iteration 2 (iteration 3's state gone, the last two steps
        unfinished) and continued in Scipion: the program picks up after iteration 2 and ends
        where the uninterrupted run ended."""
        from pyworkflow.protocol.constants import STATUS_FAILED
        prot = self.prot
        refine_dir = prot._getExtraPath("refine")
        before = read_mrc(os.path.join(refine_dir, "map.mrc"))[0]
        os.remove(os.path.join(refine_dir, "state", "iter_003.npz"))

        from pyworkflow.protocol.protocol import StepSet
        steps = StepSet(filename=prot.getStepsFile())
        for step in [st.clone() for st in steps]:  # (updating while iterating ends the loop)
            if step.funcName.get() in ("refineStep", "createOutputStep"):
                step.setStatus(STATUS_FAILED)
                steps.update(step)
        steps.write()
        steps.close()
        self.assertEqual([st.getStatus() for st in prot.loadSteps()],
                         ["finished", "failed", "failed"])
        self._launch(prot)
        log = "".join(open(path).read() for path in prot.getLogPaths()[:2])  # stdout, stderr
        self.assertIn("resuming after iteration 2", log)
        info = json.load(open(os.path.join(refine_dir, "refine.json")))
        self.assertEqual([r["iteration"] for r in info["iterations"]], [1, 2, 3])
        after = read_mrc(os.path.join(refine_dir, "map.mrc"))[0]
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6 * np.abs(before).max())
        self.assertSetSize(prot.outputParticles, COUNT)

    def test_viewer_renders_headless(self):
        import matplotlib.image
        from polishplugin.viewers import ProtPolishRefineViewer
        viewer = ProtPolishRefineViewer(project=self.proj, protocol=self.prot)
        viewer.setProtocol(self.prot)
        for key, show in viewer._getVisualizeDict().items():
            (view,) = show()
            path = self.proj.getTmpPath("refine_%s.png" % key)
            view.savefig(path)
            view.close()
            img = matplotlib.image.imread(path)
            self.assertGreater(float(img[..., :3].std()), 0.02, key)
            if key == "showFsc":     # the run has a mask: the masked and corrected curves too
                labels = [t.get_text() for t in view.getFigure().axes[0].get_legend().get_texts()]
                self.assertTrue(any(t.startswith("masked, corrected (0.143") for t in labels))
        # the angular errors it plots: refined vs true poses of the same particles
        errs = __import__("polishplugin.figures.jobs", fromlist=["x"]).refine_angular_errors(
            self.prot._getExtraPath("refine"), viewer.trueAngles(self.imp.outputParticles))
        self.assertEqual(len(errs), COUNT)
        self.assertLess(np.median(errs), 30.0)

    def test_validate_refuses_what_the_program_would(self):
        prot = self._refine(start="other", **REFINE)
        errors = "\n".join(prot.validate())
        self.assertIn("Pixel sizes differ: starting map 10.0000 A, particles 5.0000 A", errors)
        self.assertIn("Starting map is 20 x 20 x 20, the particles' box is 24", errors)
        self.assertEqual(self._refine(**REFINE).validate(), [])
        # particles without CTF, all in half-set 1 (a 10-particle import of the same stack)
        from pwem.protocols import ProtImportParticles
        from pwem.objects import SetOfParticles
        from polishplugin.io.convert import tables_to_particles
        folder = os.path.abspath(self.proj.getTmpPath("sim"))
        optics, table = read_particles_star(os.path.join(folder, "particles.star"))
        table = table.take(np.arange(10))
        for label in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"):
            del table[label]
        table["rlnRandomSubset"] = np.ones(10, int)
        sqlite = os.path.join(folder, "no_ctf.sqlite")
        parts = SetOfParticles(filename=sqlite)
        tables_to_particles(optics, table, parts, root=folder)
        parts.write()
        parts.close()
        imp = self.newProtocol(ProtImportParticles, sqliteFile=sqlite, samplingRate=PX,
                               importFrom=ProtImportParticles.IMPORT_FROM_SCIPION)
        self.launchProtocol(imp)
        prot = self._refine(**REFINE)
        prot.inputParticles.set(imp)
        prot.inputParticles.setExtended("outputParticles")
        errors = "\n".join(prot.validate())
        self.assertIn("The particles have no CTF", errors)
        self.assertIn("half-sets (_rlnRandomSubset) are [1]", errors)
        bad = self._refine(**dict(REFINE, cwLow=5.0, healpixOrder=3))
        errors = "\n".join(bad.validate())
        self.assertIn("CW-RED", errors)
        self.assertIn("HEALPix order", errors)
        # the U-Net weights named in the form reach the program, a missing file is refused
        unet = dict(REFINE, denoiser=DENOISERS.index("unet"))
        weights = os.path.abspath(self.proj.getTmpPath("my unet.npz"))
        open(weights, "wb").close()
        prot = self._refine(**dict(unet, unetWeights=weights))
        self.assertEqual(prot.validate(), [])
        self.assertIn("--denoiser unet --unet-weights '%s'" % weights, prot._programArgs())
        self.assertNotIn("--unet-weights", self._refine(**unet)._programArgs())
        self.assertIn("--unet-tta 8", self._refine(**unet)._programArgs())
        self.assertIn("--unet-tta 1", self._refine(**dict(unet, unetTta=0))._programArgs())
        self.assertNotIn("--unet-tta", self._refine(**REFINE)._programArgs())
        # the form's default denoiser: the U-Net where torch is installed, else TV
        self.assertEqual(DENOISERS[ProtPolishRefine().denoiser.get()],
                         "unet" if importlib.util.find_spec("torch") else "tv")
        # the per-shell weighting of the prior mean: final by default, each choice passed on
        from polishplugin.core.refine.confidence import CW_SHELLS
        self.assertIn("--cw-shells final", self._refine(**REFINE)._programArgs())
        self.assertIn("--cw-shells none", self._refine(
            **dict(REFINE, cwShells=CW_SHELLS.index("none")))._programArgs())
        missing = self._refine(**dict(unet, unetWeights=weights + ".gone"))
        self.assertIn("U-Net weights file not found", "\n".join(missing.validate()))

    def test_program_error_is_the_protocol_error(self):
        """A refusal only the program sees (mask values outside [0, 1]) reaches the protocol's
        error message as the program's one line."""
        from pwem.protocols import ProtImportMask
        path = os.path.abspath(self.proj.getTmpPath("bad_mask.mrc"))
        write_mrc(path, 2.0 * np.ones((N,) * 3, np.float32), PX)
        mask = self.newProtocol(ProtImportMask, maskPath=path, samplingRate=PX)
        self.launchProtocol(mask)
        prot = self._refine(**REFINE)
        prot.inputMask.set(mask)
        prot.inputMask.setExtended("outputMask")
        self.assertEqual(prot.validate(), [])
        self.proj.launchProtocol(prot, wait=True)
        self.assertTrue(prot.isFailed())
        self.assertIn("refine failed: bad input: ", prot.getErrorMessage())
        self.assertIn("mask values must be finite and within [0, 1]", prot.getErrorMessage())

    @needs_relion_plugin
    def test_relion_refine_takes_the_refined_particles(self):
        """RELION's 3D auto-refine form accepts our output and its convert step writes our
        angles, origins, half-sets and CTF."""
        check_relion_refine_takes(self, self.prot, self.prot)
