"""Headless Scipion test of ProtPolishTrain on a small simulated set: the simulate protocol feeding
the training protocol (both methods); the sigma outputs checked against the params file and the
run's report, the viewer's figures rendered headless."""
import json
import os

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.core.motion.training import parse_opt_params
from polishplugin.protocols import ProtPolishSimulate, ProtPolishTrain
from polishplugin.protocols.protocol_base import link_inputs

SIM = dict(numberOfMicrographs=3, micrographSize=320, numberOfFrames=8,
           particlesPerMicrograph=6, boxSize=48, pixelSize=1.5, snr=0.5, seed=7)


class TestProtPolishTrain(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sim = cls.newProtocol(ProtPolishSimulate, **SIM)
        cls.launchProtocol(cls.sim)

    def _train(self, **kwargs):
        kw = dict(minParticles=10, restarts=2, evalMaxRes=7.0, maxEvals=20)
        kw.update(kwargs)
        prot = self.newProtocol(ProtPolishTrain, **kw)
        link_inputs(prot, self.sim)
        return prot

    def _render(self, view, name):
        """Save a viewer's figure as PNG; the image's pixel spread (0: blank)."""
        import matplotlib.image
        png = os.path.join(self.proj.getTmpPath(), name + ".png")
        view.savefig(png)
        view.close()
        return float(matplotlib.image.imread(png)[..., :3].std())

    def test_evidence_is_the_default_outputs_and_viewer(self):
        prot = self._train()
        self.assertEqual(prot.getMethod(), "evidence")
        self.assertIn("--method evidence", prot._programArgs())
        self.launchProtocol(prot)
        with open(prot._getExtraPath("train", "train.json")) as fh:
            report = json.load(fh)
        self.assertEqual(report["method"], "evidence")
        sigmas = (prot.sigmaVel.get(), prot.sigmaDiv.get(), prot.sigmaAcc.get())
        np.testing.assert_allclose(sigmas, report["sigmas"], rtol=1e-6)
        with open(prot.optParamsFile.get()) as fh:
            np.testing.assert_allclose(parse_opt_params(fh.read()), sigmas, rtol=1e-5)
        optima = np.array([r["sigmas"] for r in report["restarts"]])
        np.testing.assert_allclose(sigmas, np.exp(np.log(optima).mean(axis=0)), rtol=1e-5)
        spread = [float(v) for v in prot.sigmaSpread.get().split(",")]
        np.testing.assert_allclose(spread, optima.max(0) / optima.min(0), rtol=1e-6)
        widths = [w for r in report["restarts"] for w in r["evidence_spread"]]
        self.assertTrue(all(w is None or w >= 1.0 for w in widths), widths)
        self.assertIn("evidence method", "\n".join(prot.summary()))
        self.assertIn("marginal likelihood", "\n".join(prot.getParsedMethods()))
        self.assertFalse(os.path.exists(prot._getExtraPath("train", "trace.star")))

        from pyworkflow.viewer import MessageView
        from polishplugin.viewers import ProtPolishTrainViewer
        viewer = ProtPolishTrainViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        views = viewer._getVisualizeDict()
        (view,) = views["showOptima"]()
        # the figure shows the restarts' optima with their Laplace widths
        ax = view.getFigure().axes[0]
        ys = sorted(y for line in ax.get_lines() for y in np.atleast_1d(line.get_ydata())
                    if np.isfinite(y))
        for v in optima[:, 0]:
            self.assertTrue(any(abs(y - v) <= 1e-6 * v for y in ys), (v, ys))
        self.assertIn("Marginal-likelihood optimum", view.getFigure()._suptitle.get_text())
        self.assertGreater(self._render(view, "evidence_optima"), 0.02)
        for key in ("showTcc", "showPath", "showSlices"):   # no TCC: a message, no figure
            (msg,) = views[key]()
            self.assertIsInstance(msg, MessageView)
            self.assertIn("evidence", msg.getMessage())

    def test_train_outputs_and_viewer(self):
        prot = self._train(method=1)   # tcc
        self.assertIn("--method tcc", prot._programArgs())
        self.launchProtocol(prot)
        sigmas = (prot.sigmaVel.get(), prot.sigmaDiv.get(), prot.sigmaAcc.get())
        self.assertTrue(all(np.isfinite(sigmas)) and min(sigmas) > 0, sigmas)
        path = prot.optParamsFile.get()
        self.assertEqual(os.path.abspath(path), os.path.abspath(prot.getOptParamsFile()))
        with open(path) as fh:
            np.testing.assert_allclose(parse_opt_params(fh.read()), sigmas, rtol=1e-5)
        with open(prot._getExtraPath("train", "train.json")) as fh:
            report = json.load(fh)
        self.assertEqual((len(report["restarts"]), report["method"]), (2, "tcc"))
        spread = [float(v) for v in prot.sigmaSpread.get().split(",")]
        np.testing.assert_allclose(spread, report["spread"], rtol=1e-6)
        self.assertTrue(all(v >= 1.0 for v in spread))
        self.assertIn("Trained sigmas", "\n".join(prot.summary()))

        from polishplugin.viewers import ProtPolishTrainViewer
        viewer = ProtPolishTrainViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        for key in ("showTcc", "showPath", "showSlices", "showOptima"):
            (view,) = viewer._getVisualizeDict()[key]()
            self.assertGreater(self._render(view, key), 0.02, key)

        # the polishing protocol takes the trained sigmas directly
        from polishplugin.protocols import ProtPolishBayesian
        polish = self.newProtocol(ProtPolishBayesian, doShiny=False)
        link_inputs(polish, self.sim)
        polish.inputTraining.set(prot)
        self.assertIn("--params-file %s" % os.path.abspath(path), polish._programArgs())
        self.launchProtocol(polish)
        diag_dir = polish._getExtraPath("polish", "diag")
        diag = next(os.path.join(r, f) for r, _, fs in os.walk(diag_dir) for f in fs
                    if f.endswith(".json"))
        with open(diag) as fh:
            np.testing.assert_allclose(json.load(fh)["sigmas"], sigmas, rtol=1e-4)
        self.assertIn("sigmas trained: vel", "\n".join(polish.getParsedMethods()))

    def test_validate_rejects_missing_half_maps_and_too_few_particles(self):
        prot = self._train(minParticles=1000, maxEd=0)
        prot.inputVolume.setExtended("outputTruthVolume")  # a volume without half maps
        errors = "\n".join(prot.validate())
        self.assertIn("no half maps", errors)
        self.assertIn("fewer than the 1000", errors)
        self.assertIn("Max eigendeformations must be -1 (all) or at least 1", errors)
        self.assertIn("--max-ed -1", self._train()._programArgs())
