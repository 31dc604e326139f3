"""Truth volumes, half maps and masks of the simulator."""
from pathlib import Path

import numpy as np
import pytest

from polishplugin.core.fourier import fsc, resolution_at
from polishplugin.core.simulate import volumes

DATA = Path("/work/shared/data")
MODEL = DATA / "models" / "5me2.pdb"
EMDB = DATA / "maps" / "emd_3488.mrc"


def test_pseudo_protein_is_compact_and_deterministic():
    n, px = 48, 1.5
    v1 = volumes.pseudo_protein(n, px, np.random.default_rng(3))
    v2 = volumes.pseudo_protein(n, px, np.random.default_rng(3))
    np.testing.assert_array_equal(v1, v2)
    assert v1.shape == (n, n, n) and v1.dtype == np.float32
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2) * px
    radius = 0.25 * n * px
    outside = r > radius + 3 * volumes.BLOB_SIGMA_A
    assert np.abs(v1[outside]).sum() < 1e-3 * v1.sum()
    assert v1.sum() > 0


@pytest.mark.skipif(not (MODEL.exists() and EMDB.exists()), reason="real data not available")
def test_model_map_matches_deposited_map():
    """5ME2 rendered by gemmi correlates with EMD-3488 (the map it was built into) at 6 A, once the
    centring shift is undone; a wrong shift correlates worse."""
    import gemmi
    import mrcfile
    n, px, res = 100, 1.05, 6.0
    vol = volumes.volume_from_model(MODEL, n, px, res)
    assert vol.shape == (n, n, n)
    with mrcfile.open(EMDB) as m:
        ref = volumes.lowpass(m.data.astype(np.float64), res, px)    # map origin is 0
    xyz = np.array([a.pos.tolist() for ch in gemmi.read_structure(str(MODEL))[0] for r in ch for a in r])
    shift = ((n // 2) * px - 0.5 * (xyz.min(0) + xyz.max(0))) / px      # (x, y, z) px applied

    def corr_after_unshift(s):
        k = np.fft.fftfreq(n)
        kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
        ph = np.exp(2j * np.pi * (kx * s[0] + ky * s[1] + kz * s[2]))
        back = np.fft.ifftn(np.fft.fftn(vol) * ph).real
        return np.corrcoef(back.ravel(), ref.ravel())[0, 1]
    good = corr_after_unshift(shift)
    assert good > 0.7
    assert corr_after_unshift(shift + [3.0, 0.0, 0.0]) < good - 0.1


def test_model_too_big_raises():
    if not MODEL.exists():
        pytest.skip("real data not available")
    with pytest.raises(ValueError):
        volumes.volume_from_model(MODEL, 32, 1.0, 6.0)


def test_lowpass_removes_high_frequencies():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((32, 32, 32))
    lp = volumes.lowpass(v, 8.0, 1.0)
    k = np.fft.fftfreq(32)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    shell = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2) * 32
    f = np.abs(np.fft.fftn(lp))
    assert f[shell > 32 / 8.0 + 1.01].max() < 1e-3
    np.testing.assert_allclose(f[shell < 32 / 8.0 - 1.01], np.abs(np.fft.fftn(v))[shell < 32 / 8.0 - 1.01],
                               rtol=1e-4)


def test_half_maps_reach_target_fsc():
    """FSC(half1, half2) follows target_fsc (crossing 0.143 at the chosen resolution) and the
    FSC of a half map with the truth follows sqrt(target) (independent consequence of the model)."""
    n, px, res = 48, 1.5, 6.0
    truth = volumes.pseudo_protein(n, px, np.random.default_rng(1))
    h1, h2 = volumes.half_maps(truth, np.random.default_rng(2), res, px)
    curve = fsc(h1, h2)
    assert resolution_at(curve, n, px) == pytest.approx(res, rel=0.06)
    shells = np.arange(2, 20)
    target = volumes.target_fsc(shells / (n * px), 1.0 / res)
    np.testing.assert_allclose(curve[shells], target, atol=0.06)
    np.testing.assert_allclose(fsc(h1, truth)[shells], np.sqrt(target), atol=0.06)
    assert np.abs(h1 - h2).max() > 0


def test_soft_mask_profile():
    v = np.zeros((32, 32, 32))
    v[16, 16, 16] = 1.0
    m = volumes.soft_mask(v, 0.5, extend_px=3.0, soft_px=4.0)
    line = m[16, 16, 16:]
    assert line[0] == 1.0 and line[3] == 1.0
    assert line[5] == pytest.approx(0.5 + 0.5 * np.cos(np.pi * 2 / 4))
    assert line[7] == 0.0 and m.min() == 0.0 and m.max() == 1.0
    with pytest.raises(ValueError):
        volumes.soft_mask(v, 2.0)
