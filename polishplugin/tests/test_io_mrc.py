"""MRC/MRCS reading and writing: round trips, real files, bad input."""
import os

import numpy as np
import pytest

from polishplugin.io.errors import InputError
from polishplugin.io.mrc import read_mrc, read_mrc_header, write_mrc

DATA = os.path.join(os.path.dirname(__file__), "data")
FEI = "/work/shared/data/micrographs/epu2.9_example.mrc"


def test_round_trip_image_stack_volume(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.normal(size=(12, 10)).astype(np.float32)
    write_mrc(tmp_path / "a.mrc", img, 1.25)
    back, px = read_mrc(tmp_path / "a.mrc")
    assert back.shape == (12, 10) and np.array_equal(back, img) and px == pytest.approx(1.25)
    stack = rng.normal(size=(3, 8, 6)).astype(np.float32)
    write_mrc(tmp_path / "s.mrcs", stack, 2.5)
    h = read_mrc_header(tmp_path / "s.mrcs")
    assert (h.nx, h.ny, h.nz, h.is_stack) == (6, 8, 3, True)
    assert np.array_equal(read_mrc(tmp_path / "s.mrcs")[0], stack)
    write_mrc(tmp_path / "v.mrc", stack, 2.5)
    assert not read_mrc_header(tmp_path / "v.mrc").is_stack
    write_mrc(tmp_path / "d.mrc", stack.astype(np.float64), 1.0)  # float64 stored as float32
    assert read_mrc_header(tmp_path / "d.mrc").mode == 2


def test_real_particle_stack():
    data, px = read_mrc(os.path.join(DATA, "trpv1_small_stack.mrcs"))
    assert data.shape == (10, 48, 48) and data.dtype == np.float32
    assert px == pytest.approx(4.88, abs=1e-5)
    assert np.all(np.isfinite(data)) and data.std() > 0


@pytest.mark.skipif(not os.path.exists(FEI), reason="shared real data not available")
def test_fei_micrograph_header():
    h = read_mrc_header(FEI)
    assert (h.nx, h.ny, h.nz, h.exttyp) == (4096, 4096, 1, "FEI2")
    # both the main header (cella/mx) and the FEI2 extended header say 0.66655 A
    assert h.pixel_size == pytest.approx(0.66655, abs=1e-4)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.mrc: no such file"):
        read_mrc(tmp_path / "nope.mrc")


def test_truncated_file_names_sizes(tmp_path):
    write_mrc(tmp_path / "m.mrcs", np.zeros((24, 16, 16), np.float32), 1.0)
    raw = (tmp_path / "m.mrcs").read_bytes()
    (tmp_path / "t.mrcs").write_bytes(raw[:1024 + 1000])
    with pytest.raises(InputError) as err:
        read_mrc(tmp_path / "t.mrcs")
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "t.mrcs")) and "truncated" in msg
    assert "24 frames of 16x16 float32 (24576 bytes)" in msg and "holds 1000 bytes" in msg
    (tmp_path / "h.mrc").write_bytes(raw[:500])
    with pytest.raises(InputError, match="shorter than the 1024-byte MRC header"):
        read_mrc_header(tmp_path / "h.mrc")


def test_corrupt_header(tmp_path):
    (tmp_path / "junk.mrc").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="junk.mrc: corrupt MRC header"):
        read_mrc(tmp_path / "junk.mrc")


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    import polishplugin.io.mrc as mrc_mod

    def interrupted(path, overwrite=False):
        with open(path, "wb") as fh:
            fh.write(b"half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(mrc_mod.mrcfile, "new", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_mrc(tmp_path / "x.mrc", np.zeros((4, 4), np.float32), 1.0)
    assert os.listdir(tmp_path) == []
