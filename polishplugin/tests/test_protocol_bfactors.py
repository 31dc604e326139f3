"""Headless Scipion test of ProtPolishBFactors: simulate -> Bayesian polishing -> B-factor
weighting on a tiny set; the shiny particles keep the input's alignment and CTF."""
import os

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.io.mrc import read_mrc, read_mrc_header
from polishplugin.protocols import ProtPolishBayesian, ProtPolishBFactors, ProtPolishSimulate
from polishplugin.protocols.protocol_base import link_inputs

SIM = dict(numberOfMicrographs=2, micrographSize=256, numberOfFrames=6,
           particlesPerMicrograph=4, boxSize=48, pixelSize=1.5, snr=0.3, hotPixels=2,
           sigmaVel=0.8, stageDrift=6.0, writeTiff=False, seed=11)


class TestProtPolishBFactors(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sim = cls.newProtocol(ProtPolishSimulate, **SIM)
        cls.launchProtocol(cls.sim)
        cls.pol = cls.newProtocol(ProtPolishBayesian, sigmaVel=0.8, sigmaDiv=5000, sigmaAcc=2)
        link_inputs(cls.pol, cls.sim)
        cls.launchProtocol(cls.pol)

    def _bfactors(self, **kwargs):
        prot = self.newProtocol(ProtPolishBFactors, **kwargs)
        prot.inputPolish.set(self.pol)
        return prot

    def test_shiny_particles_keep_alignment_and_ctf(self):
        prot = self._bfactors(rescaledSize=32)
        self.launchProtocol(prot)
        out, inp = prot.outputParticles, self.pol.inputParticles.get()
        self.assertSetSize(out, 8)
        self.assertAlmostEqual(out.getSamplingRate(), 1.5 * 48 / 32)
        originals = {p.getObjId(): p.clone() for p in inp}
        for p in out:
            self.assertTrue(os.path.exists(p.getFileName()))
            self.assertIn("_shiny.mrcs", p.getFileName())
            self.assertEqual(read_mrc_header(p.getFileName()).nx, 32)
            q = originals[p.getObjId()]
            a, b = p.getTransform().getMatrix(), q.getTransform().getMatrix()
            np.testing.assert_allclose(a[:3, :3], b[:3, :3], atol=1e-9)
            np.testing.assert_allclose(a[:3, 3], b[:3, 3] * 32 / 48, atol=1e-9)  # same A shift
            self.assertEqual(p.getCTF().getDefocusU(), q.getCTF().getDefocusU())
            self.assertEqual(p.getCTF().getDefocusAngle(), q.getCTF().getDefocusAngle())
        weights, _ = read_mrc(prot._getExtraPath("bfactors", "weights.mrc"))
        self.assertEqual(weights.shape, (6, 48 // 2 + 1))   # RELION's rings: the particle box
        np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-5)
        self.assertTrue(os.path.exists(prot._getExtraPath("bfactors", "logfile.pdf")))

        from polishplugin.viewers import ProtPolishBFactorsViewer
        viewer = ProtPolishBFactorsViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        for key in ("showFcc", "showBfactors", "showWeights"):
            (view,) = viewer._getVisualizeDict()[key]()
            view.close()

    def test_validate_refuses_a_streaming_run(self):
        from polishplugin.protocols import ProtPolishStreaming
        stream = self.newProtocol(ProtPolishStreaming)
        self.proj.saveProtocol(stream)
        prot = self.newProtocol(ProtPolishBFactors)
        prot.inputPolish.set(stream)
        errors = "\n".join(prot.validate())
        self.assertIn("is a streaming polishing run", errors)
        self.assertIn("running, refitted in the stream", errors)

    def test_validate_rejects_bad_limits(self):
        prot = self._bfactors(bfacMaxRes=30.0, boxSize=15)
        errors = "\n".join(prot.validate())
        self.assertIn("finer", errors)
        self.assertIn("even", errors)
