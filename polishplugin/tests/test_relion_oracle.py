"""File conventions settled against RELION itself (relion_image_handler 3.1.3), not against our own
writers: movie frames (TIFF, LZW-TIFF, 8-bit TIFF, MRC, MRCS) and gain references as RELION reads
and applies them."""
import mrcfile
import numpy as np
import pytest
import tifffile

from polishplugin.io.movies import Movie, read_gain, write_gain, write_movie_tiff
from polishplugin.tests.relion import needs_relion, run_relion

pytestmark = needs_relion

NF, NY, NX = 3, 10, 14   # non-square, so a transposition would show too


@pytest.fixture
def counts():
    return np.random.default_rng(11).integers(0, 250, (NF, NY, NX)).astype(np.uint16)


@pytest.fixture
def gain():
    return np.random.default_rng(12).uniform(0.5, 2.0, (NY, NX)).astype(np.float32)


def _write_independently(path, counts):
    """A movie written by tifffile/mrcfile directly (rows in the file's order), as EPU or a
    detector would, not by our writers."""
    name = path.name
    if name.endswith(".mrc") or name.endswith(".mrcs"):
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(counts.astype(np.float32))
        return
    kw = dict(photometric="minisblack", metadata=None)
    if name.startswith("lzw"):
        kw["compression"] = "lzw"
    data = counts.astype(np.uint8) if name.startswith("u8") else counts
    tifffile.imwrite(path, data, **kw)


def _relion_frames(tmp_path, src, multiply=None):
    # RELION treats a multi-frame .mrc as one 3D map (and writes a broken .mrcs from it)
    ext = ".mrc" if src.name.endswith(".mrc") else ".mrcs"
    out = tmp_path / ("relion_" + src.name.replace(".", "_") + ext)
    args = ["--i", src.name, "--o", out.name] + (["--multiply", multiply.name] if multiply else [])
    run_relion("relion_image_handler", args, cwd=tmp_path, timeout=120)
    with mrcfile.open(out, permissive=True) as m:
        return np.asarray(m.data, dtype=np.float32).reshape(NF, NY, NX)


def _ours(path, gain=None):
    with Movie(path, gain=gain) as mov:
        return np.stack(list(mov.iter_frames()))


@pytest.mark.parametrize("name", ["plain.tif", "lzw.tiff", "u8.tif", "movie.mrcs", "movie.mrc"])
def test_movie_frames_equal_relions(tmp_path, counts, name):
    """Our frames of a TIFF (any compression/bit depth) and an MRC(S) movie are RELION's, bit for
    bit; for TIFF that means the file's rows reversed (and not for MRC)."""
    src = tmp_path / name
    _write_independently(src, counts)
    relion = _relion_frames(tmp_path, src)
    ours = _ours(src)
    assert np.array_equal(ours, relion)
    flipped = name.endswith((".tif", ".tiff"))
    assert np.array_equal(relion, counts[:, ::-1] if flipped else counts)


@pytest.mark.parametrize("movie_name", ["plain.tif", "movie.mrcs"])
@pytest.mark.parametrize("gain_name", ["gain.tif", "gain.mrc"])
def test_gain_as_relion_applies_it(tmp_path, counts, gain, movie_name, gain_name):
    """Gain (TIFF: rows reversed like a TIFF movie; MRC: as stored) multiplied into every frame as
    ``relion_image_handler --multiply`` does; a TIFF gain read alone is RELION's too."""
    movie = tmp_path / movie_name
    _write_independently(movie, counts)
    gpath = tmp_path / gain_name
    if gain_name.endswith(".tif"):
        tifffile.imwrite(gpath, gain, photometric="minisblack", metadata=None)
        run_relion("relion_image_handler", ["--i", gain_name, "--o", "gain_relion.mrcs"],
                   cwd=tmp_path, timeout=120)
        with mrcfile.open(tmp_path / "gain_relion.mrcs", permissive=True) as m:
            assert np.array_equal(read_gain(gpath), np.asarray(m.data).reshape(NY, NX))
    else:
        with mrcfile.new(gpath, overwrite=True) as m:
            m.set_data(gain)
    relion = _relion_frames(tmp_path, movie, multiply=gpath)
    ours = _ours(movie, gain=gpath)
    assert np.allclose(ours, relion, rtol=1e-6, atol=0)
    if gain_name.endswith(".tif"):  # the TIFF gain's orientation matters to the result
        assert not np.allclose(ours, _ours(movie) * gain, rtol=1e-3)


def test_our_tiff_writers_follow_relion(tmp_path, counts, gain):
    """What the simulator writes (counts and gain as TIFF) RELION reads back as the arrays given."""
    write_movie_tiff(tmp_path / "sim.tiff", counts, compression="lzw")
    write_gain(tmp_path / "gain.tif", gain)
    assert np.array_equal(_relion_frames(tmp_path, tmp_path / "sim.tiff"), counts)
    run_relion("relion_image_handler", ["--i", "gain.tif", "--o", "g.mrcs"], cwd=tmp_path,
               timeout=120)
    with mrcfile.open(tmp_path / "g.mrcs", permissive=True) as m:
        assert np.array_equal(np.asarray(m.data).reshape(NY, NX), gain)
