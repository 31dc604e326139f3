"""Headless Scipion tests of inputs from other protocols: movies imported with a RELION
MotionCorr job's alignment, pwem's own movie import, movie sets laid out as other groups' motion
corrections leave them (micName of the movie file, frames 2-N aligned, binned sampling, aligned
movies), particles matched to movies across naming schemes, and a program's error reaching the
protocol's error message."""
import json
import os

import numpy as np
from pyworkflow.object import String
from pyworkflow.protocol import STATUS_FINISHED
from pyworkflow.tests import BaseTest, setupTestProject

from polishplugin.io.motioncorr import read_micrograph_metadata
from polishplugin.io.star import read_tracks_star
from polishplugin.programs.simulate import LAYOUT
from polishplugin.protocols import (ProtPolishBayesian, ProtPolishImportMovies,
                                    ProtPolishSimulate)
from polishplugin.protocols.protocol_base import link_inputs

SIM = dict(numberOfMicrographs=2, micrographSize=384, numberOfFrames=8, particlesPerMicrograph=6,
           boxSize=48, pixelSize=1.5, snr=0.2, sigmaVel=0.8, stageDrift=8.0, seed=11,
           writeTiff=False)  # MRC movies: their headers hold the frames' pixel size
COEFFS = [0.0] * 36
COEFFS[0], COEFFS[18] = 0.02, -0.01  # terms z of x and y: a uniform drift, px per frame


