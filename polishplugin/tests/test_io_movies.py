"""Lazy movies (MRC and TIFF), gain references, validation against the acquisition."""
import numpy as np
import pytest

from polishplugin.io.errors import InputError
from polishplugin.io.movies import (Movie, read_gain, write_gain, write_movie_mrc,
                                    write_movie_tiff)


@pytest.fixture
def counts():
    return np.random.default_rng(3).poisson(1.5, (5, 24, 32)).astype(np.uint16)


@pytest.fixture
def gain():
    return np.random.default_rng(4).uniform(0.8, 1.2, (24, 32)).astype(np.float32)


@pytest.mark.parametrize("gain_name", ["gain.mrc", "gain.tiff"])
def test_tiff_movie_with_gain(tmp_path, counts, gain, gain_name):
    write_movie_tiff(tmp_path / "m.tif", counts)
    write_gain(tmp_path / gain_name, gain)
    assert np.array_equal(read_gain(tmp_path / gain_name), gain)
    with Movie(tmp_path / "m.tif", gain=tmp_path / gain_name, pixel_size=0.83) as movie:
        assert (movie.nframes, movie.shape, movie.pixel_size) == (5, (24, 32), 0.83)
        f2 = movie.frame(2)
        assert f2.dtype == np.float32 and np.allclose(f2, counts[2] * gain, rtol=1e-6)
        frames = list(movie.iter_frames(1, 4))
        assert len(frames) == 3 and np.allclose(frames[0], counts[1] * gain, rtol=1e-6)
        expected = (counts[1:4].astype(np.float64) * gain).sum(axis=0)
        assert np.allclose(movie.sum(1, 4), expected, rtol=1e-6)
        assert np.allclose(movie.sum(), (counts * gain.astype(np.float64)).sum(0), rtol=1e-6)


def test_tiff_uncompressed_and_uint8(tmp_path, counts):
    write_movie_tiff(tmp_path / "u.tif", counts.astype(np.uint8), compression=None)
    with Movie(tmp_path / "u.tif") as movie:
        assert np.array_equal(movie.frame(4), counts[4].astype(np.float32))


def test_tiff_lzw_as_epu_writes(tmp_path, counts):
    write_movie_tiff(tmp_path / "l.tif", counts.astype(np.uint8), compression="lzw")
    with Movie(tmp_path / "l.tif") as movie:
        assert movie.nframes == 5
        assert np.array_equal(movie.frame(3), counts[3].astype(np.float32))


def test_mrc_movie_round_trip(tmp_path, counts):
    frames = counts.astype(np.float32) + 0.25
    write_movie_mrc(tmp_path / "m.mrcs", frames, 1.1)
    with Movie(tmp_path / "m.mrcs") as movie:
        assert movie.nframes == 5 and movie.pixel_size == pytest.approx(1.1)
        assert np.array_equal(movie.frame(3), frames[3])
        with pytest.raises(IndexError):
            movie.frame(5)


def test_validation_names_file_and_numbers(tmp_path, counts):
    write_movie_mrc(tmp_path / "m.mrcs", counts.astype(np.float32), 1.1)
    with Movie(tmp_path / "m.mrcs") as movie:
        movie.validate(nframes=5, pixel_size=1.1)
        with pytest.raises(InputError, match=r"m.mrcs: movie has 5 frames but 40 were expected"):
            movie.validate(nframes=40)
        with pytest.raises(InputError, match=r"m.mrcs: movie pixel size is 1.1000 A but 0.8300 A"):
            movie.validate(pixel_size=0.83)


def test_gain_shape_mismatch(tmp_path, counts):
    write_movie_tiff(tmp_path / "m.tif", counts)
    write_gain(tmp_path / "g.mrc", np.ones((32, 24), np.float32))
    with pytest.raises(InputError, match=r"g.mrc: gain reference is 24x32 .* is 32x24"):
        Movie(tmp_path / "m.tif", gain=tmp_path / "g.mrc")


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_truncated_tiff(tmp_path, counts, cut):
    write_movie_tiff(tmp_path / "m.tif", counts, compression=None)
    raw = (tmp_path / "m.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[:int(len(raw) * cut)])
    with pytest.raises(InputError, match=r"t.tif: .*truncated"):
        Movie(tmp_path / "t.tif")


def test_truncated_mrc_movie(tmp_path, counts):
    write_movie_mrc(tmp_path / "m.mrcs", counts.astype(np.float32), 1.0)
    raw = (tmp_path / "m.mrcs").read_bytes()
    (tmp_path / "t.mrcs").write_bytes(raw[:-10])
    with pytest.raises(InputError, match=r"t.mrcs: truncated: header says 5 frames of 32x24"):
        Movie(tmp_path / "t.mrcs")


def test_missing_movie(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        Movie(tmp_path / "absent.tiff")


def test_tiff_writer_rejects_bad_input(tmp_path, counts):
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_movie_tiff(tmp_path / "f.tif", counts.astype(np.float32))
    with pytest.raises(ValueError, match="compression"):
        write_movie_tiff(tmp_path / "f.tif", counts, compression="jpeg")
    assert not (tmp_path / "f.tif").exists()
