"""Headless streaming test: a simulated acquisition grows open sets of movies and particles
while ProtPolishStreaming runs; each particle is polished exactly once (a particle arriving after
its micrograph was polished in a late pass of its own), the output grows while the stream is
open, the running B-factor table is fitted on the first micrograph and refitted when the next is
polished, a corrupt movie is listed and skipped, and the protocol finishes when the inputs
close."""
import collections
import json
import os
import time

import numpy as np
from pyworkflow.object import Set
from pyworkflow.protocol import STATUS_FINISHED
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.io.star import read_star, read_tracks_star
from polishplugin.protocols import ProtPolishBayesian, ProtPolishSimulate, ProtPolishStreaming
from polishplugin.protocols.protocol_base import link_inputs

SIM = dict(numberOfMicrographs=2, micrographSize=384, numberOfFrames=8, particlesPerMicrograph=6,
           boxSize=48, pixelSize=1.5, snr=0.2, sigmaVel=0.8, stageDrift=8.0, seed=5,
           writeTiff=False)
TIMEOUT = 600


class TestProtPolishStreaming(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sim = cls.newProtocol(ProtPolishSimulate, **SIM)
        cls.launchProtocol(cls.sim)
        # an earlier, non-streaming run whose B-factor table weights the stream's frames
        cls.batch = cls.newProtocol(ProtPolishBayesian, sigmaVel=0.8, sigmaDiv=5000, sigmaAcc=2)
        link_inputs(cls.batch, cls.sim)
        cls.launchProtocol(cls.batch)

    def _link(self, prot, acq):
        """Inputs of ``prot``: the acquisition's movies and particles, the simulation's volume
        and mask."""
        link_inputs(prot, acq, ("Movies", "Particles"))
        link_inputs(prot, self.sim, ("Volume", "Mask"))

    def _acquisition(self, first_movies, first_parts):
        """A finished record of pwem's ProtAlignMovies whose outputs, open sets of movies (with
        alignment) and particles starting with the given items, this test grows as an
        acquisition would."""
        from pwem.protocols import ProtAlignMovies
        prot = self.newProtocol(ProtAlignMovies)
        self.proj.saveProtocol(prot)
        os.makedirs(prot._getPath(), exist_ok=True)
        movies, parts = prot._createSetOfMovies(), prot._createSetOfParticles()
        movies.copyInfo(self.sim.outputMovies)
        parts.copyInfo(self.sim.outputParticles)
        for s, items in ((movies, first_movies), (parts, first_parts)):
            for item in items:
                s.append(item)
            s.setStreamState(Set.STREAM_OPEN)
            s.write()
        prot._defineOutputs(outputMovies=movies, outputParticles=parts)
        prot.setStatus(STATUS_FINISHED)
        self.proj._storeProtocol(prot)
        return prot

    @staticmethod
    def _grow(set_, items, close=False):
        s = type(set_)(filename=set_.getFileName())
        s.loadAllProperties()
        s.enableAppend()
        for item in items:
            item.setObjId(None)
            s.append(item)
        s.setStreamState(Set.STREAM_CLOSED if close else Set.STREAM_OPEN)
        s.write()
        s.close()

    def _mic_items(self, index, corrupt=None):
        """The movie of simulated micrograph ``index`` and its particles; ``corrupt``: a
        truncated copy of the movie under that name instead."""
        from polishplugin.io.convert import mic_key
        movie = [m.clone() for m in self.sim.outputMovies.iterItems(orderBy="id")][index]
        name = os.path.basename(movie.getFileName())
        parts = [p.clone() for p in self.sim.outputParticles.iterItems(orderBy="id")
                 if mic_key(p.getCoordinate().getMicName()) == mic_key(name)]
        assert len(parts) == 6
        if corrupt:
            path = os.path.abspath(self.proj.getTmpPath(corrupt))
            with open(movie.getFileName(), "rb") as src, open(path, "wb") as dst:
                dst.write(src.read()[:1024 + 384 * 384 * 4 * 2])  # header + 2 of 8 frames
            movie.setFileName(path)
            name = corrupt
            for p in parts:
                p.getCoordinate().setMicName(corrupt)
        movie.setMicName(name)
        return [movie], parts

    def _output(self, prot):
        from pwem.objects import SetOfParticles
        path = prot._getPath("particles.sqlite")
        if not os.path.exists(path):
            return 0, True
        s = SetOfParticles(filename=path)
        s.loadAllProperties()
        size, is_open = s.getSize(), s.isStreamOpen()
        s.close()
        return size, is_open

    def test_stream(self):
        movie0, parts0 = self._mic_items(0)
        acq = self._acquisition(movie0, parts0[:5])  # the 6th particle comes late
        prot = self.newProtocol(ProtPolishStreaming, sigmaVel=0.8, sigmaDiv=5000, sigmaAcc=2,
                                numberOfThreads=3, streamingSleepOnWait=1,
                                bfactorSource=2, bfacFirst=1, bfacEvery=1)
        self._link(prot, acq)
        self.proj.launchProtocol(prot, wait=False)

        t0 = time.time()
        while self._output(prot)[0] < 5:  # the first micrograph while the stream is open
            self.assertLess(time.time() - t0, TIMEOUT, "no output while the stream is open")
            self.proj._updateProtocol(prot)
            self.assertFalse(prot.isFailed(), prot.getErrorMessage())
            time.sleep(2)
        self.assertEqual(self._output(prot), (5, True))

        self._grow(acq.outputParticles, parts0[5:])  # after its micrograph was polished
        for items in (self._mic_items(1), self._mic_items(0, corrupt="corrupt_0002.mrc")):
            self._grow(acq.outputMovies, items[0])
            self._grow(acq.outputParticles, items[1])
        orphan = self._mic_items(0)[1][0]  # a particle whose movie never comes
        orphan.getCoordinate().setMicName("never_0003.mrc")
        self._grow(acq.outputParticles, [orphan])
        self._grow(acq.outputMovies, [], close=True)
        self._grow(acq.outputParticles, [], close=True)

        while not (prot.isFinished() or prot.isFailed()):
            self.assertLess(time.time() - t0, TIMEOUT, "the protocol did not finish")
            time.sleep(2)
            self.proj._updateProtocol(prot)
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertEqual(self._output(prot), (12, False))
        tracks = [read_tracks_star(p._polishTracks.get())[p._polishTrackIndex.get()]
                  for p in prot.outputParticles]
        self.assertTrue(all(t.shape == (8, 2) and np.all(np.isfinite(t)) for t in tracks))
        self.assertEqual({os.path.basename(p._polishTracks.get()) for p in prot.outputParticles},
                         {"sim_0000_tracks.star", "sim_0001_tracks.star"})
        # every particle once: the input's (micrograph, position), none twice, none lost
        from polishplugin.io.convert import mic_key

        def where(p):
            c = p.getCoordinate()
            return mic_key(c.getMicName()), c.getX(), c.getY()
        expected = sorted(where(p) for p in self.sim.outputParticles)
        self.assertEqual(sorted(where(p) for p in prot.outputParticles), expected)
        passes = {}
        for key in os.listdir(prot._getExtraPath("stream")):
            with open(prot._getExtraPath("stream", key, "pass.json")) as fh:
                info = json.load(fh)
            passes.setdefault(mic_key(info["micrograph"]), []).append(
                info["particles"])
        names = [mic_key(m.getFileName()) for m in self.sim.outputMovies]
        self.assertEqual(sorted(passes), sorted(names + ["corrupt_0002"]))
        self.assertEqual(sorted(len(p) for p in passes[names[0]]), [1, 5])  # a late pass
        self.assertEqual([len(p) for p in passes[names[1]]], [6])
        ids = [i for mic in passes.values() for p in mic for i in p]
        self.assertEqual(len(ids), len(set(ids)))
        # running B-factor table: fitted on the first micrograph, refitted on both when the
        # second was polished; shiny images, each particle naming its table
        from polishplugin.io.mrc import read_mrc
        tables = {}
        for p in prot.outputParticles:
            self.assertTrue(p.getFileName().endswith("_shiny.mrcs"), p.getFileName())
            stack = read_mrc(p.getFileName())[0]  # one image (a late pass): 2D
            image = stack.reshape(-1, *stack.shape[-2:])[p.getIndex() - 1]
            self.assertEqual(image.shape, (48, 48))
            self.assertTrue(np.isfinite(image).all() and image.std() > 0)
            table = os.path.relpath(p._polishBfactorTable.get(), prot._getExtraPath())
            tables.setdefault(where(p)[0], set()).add(table)
        fit = "bfactor_tables/%03d/fit/bfactors.star"
        self.assertEqual(tables[names[1]], {fit % 2})
        self.assertIn(fit % 1, tables[names[0]])
        for version, n in ((1, 1), (2, 2)):
            with open(prot._getExtraPath("bfactor_tables", "%03d" % version,
                                         "polish_folders.txt")) as fh:
                self.assertEqual(len(fh.read().split()), n)
        b1, b2 = (read_star(prot._getExtraPath(fit % v))["perframe_bfactors"]
                  ["rlnBfactorUsedForSharpening"] for v in (1, 2))
        self.assertEqual(len(b1), 8)
        self.assertFalse(np.allclose(np.asarray(b1, float), np.asarray(b2, float)))
        self.assertIn("2 fit(s), the last on 2 micrographs", "\n".join(prot.summary()))
        # this run's newest table as another stream's fixed one
        other = self.newProtocol(ProtPolishStreaming, bfactorSource=1)
        other.inputBfactors.set(prot)
        self.assertEqual(other._bfactorsTable(), prot._getExtraPath(fit % 2))
        other.inputBfactors.set(self.newProtocol(ProtPolishStreaming))  # no table yet
        self.assertIn("has no B-factor table", "\n".join(other.validate()))
        with open(prot._getExtraPath("failed_micrographs.txt")) as fh:
            failed = fh.read().splitlines()
        self.assertEqual(len(failed), 1)
        self.assertTrue(failed[0].startswith("corrupt_0002\t"), failed)
        with open(prot._getExtraPath("unmatched_particles.txt")) as fh:
            unmatched = fh.read().splitlines()
        self.assertEqual(len(unmatched), 1)
        self.assertIn("micName never_0003.mrc", unmatched[0])
        self.assertIn("1 particles never met their movie", "\n".join(prot.summary()))
        steps = collections.Counter(json.loads(s.argsStr.get())[0] for s in prot.loadSteps()
                                    if s.funcName.get() == "polishMicrographStep")
        self.assertEqual(set(steps.values()), {1})  # one step per pass
        self.assertEqual(len(steps), 4)

        # the polishing viewer browses the micrographs polished in streaming
        import matplotlib.image
        from polishplugin.viewers import ProtPolishBayesianViewer
        viewer = ProtPolishBayesianViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        self.assertEqual(len(viewer._micrographs()), 3)  # 2 micrographs, one late pass
        viewer.micrograph.set(3)
        for name, show in (("tracks", lambda: viewer.showEntry("showTracks")),
                           ("fcc", lambda: viewer.showEntry("showFcc"))):  # newest table
            (view,) = show()
            path = self.proj.getTmpPath("stream_%s.png" % name)
            view.savefig(path)
            view.close()
            self.assertGreater(float(matplotlib.image.imread(path)[..., :3].std()), 0.02)

    def test_training_on_the_first_particles(self):
        """Sigmas trained on the micrographs of the first 10 particles, then every micrograph
        polished with them and weighted with the fixed B-factor table of an earlier run (inputs
        already closed: the whole acquisition is in)."""
        (m0, p0), (m1, p1) = self._mic_items(0), self._mic_items(1)
        acq = self._acquisition(m0 + m1, p0 + p1)
        self._grow(acq.outputMovies, [], close=True)
        self._grow(acq.outputParticles, [], close=True)
        prot = self.newProtocol(ProtPolishStreaming, numberOfThreads=3, streamingSleepOnWait=1,
                                trainFirst=10, trainRestarts=2,
                                trainEvalMaxRes=7.0, bfactorSource=1)
        prot.inputBfactors.set(self.batch)
        self._link(prot, acq)
        self.launchProtocol(prot)
        self.assertSetSize(prot.outputParticles, 12)
        with open(prot._getExtraPath("stream_train", "train", "opt_params_all_groups.txt")) as fh:
            trained = [float(v) for v in fh.read().split()[:3]]
        with open(prot._getExtraPath("stream_train", "train", "train.json")) as fh:
            self.assertEqual(json.load(fh)["method"], "evidence")   # the program's default
        diags = [os.path.join(root, f) for root, _, files in
                 os.walk(prot._getExtraPath("stream")) for f in files
                 if f.endswith(".json") and "diag" in root.split(os.sep)]
        self.assertEqual(len(diags), 2)
        for path in diags:
            with open(path) as fh:
                self.assertTrue(np.allclose(json.load(fh)["sigmas"][:3], trained, rtol=1e-6))
        steps = collections.Counter(s.funcName.get() for s in prot.loadSteps())
        self.assertEqual((steps["trainStreamStep"], steps["polishMicrographStep"]), (1, 2))
        table = os.path.abspath(self.batch._getExtraPath("shiny", "bfactors.star"))
        for p in prot.outputParticles:
            self.assertEqual(p._polishBfactorTable.get(), table)
            self.assertTrue(p.getFileName().endswith("_shiny.mrcs"), p.getFileName())
