"""Headless Scipion test of ProtPolishBayesian on a small simulated set: a real project, the
simulate protocol feeding the polishing protocol, the tracks checked against the known truth."""
import os

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.io.star import read_tracks_star
from polishplugin.protocols import ProtPolishBayesian, ProtPolishSimulate
from polishplugin.protocols.protocol_base import link_inputs

SIM = dict(numberOfMicrographs=2, micrographSize=512, numberOfFrames=10,
           particlesPerMicrograph=10, boxSize=64, pixelSize=1.5, snr=0.2, hotPixels=3,
           sigmaVel=0.8, stageDrift=8.0, seed=7)


class TestProtPolishBayesian(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sim = cls.newProtocol(ProtPolishSimulate, **SIM)
        cls.launchProtocol(cls.sim)

    def _polish(self, **kwargs):
        kwargs.setdefault("sigmaSource", 1)     # given below
        prot = self.newProtocol(ProtPolishBayesian, sigmaVel=0.8, sigmaDiv=5000, sigmaAcc=2,
                                **kwargs)
        link_inputs(prot, self.sim)
        return prot

    def test_polish_recovers_motion(self):
        prot = self._polish(numberOfThreads=2)
        self.launchProtocol(prot)
        out = prot.outputParticles
        self.assertSetSize(out, 20)
        self.assertEqual(out.getAlignment(), "Projection")
        # shiny particles by default: new stacks of the input box, alignment and CTF kept
        from polishplugin.io.mrc import read_mrc_header
        first, inp_first = out.getFirstItem(), self.sim.outputParticles.getFirstItem()
        self.assertIn("shiny", first.getFileName())
        self.assertEqual(read_mrc_header(first.getFileName()).nx, 64)
        self.assertTrue(np.allclose(first.getTransform().getMatrix(),
                                    inp_first.getTransform().getMatrix()))
        self.assertEqual(first.getCTF().getDefocusU(), inp_first.getCTF().getDefocusU())
        truth_dir = self.sim._getExtraPath("truth")
        err_map, err_zero = [], []
        for p in out:
            tracks = read_tracks_star(p._polishTracks.get())
            self.assertEqual(tracks.shape[1:], (10, 2))
            mic = os.path.basename(p._polishTracks.get()).replace("_tracks.star", "")
            with np.load(os.path.join(truth_dir, mic + ".npz")) as z:
                row = list(map(tuple, np.rint(z["coords"]).astype(int))).index(
                    (p.getCoordinate().getX(), p.getCoordinate().getY()))
                true = (z["positions"][row] - z["centres"][row]) * 1.5
            est = tracks[p._polishTrackIndex.get()]
            err_map.append(np.sum((est - true) ** 2, axis=1))
            err_zero.append(np.sum(true ** 2, axis=1))
        rms_map = np.sqrt(np.mean(err_map))
        rms_zero = np.sqrt(np.mean(err_zero))
        # the tracks are real estimates: far better than assuming no motion at all
        self.assertLess(rms_map, 0.5 * rms_zero, "MAP %.2f A vs no motion %.2f A" % (rms_map, rms_zero))
        with open(prot._getExtraPath("polish", "failed.txt")) as fh:
            self.assertEqual(fh.read().strip(), "")
        self.assertTrue(os.path.exists(prot._getExtraPath("polish", "logfile.pdf")))
        # the viewer shows the shiny step's FCC fit, B-factors and weights (Fig. 2 a-d)
        import matplotlib.image
        from polishplugin.viewers import ProtPolishBayesianViewer
        viewer = ProtPolishBayesianViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        for key in ("showFcc", "showBfactors", "showWeights"):
            (view,) = viewer._getVisualizeDict()[key]()
            path = os.path.join(self.proj.getTmpPath(), "polish_%s.png" % key)
            view.savefig(path)
            view.close()
            self.assertGreater(float(matplotlib.image.imread(path)[..., :3].std()), 0.02, key)

    def test_spectra_memory_reaches_the_program(self):
        """A small 'Spectra memory' makes the program keep the spectra on scratch disk (its log
        says so) and the tracks stay those of the in-memory run."""
        runs = {}
        for mb in (1, 1000):    # 10 particles x 10 frames: ~1.5 MB of spectra per micrograph
            prot = self._polish(doShiny=False, spectraMemory=mb)
            self.assertIn("--spectra-memory %d" % mb, prot._programArgs())
            self.launchProtocol(prot)
            log = ""
            for path in prot.getLogPaths()[:2]:     # run.stdout, run.stderr (the program's log)
                with open(path) as fh:
                    log += fh.read()
            self.assertEqual("kept on scratch disk" in log, mb == 1, "%d MB" % mb)
            runs[mb] = {os.path.basename(p._polishTracks.get()) + str(p._polishTrackIndex.get()):
                        read_tracks_star(p._polishTracks.get())[p._polishTrackIndex.get()]
                        for p in prot.outputParticles}
            # the scratch files are unlinked: nothing is left in the run's folder
            left = [f for _, _, files in os.walk(prot._getExtraPath()) for f in files
                    if f.endswith(".scratch")]
            self.assertEqual(left, [])
        self.assertEqual(sorted(runs[1]), sorted(runs[1000]))
        self.assertEqual(len(runs[1]), 20)
        for key, track in runs[1000].items():
            np.testing.assert_allclose(runs[1][key], track, atol=1e-3, err_msg=key)

    def test_max_eigendeformations_reach_the_program(self):
        """'Max eigendeformations' 3 of 10 particles: each micrograph's fit has 3 GP dimensions
        (the program's diagnostics); 0 is refused before the run."""
        import glob
        import json
        self.assertIn("must be -1 (all) or at least 1",
                      "\n".join(self._polish(maxEd=0, doShiny=False).validate()))
        prot = self._polish(maxEd=3, doShiny=False)
        self.assertIn("--max-ed 3", prot._programArgs())
        self.launchProtocol(prot)
        self.assertSetSize(prot.outputParticles, 20)
        diags = glob.glob(prot._getExtraPath("polish", "diag", "**", "*.json"), recursive=True)
        self.assertEqual(sorted(json.load(open(d))["gp_dims"] for d in diags), [3, 3])

    def test_validate_rejects_missing_half_maps_and_bad_frames(self):
        prot = self._polish(lastFrame=2)
        prot.inputVolume.set(self.sim)
        prot.inputVolume.setExtended("outputTruthVolume")  # a volume without half maps
        errors = "\n".join(prot.validate())
        self.assertIn("no half maps", errors)
        self.assertIn("at least 3 frames", errors)

    def test_viewer_headless(self):
        import matplotlib.image
        from polishplugin.viewers import ProtPolishBayesianViewer
        prot = self._polish(numberOfMpi=1, doShiny=False, sigmaSource=0)   # from the data
        self.assertNotIn("--sigma-vel", prot._programArgs())
        self.launchProtocol(prot)
        self.assertTrue(os.path.exists(prot._getExtraPath("polish", "sigmas.json")))
        self.assertIn("chosen per micrograph", " ".join(prot._summary()))
        self.assertNotIn("shiny", prot.outputParticles.getFirstItem().getFileName())
        self.assertTrue(prot.outputParticles.getFirstItem()._polishTracks.get().endswith(
            "_tracks.star"))
        viewer = ProtPolishBayesianViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        viewer.micrograph.set(2)
        self.assertEqual(viewer._getVisualizeDict()["showFcc"](), [])  # no shiny step
        (view,) = viewer.showEntry("showTracks")
        path = os.path.join(self.proj.getTmpPath(), "polish_tracks.png")
        view.savefig(path)
        view.close()
        img = matplotlib.image.imread(path)
        self.assertGreater(img.shape[0], 300)
        self.assertGreater(float(img[..., :3].std()), 0.02)
