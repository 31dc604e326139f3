"""Workflow with other groups' plugins (scipion-em-relion, its binaries absent), from imports as
a facility user would start: a simulated RELION project's files imported (movies with their
MotionCorr alignment by our import, particles by pwem's import through scipion-em-relion's
reader, the refinement's map with half maps and the mask by pwem's imports) -> our training ->
polishing with the trained sigmas -> B-factor weighting; RELION's 3D auto-refine form accepts our
shiny particles (validate: only the missing RELION installation is reported) and its convert step
writes them with CTF, angles, origins, half-sets and pixel size intact; the viewers of each of
our protocols render headless from that project."""
import os

from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.programs.simulate import LAYOUT
from polishplugin.protocols import (ProtPolishBayesian, ProtPolishBFactors,
                                    ProtPolishImportMovies, ProtPolishSimulate, ProtPolishTrain)
from polishplugin.tests.relion_form import check_relion_refine_takes, needs_relion_plugin

SIM = dict(numberOfMicrographs=3, micrographSize=320, numberOfFrames=8, particlesPerMicrograph=6,
           boxSize=48, pixelSize=1.5, snr=0.5, seed=7)


@needs_relion_plugin
class TestWorkflowWithRelion(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sim = cls.newProtocol(ProtPolishSimulate, **SIM)
        cls.launchProtocol(cls.sim)
        cls.imports = cls._imports()
        cls.train = cls.newProtocol(ProtPolishTrain, minParticles=10, restarts=2,
                                    evalMaxRes=7.0)  # the default method: evidence
        cls.polish = cls.newProtocol(ProtPolishBayesian, doShiny=False)
        for prot in (cls.train, cls.polish):
            for name, (src, out) in cls.imports.items():
                getattr(prot, name).set(src)
                getattr(prot, name).setExtended(out)
        cls.launchProtocol(cls.train)
        cls.polish.inputTraining.set(cls.train)
        cls.launchProtocol(cls.polish)
        cls.bfac = cls.newProtocol(ProtPolishBFactors)
        cls.bfac.inputPolish.set(cls.polish)
        cls.launchProtocol(cls.bfac)

    @classmethod
    def _imports(cls):
        """The simulated RELION project's files through import protocols: {input: (protocol,
        output)}."""
        from pwem.protocols import ProtImportMask, ProtImportParticles, ProtImportVolumes
        f = {k: os.path.abspath(cls.sim._getExtraPath(v)) for k, v in LAYOUT.items()}
        movies = cls.newProtocol(ProtPolishImportMovies, starFile=f["mics"])
        parts = cls.newProtocol(ProtImportParticles,
                                importFrom=ProtImportParticles.IMPORT_FROM_RELION,
                                starFile=f["particles"], samplingRate=1.5)
        vol = cls.newProtocol(ProtImportVolumes, filesPath=f["reference"], samplingRate=1.5,
                              setHalfMaps=True, half1map=f["half1"], half2map=f["half2"])
        mask = cls.newProtocol(ProtImportMask, maskPath=f["mask"], samplingRate=1.5)
        for prot in (movies, parts, vol, mask):
            cls.launchProtocol(prot)
        return {"inputMovies": (movies, "outputMovies"),
                "inputParticles": (parts, "outputParticles"),
                "inputVolume": (vol, "outputVolume"), "inputMask": (mask, "outputMask")}

    def test_imported_inputs_carry_what_polishing_needs(self):
        """The particles pwem/RELION imported keep micrograph names, half-sets and alignment;
        polishing tracked every one of them."""
        parts = self.imports["inputParticles"][0].outputParticles
        self.assertSetSize(parts, 18)
        self.assertEqual(sorted({p._rlnRandomSubset.get() for p in parts}), [1, 2])
        self.assertSetSize(self.polish.outputParticles, 18)
        self.assertEqual(self.polish.validate(), [])

    def test_relion_refine_accepts_shiny_particles(self):
        self.assertSetSize(self.bfac.outputParticles, 18)
        vol = self.imports["inputVolume"][0]
        optics, parts = check_relion_refine_takes(self, self.bfac, vol)
        self.assertEqual(int(optics["rlnImageSize"][0]), 48)
        self.assertTrue(all("shiny" in str(n) for n in parts["rlnImageName"]))

    def test_viewers_render_headless(self):
        import matplotlib.image
        from pyworkflow.viewer import MessageView
        from polishplugin import viewers
        for prot, viewer_class in ((self.sim, viewers.ProtPolishSimulateViewer),
                                   (self.train, viewers.ProtPolishTrainViewer),
                                   (self.polish, viewers.ProtPolishBayesianViewer),
                                   (self.bfac, viewers.ProtPolishBFactorsViewer)):
            viewer = viewer_class(project=self.proj, protocol=prot)
            viewer.setProtocol(prot)
            for key, show in viewer._getVisualizeDict().items():
                views = show()
                optional = key == "showFsc" or (prot is self.polish and key != "showTracks")
                if optional and not views:  # no reconstruction / no shiny step in this run
                    continue
                self.assertTrue(views, "%s %s shows nothing" % (viewer_class.__name__, key))
                if isinstance(views[0], MessageView):  # TCC entries of an evidence training
                    self.assertTrue(prot is self.train and key != "showOptima", key)
                    continue
                for j, view in enumerate(views):
                    path = self.proj.getTmpPath("%s_%s_%d.png" % (viewer_class.__name__, key, j))
                    view.savefig(path)
                    view.close()
                    img = matplotlib.image.imread(path)
                    self.assertGreater(float(img[..., :3].std()), 0.02, (viewer_class, key))