class TestProtPolishInputs(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.sim = cls.newProtocol(ProtPolishSimulate, **SIM)
        cls.launchProtocol(cls.sim)

    # ------------------------------------------------------------------ helpers
    def _polish(self, movies, movies_attr="outputMovies", **kwargs):
        kwargs.setdefault("doShiny", False)
        prot = self.newProtocol(ProtPolishBayesian, sigmaVel=0.8, sigmaDiv=5000, sigmaAcc=2,
                                **kwargs)
        prot.inputMovies.set(movies)
        prot.inputMovies.setExtended(movies_attr)
        link_inputs(prot, self.sim, ("Particles", "Volume", "Mask"))
        return prot

    def _foreign_movies(self, first=1, sampling_factor=1.0, aligned=False, n_movies=None,
                        gain=None, tiff=False):
        """A finished pwem ProtAlignMovies record whose outputMovies are laid out as
        scipion-em-motioncorr's ProtMotionCorrNewStreaming.createOutputStep leaves them (its
        binaries are absent here): the input movies' info with the binned sampling, micName the
        movie's file name, a MovieAlignment of frames first..N holding those frames' shifts as
        motioncorr's own log parser reads them from a MotionCor2 log (when the plugin is
        installed: the 'test' extra), the gain kept; ``aligned``: the movie saved as aligned
        frames with zero shifts; ``tiff``: the movies as TIFF files (counts)."""
        from pwem.objects import MovieAlignment
        from pwem.protocols import ProtAlignMovies
        prot = self.newProtocol(ProtAlignMovies)
        self.proj.saveProtocol(prot)
        os.makedirs(prot._getPath(), exist_ok=True)
        inp = self.sim.outputMovies
        out = prot._createSetOfMovies()
        out.copyInfo(inp)
        out.setSamplingRate(inp.getSamplingRate() * sampling_factor)
        if gain:
            out.setGain(gain)
        for i, movie in enumerate(inp.iterItems(orderBy="id")):
            if n_movies is not None and i >= n_movies:
                break
            m = movie.clone()
            xs, ys = movie.getAlignment().getShifts()
            n = len(xs)
            xs, ys = _motioncor_log_shifts(prot._getExtraPath("%d-Full.log" % i), first,
                                           xs[first - 1:], ys[first - 1:])
            xs, ys = [0.0] * (first - 1) + xs, [0.0] * (first - 1) + ys
            if aligned:
                m.setFileName(prot._getExtraPath(os.path.basename(movie.getFileName())
                                                 .replace(".mrc", "_aligned_mic_Stk.mrc")))
                xs, ys = [0.0] * n, [0.0] * n
            if tiff:
                from polishplugin.io.movies import Movie, write_movie_tiff
                path = prot._getExtraPath(os.path.basename(movie.getFileName()) + ".tiff")
                with Movie(movie.getFileName()) as mov:
                    frames = np.stack([mov.frame(f) for f in range(mov.nframes)])
                write_movie_tiff(path, np.clip(np.rint(frames), 0, 65535).astype(np.uint16))
                m.setFileName(path)
            m.setMicName(os.path.basename(m.getFileName()))
            # what scipion-em-relion's motion correction adds: local model and hot pixels
            m._rlnMotionModelCoeff = String(json.dumps(COEFFS))
            m._rlnHotPixels = String(json.dumps([[10.0, 20.0], [100.0, 7.0]]))
            m.setAlignment(MovieAlignment(first=first, last=n, xshifts=list(xs[first - 1:]),
                                          yshifts=list(ys[first - 1:])))
            out.append(m)
        prot._defineOutputs(outputMovies=out)
        prot.setStatus(STATUS_FINISHED)
        self.proj._storeProtocol(prot)
        return prot

    def _check_tracks(self, prot, n_particles, n_frames):
        out = prot.outputParticles
        self.assertSetSize(out, n_particles)
        for p in out:
            tracks = read_tracks_star(p._polishTracks.get())
            self.assertEqual(tracks.shape[1:], (n_frames, 2))
            self.assertTrue(np.all(np.isfinite(tracks)))
        with open(prot._getExtraPath("polish", "failed.txt")) as fh:
            self.assertEqual(fh.read().strip(), "")

    # ------------------------------------------------------------------ tests
    def test_import_relion_motioncorr_job_then_polish(self):
        star = self.sim._getExtraPath(LAYOUT["mics"])
        imp = self.newProtocol(ProtPolishImportMovies, starFile=os.path.abspath(star))
        self.launchProtocol(imp)
        movies, sim_movies = imp.outputMovies, self.sim.outputMovies
        self.assertSetSize(movies, 2)
        self.assertAlmostEqual(movies.getSamplingRate(), 1.5)
        self.assertEqual(movies.getAcquisition().getDosePerFrame(),
                         sim_movies.getAcquisition().getDosePerFrame())
        for a, b in zip(movies.iterItems(orderBy="id"), sim_movies.iterItems(orderBy="id")):
            self.assertEqual(os.path.realpath(a.getFileName()), os.path.realpath(b.getFileName()))
            self.assertTrue(np.allclose(a.getAlignment().getShifts(),
                                        b.getAlignment().getShifts()))
        prot = self._polish(imp)
        self.launchProtocol(prot)
        self._check_tracks(prot, 12, 8)
        self._mpi_gives_the_same_tracks(imp, prot)

    def _mpi_gives_the_same_tracks(self, imp, serial):
        """The form's MPI: 2 ranks (micrographs split over them) give the serial tracks."""
        import importlib.util
        from unittest import mock
        from polishplugin.tests.mpi import MPIRUN
        if not os.path.exists(MPIRUN) or importlib.util.find_spec("mpi4py") is None:
            return  # no MPI launcher: the serial run above is all that can be checked
        env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
               "OMPI_MCA_rmaps_base_oversubscribe": "1",
               "PATH": os.path.dirname(MPIRUN) + os.pathsep + os.environ["PATH"]}
        prot = self._polish(imp, numberOfMpi=2)
        with mock.patch.dict(os.environ, env):
            self.launchProtocol(prot)
        with open(prot._getLogsPath("run.stdout")) as fh:
            self.assertIn("mpirun -np 2", fh.read())
        a = {p.getObjId(): read_tracks_star(p._polishTracks.get())[p._polishTrackIndex.get()]
             for p in serial.outputParticles}
        b = {p.getObjId(): read_tracks_star(p._polishTracks.get())[p._polishTrackIndex.get()]
             for p in prot.outputParticles}
        self.assertEqual(sorted(a), sorted(b))
        for k in a:  # equal up to float32 FFT rounding carried by L-BFGS (as the program test)
            self.assertTrue(np.allclose(a[k], b[k], atol=1e-3), (k, np.abs(a[k] - b[k]).max()))

    def test_foreign_alignment_names_frame_subset_binning(self):
        """motioncorr-like movies: micName 'sim_0000.mrc' against the particles'
        'MotionCorr/job002/Movies/sim_0000.mrc', frames 2-8 aligned (7 shifts), sampling
        labelled x2."""
        mc = self._foreign_movies(first=2, sampling_factor=2.0)
        errors = "\n".join(self._polish(mc).validate())
        self.assertIn("alignment starts at frame 2", errors)
        prot = self._polish(mc, firstFrame=2)
        self.assertEqual(prot.validate(), [])
        self.launchProtocol(prot)
        self._check_tracks(prot, 12, 7)
        meta = read_micrograph_metadata(prot._getExtraPath("input", "metadata", "sim_0000.star"))
        self.assertEqual(len(meta.shifts), 8)               # one row per frame of the movie
        self.assertTrue(np.all(np.isnan(meta.shifts[0])))   # frame 1 not aligned: -9999
        xs = list(mc.outputMovies.getFirstItem().getAlignment().getShifts()[0])
        self.assertTrue(np.allclose(meta.shifts[1:, 0], xs))
        self.assertAlmostEqual(float(meta.general["rlnMicrographOriginalPixelSize"]), 1.5)
        self.assertEqual(int(meta.general["rlnMicrographStartFrame"]), 2)
        self.assertEqual(list(meta.frames), list(range(1, 9)))
        self.assertTrue(np.allclose(meta.motion_model[1], COEFFS))
        self.assertTrue(np.allclose(meta.hot_pixels, [[10, 20], [100, 7]]))

    def test_binned_tiff_movies_take_the_pixel_size_from_the_form(self):
        """TIFF movies labelled with the binned sampling: no header to correct it, so validate
        says where the frames' pixel size came from; the form's value overrides it."""
        mc = self._foreign_movies(sampling_factor=2.0, tiff=True, n_movies=1)
        errors = "\n".join(self._polish(mc, dropUnmatched=True).validate())
        self.assertIn("movie frames 3.0000 A (from the movie set's sampling: TIFF movies carry "
                      "no pixel size)", errors)
        self.assertIn("'Movie pixel size'", errors)
        self.assertEqual(self._polish(mc, dropUnmatched=True, moviePixelSize=1.5).validate(), [])
        mrc = self._foreign_movies(sampling_factor=2.0, n_movies=1)  # MRC: the header's
        self.assertEqual(self._polish(mrc, dropUnmatched=True).validate(), [])

    def test_aligned_movies_refused(self):
        mc = self._foreign_movies(aligned=True)
        errors = "\n".join(self._polish(mc).validate())
        self.assertIn("Aligned movies cannot be polished", errors)
        self.assertIn("_aligned_mic", errors)

    def test_validate_runs_the_programs_input_checks(self):
        """A gain reference of the wrong shape is refused by the form, as the program would."""
        from polishplugin.io.movies import write_gain
        gain = os.path.abspath(self.proj.getTmpPath("gain_small.mrc"))
        write_gain(gain, np.ones((64, 64), np.float32))
        mc = self._foreign_movies(gain=gain)
        errors = "\n".join(self._polish(mc).validate())
        self.assertIn("Checking micrograph sim_0000", errors)
        self.assertIn("gain reference is 64x64", errors)

    def test_pwem_import_unmatched_particles_and_init_from_data(self):
        """pwem's ProtImportMovies (no alignment) with one of the two movies: validate names the
        missing alignment and the particles without a movie; leaving those out and estimating
        the initial track from the data, polishing runs on the movie it has."""
        from pwem.protocols import ProtImportMovies
        sim_movie = self.sim.outputMovies.getFirstItem().getFileName()
        imp = self.newProtocol(ProtImportMovies, filesPath=os.path.dirname(sim_movie),
                               filesPattern=os.path.basename(sim_movie), samplingRate=1.5,
                               voltage=300, dosePerFrame=1.25)
        self.launchProtocol(imp)
        self.assertSetSize(imp.outputMovies, 1)
        errors = "\n".join(self._polish(imp).validate())
        self.assertIn("no alignment", errors)
        self.assertIn("6 particle(s) match no movie", errors)
        prot = self._polish(imp, initFromData=True, dropUnmatched=True)
        self.assertEqual(prot.validate(), [])
        self.launchProtocol(prot)
        self._check_tracks(prot, 6, 8)
        name = os.path.splitext(os.path.basename(sim_movie))[0]
        for p in prot.outputParticles:  # the particles of that movie, matched by name
            self.assertIn(name, p._polishTracks.get())
            self.assertIn(name, p.getCoordinate().getMicName())

    def test_program_error_is_the_protocol_error(self):
        bad = os.path.abspath(self.proj.getTmpPath("bad_sigmas.txt"))
        with open(bad, "w") as fh:
            fh.write("not numbers\n")
        prot = self._polish(self.sim, paramsFile=bad)
        self.proj.launchProtocol(prot, wait=True)
        self.assertTrue(prot.isFailed())
        message = prot.getErrorMessage()
        self.assertIn("polish failed: bad input: %s: cannot read three numbers" % bad, message)


def _motioncor_log_shifts(path, first, xs, ys):
    """Write the shifts of frames first.. as a MotionCor2 '-Full.log' and read them back as
    scipion-em-motioncorr does (relative to the first aligned frame); without the plugin, the
    same re-referencing here."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("# full-frame alignment shift\n# Frame     x Shift     y Shift\n")
        for f, (x, y) in enumerate(zip(xs, ys), first):
            fh.write("%6d %11.4f %11.4f\n" % (f, x, y))
    try:
        from motioncorr.convert import parseMovieAlignment2
    except ImportError:
        return [x - xs[0] for x in xs], [y - ys[0] for y in ys]
    return parseMovieAlignment2(path)
