"""Headless Scipion test of ProtPolishSimulate: a real project, the protocol launched, its
outputs checked for content (sizes, alignment, CTF, half maps, truth on disk)."""
import json
import os

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.io.movies import Movie
from polishplugin.io.mrc import read_mrc
from polishplugin.protocols import ProtPolishSimulate

TINY = dict(numberOfMicrographs=2, micrographSize=384, numberOfFrames=8,
            particlesPerMicrograph=6, boxSize=48, pixelSize=1.5, hotPixels=2)


class TestProtPolishSimulate(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_simulate(self):
        prot = self.newProtocol(ProtPolishSimulate, **TINY)
        self.launchProtocol(prot)
        movies, parts = prot.outputMovies, prot.outputParticles
        self.assertSetSize(movies, 2)
        self.assertSetSize(parts, 12)
        self.assertEqual(parts.getAlignment(), "Projection")
        self.assertTrue(parts.hasCTF())
        self.assertAlmostEqual(parts.getSamplingRate(), 1.5)
        self.assertAlmostEqual(movies.getAcquisition().getDosePerFrame(), 1.25)

        mic_names = {m.getMicName() for m in movies}
        halves = []
        for p in parts:
            self.assertIn(p.getCoordinate().getMicName(), mic_names)
            ctf = p.getCTF()
            self.assertTrue(8000 <= 0.5 * (ctf.getDefocusU() + ctf.getDefocusV()) <= 25000)
            halves.append(int(p._rlnRandomSubset))
            rot = p.getTransform().getMatrix()[:3, :3]
            self.assertTrue(np.allclose(rot @ rot.T, np.eye(3), atol=1e-6))
        self.assertEqual(sorted(set(halves)), [1, 2])

        # the movies are real 8-frame TIFFs with a gain reference; frames carry counts
        movie = movies.getFirstItem()
        xs, ys = movie.getAlignment().getShifts()
        self.assertEqual(len(xs), 8)
        with Movie(movie.getFileName(), gain=movies.getGain()) as mov:
            self.assertEqual((mov.nframes, mov.shape), (8, (384, 384)))
            expected = 1.25 * 1.5 ** 2
            self.assertAlmostEqual(float(np.median(mov.frame(3))), expected, delta=2.0)

        # half maps differ from each other and from the truth, but correlate with it
        h1, h2 = (read_mrc(f)[0] for f in prot.outputVolume.getHalfMaps().split(","))
        truth, _ = read_mrc(prot.outputTruthVolume.getFileName())
        self.assertFalse(np.allclose(h1, h2))
        self.assertGreater(np.corrcoef(h1.ravel(), truth.ravel())[0, 1], 0.5)

        with open(prot._getExtraPath("truth", "truth.json")) as fh:
            truth_info = json.load(fh)
        self.assertEqual(truth_info["sigmas"]["sigma_vel"], 0.5)
        self.assertTrue(os.path.exists(prot._getExtraPath("figures", "sim_0000_tracks.png")))

    def test_viewer_headless(self):
        from pwem import Domain
        from pyworkflow.viewer import DESKTOP_TKINTER
        from polishplugin.viewers import ProtPolishSimulateViewer
        prot = self.newProtocol(ProtPolishSimulate, **dict(TINY, numberOfMicrographs=1))
        self.launchProtocol(prot)
        viewers = Domain.findViewers(prot, DESKTOP_TKINTER)
        self.assertIn(ProtPolishSimulateViewer, viewers)
        viewer = ProtPolishSimulateViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        for key in ("showTracks", "showGlobal", "showVolumes"):
            for i, view in enumerate(viewer.showEntry(key)):
                path = os.path.join(self.proj.getTmpPath(), "%s_%d.png" % (key, i))
                view.savefig(path)
                view.close()
                # a real picture: a PNG of non-trivial size with varied pixels
                import matplotlib.image
                img = matplotlib.image.imread(path)
                self.assertGreater(img.shape[0] * img.shape[1], 100 * 100)
                self.assertGreater(float(img[..., :3].std()), 0.02)
