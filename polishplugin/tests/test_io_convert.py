"""pwem sets <-> RELION STAR: round trips keep alignment, CTF, optics, half-sets, coordinates."""
import os

import numpy as np
import pytest

from polishplugin.core.geometry import euler_to_matrix
from polishplugin.io.convert import (read_set_of_movies, read_set_of_particles,
                                     write_set_of_movies, write_set_of_particles)
from polishplugin.io.movies import write_movie_mrc
from polishplugin.io.star import read_particles_star, write_particles_star

DATA = os.path.join(os.path.dirname(__file__), "data")


def _rotations(table):
    return euler_to_matrix(*[np.deg2rad(table[lb]) for lb in
                             ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")])


def test_particles_star_set_star(tmp_path):
    from pwem.objects import SetOfParticles
    star = os.path.join(DATA, "trpv1_small_stack.star")
    optics, parts = read_particles_star(star)
    parts["rlnCoordinateX"] = np.arange(10) * 11.0 + 3  # pwem Coordinates hold integers
    parts["rlnCoordinateY"] = np.arange(10) * 7.0
    parts["rlnMicrographName"] = ["mic_%d.mrc" % (i % 3) for i in range(10)]
    write_particles_star(tmp_path / "in.star", optics, parts)

    part_set = SetOfParticles(filename=str(tmp_path / "particles.sqlite"))
    read_set_of_particles(tmp_path / "in.star", part_set, root=DATA)
    part_set.write()
    assert part_set.getSize() == 10 and part_set.hasAlignmentProj() and part_set.hasCTF()
    first = part_set.getFirstItem()
    assert first.getLocation() == (1, os.path.join(DATA, "trpv1_small_stack.mrcs"))
    assert first._rlnRandomSubset.get() == 2 and first.getSamplingRate() == pytest.approx(4.88)
    assert first.getAcquisition().getVoltage() == 300

    # reopen from sqlite to be sure everything was stored
    reopened = SetOfParticles(filename=str(tmp_path / "particles.sqlite"))
    reopened.loadAllProperties()
    o2, p2 = write_set_of_particles(reopened, tmp_path / "out.star")
    o3, p3 = read_particles_star(tmp_path / "out.star")
    assert len(p3) == 10 and o3["rlnImagePixelSize"][0] == pytest.approx(4.88)
    assert o3["rlnImageSize"][0] == 48 and o3["rlnVoltage"][0] == 300
    assert o3["rlnSphericalAberration"][0] == 2.0 and o3["rlnAmplitudeContrast"][0] == 0.1
    # angles: compare as rotation matrices (Euler triplets are not unique)
    assert np.allclose(_rotations(p3), _rotations(parts), atol=1e-9)
    for lb in ("rlnOriginXAngst", "rlnOriginYAngst", "rlnDefocusU", "rlnDefocusV",
               "rlnDefocusAngle", "rlnPhaseShift", "rlnCoordinateX", "rlnCoordinateY"):
        assert np.allclose(p3[lb], parts[lb], atol=1e-9), lb
    assert p3["rlnRandomSubset"].tolist() == parts["rlnRandomSubset"].tolist()
    assert p3["rlnMicrographName"].tolist() == parts["rlnMicrographName"].tolist()
    assert p3["rlnImageName"][4] == "000005@" + os.path.join(DATA, "trpv1_small_stack.mrcs")


def test_transform_convention_matches_scipion_relion():
    """Scipion's projection Transform is inv([A | -origin_px]) = [A^T | A^T origin_px], A being
    RELION's Euler matrix (scipion-em-relion convert_utils.matrixFromGeometry, inverse=True)."""
    from polishplugin.io.convert import matrix_to_relion, relion_to_matrix
    angles = np.array([-30.07, 137.5, 167.96])
    m = relion_to_matrix(angles, (-8.1, 6.2), 2.0)
    a = euler_to_matrix(*np.deg2rad(angles))
    assert np.allclose(m[:3, :3], a.T, atol=1e-12)
    assert np.allclose(m[:3, 3], a.T @ np.array([-8.1, 6.2, 0.0]) / 2.0, atol=1e-12)
    back, origin = matrix_to_relion(m, 2.0)
    assert np.allclose(euler_to_matrix(*np.deg2rad(back)), a, atol=1e-12)
    assert np.allclose(origin, (-8.1, 6.2))


def test_movies_round_trip(tmp_path):
    from pwem.objects import Acquisition, Movie, MovieAlignment, SetOfMovies
    for i in range(2):
        write_movie_mrc(tmp_path / ("mov%d.mrcs" % i), np.zeros((4, 16, 20), np.float32), 0.83)
    movies = SetOfMovies(filename=str(tmp_path / "movies.sqlite"))
    movies.setSamplingRate(0.83)
    movies.setAcquisition(Acquisition(voltage=300, sphericalAberration=2.7, amplitudeContrast=0.1,
                                      magnification=50000, dosePerFrame=1.25, doseInitial=0.0))
    movies.setGain(str(tmp_path / "gain.mrc"))
    shifts = [([0.0, 1.0, 2.5, 3.0], [0.0, -0.5, -1.0, -1.25]),
              ([0.0, 0.2, 0.3, 0.5], [0, 0, 1, 2])]
    for i, (xs, ys) in enumerate(shifts):
        movie = Movie(location=str(tmp_path / ("mov%d.mrcs" % i)))
        movie.setMicName("mic%d.mrc" % i)
        movie.setAlignment(MovieAlignment(first=1, last=4, xshifts=xs, yshifts=ys))
        movies.append(movie)
    movies.write()
    write_set_of_movies(movies, tmp_path / "corrected_micrographs.star", tmp_path / "meta")
    back = SetOfMovies(filename=str(tmp_path / "movies2.sqlite"))
    read_set_of_movies(tmp_path / "corrected_micrographs.star", back)
    assert back.getSize() == 2 and back.getSamplingRate() == pytest.approx(0.83)
    assert back.getAcquisition().getDosePerFrame() == 1.25 and back.getGain().endswith("gain.mrc")
    for movie, (xs, ys) in zip(back.iterItems(orderBy="id"), shifts):
        bx, by = movie.getAlignment().getShifts()
        assert np.allclose(list(bx), xs) and np.allclose(list(by), ys)
        assert movie.getAlignment().getRange() == (1, 4)
    assert [m.getMicName() for m in back.iterItems(orderBy="id")] == ["mic0.mrc", "mic1.mrc"]


def test_mic_key_meets_names_across_plugins():
    from polishplugin.io.convert import mic_key
    keys = {mic_key(n) for n in ("sim_0000.tiff", "sim_0000.mrc", "MotionCorr/job002/Movies/"
                                 "sim_0000.mrc", "/data/sim_0000.mrc.bz2", "sim_0000")}
    assert keys == {"sim_0000"}
    assert mic_key("FoilHole_1_Data_2_3_20240101_120000.eer") == \
        "FoilHole_1_Data_2_3_20240101_120000"
    assert mic_key("grid1.5/mic_1.2.tif") == "mic_1.2"  # a numeric suffix is part of the name


def test_movie_pixel_size_trusts_the_header_only_for_a_binned_label(tmp_path):
    """A set labelled 2x the MRC header (binned motion correction) -> the header; a header that
    disagrees otherwise (unset 1.0) -> the set's sampling."""
    from pwem.objects import Movie, SetOfMovies
    from polishplugin.io.convert import movie_pixel_size
    from polishplugin.io.movies import write_movie_mrc
    path = str(tmp_path / "m.mrc")
    write_movie_mrc(path, np.zeros((3, 8, 8), np.float32), 1.0)
    for sampling, expected in ((2.0, 1.0), (3.0, 1.0), (0.83, 0.83), (1.5, 1.5), (1.0, 1.0)):
        movies = SetOfMovies(filename=str(tmp_path / ("movies%g.sqlite" % sampling)))
        movies.setSamplingRate(sampling)
        movies.append(Movie(location=path))
        assert movie_pixel_size(movies) == pytest.approx(expected), sampling


def test_particles_meet_movies_by_name_then_id_then_stack(tmp_path):
    from pwem.objects import Coordinate, Movie, Particle, SetOfMovies, SetOfParticles
    from polishplugin.io.convert import match_particles_to_movies
    movies = SetOfMovies(filename=str(tmp_path / "movies.sqlite"))
    for i, name in enumerate(("sim_0000.tiff", "sim_0001.tiff"), 1):
        m = Movie(location="/data/" + name)
        m.setObjId(i)
        m.setMicName(name)
        movies.append(m)
    parts = SetOfParticles(filename=str(tmp_path / "parts.sqlite"))
    cases = [("MotionCorr/job002/Movies/sim_0001.mrc", None, "x.mrcs"),  # name -> sim_0001
             ("other_0009.mrc", 1, "Extract/sim_0000.mrcs"),  # a name meeting no movie: none
             ("", 2, "x.mrcs"),                               # no name: micId 2 -> sim_0001
             ("", 7, "Extract/job3/sim_0000_particles.mrcs")]  # no name, no id: stack
    for i, (name, mic_id, stack) in enumerate(cases, 1):
        p = Particle(location=(1, stack))
        p.setObjId(i)
        c = Coordinate()
        c.setPosition(10, 10)
        c.setMicName(name)
        if mic_id is not None:
            c.setMicId(mic_id)
        p.setCoordinate(c)
        parts.append(p)
    names, unmatched = match_particles_to_movies(parts, movies)
    assert names == {1: "sim_0001.tiff", 3: "sim_0001.tiff", 4: "sim_0000.tiff"}
    assert [u[0] for u in unmatched] == [2]


def test_matcher_fed_incrementally_and_items_fetched_by_id(tmp_path):
    """A stream feeds the matcher movie by movie: a particle whose movie comes later matches
    once it is added, as a whole-set match would; items are fetched by id in id order."""
    from pwem.objects import Coordinate, Movie, Particle, SetOfMovies, SetOfParticles
    from polishplugin.io.convert import MovieMatcher, iter_by_ids, match_particles_to_movies
    movies = SetOfMovies(filename=str(tmp_path / "movies.sqlite"))
    parts = SetOfParticles(filename=str(tmp_path / "parts.sqlite"))
    for i in range(1, 4):
        m = Movie(location="/data/mic_%d.tiff" % i)
        m.setMicName("mic_%d.tiff" % i)
        movies.append(m)
        for _ in range(2):
            p = Particle(location=(1, "x.mrcs"))
            c = Coordinate()
            c.setPosition(10, 10)
            c.setMicName("Movies/mic_%d.mrc" % i)
            p.setCoordinate(c)
            parts.append(p)
    matcher = MovieMatcher()
    assert matcher.add_movies(iter_by_ids(movies, [1, 2])) == ["mic_1.tiff", "mic_2.tiff"]
    names, unmatched = matcher.match(parts.iterItems())
    assert [u[0] for u in unmatched] == [5, 6]
    assert matcher.movie_ids == {"mic_1.tiff": 1, "mic_2.tiff": 2}
    matcher.add_movies(movies.iterItems(where="id > 2"))
    late, unmatched = matcher.match(iter_by_ids(parts, [u[0] for u in unmatched]))
    assert unmatched == [] and late == {5: "mic_3.tiff", 6: "mic_3.tiff"}
    names.update(late)
    assert (names, []) == match_particles_to_movies(parts, movies)
    assert [p.getObjId() for p in iter_by_ids(parts, [6, 1, 3], chunk=2)] == [1, 3, 6]
