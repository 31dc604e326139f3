"""The numba pixel test of the defect search gives the mask of the numpy formulas it replaced
(core/defects.py docstring), with a gain, without, with tiles that have no value."""
import numpy as np
import pytest

from polishplugin.core.defects import (_global_median, _interp_rows, _linear_weights,
                                       _tile_values, detect_defects)


def _numpy_mask(raw, F, g, z=7.0, tile=32):
    """The former numpy test, whole image at once (float64)."""
    ny, nx = raw.shape
    med, mad = _tile_values(raw, g, tile)
    wy = _linear_weights((np.arange(ny) + 0.5) / tile - 0.5, med.shape[0])
    wx = _linear_weights((np.arange(nx) + 0.5) / tile - 0.5, med.shape[1])
    gs = np.ones(raw.shape) if g is None else np.asarray(g, dtype=np.float64)
    rs = np.asarray(raw, dtype=np.float64)
    zero_gain = ~(gs > 0)
    corrected = np.where(zero_gain, np.nan, rs * gs)
    mu = _interp_rows(med, wy, wx)
    if not np.isfinite(mu).all():
        mu = np.where(np.isfinite(mu), mu, _global_median(raw, g, tile))
    spread = np.maximum(_interp_rows(mad, wy, wx), np.sqrt(np.maximum(mu * gs, 1e-12)))
    with np.errstate(invalid="ignore"):
        dev = (corrected - mu) / spread
        dead = (rs == 0) & (mu / np.where(zero_gain, 1.0, gs) > 0.5 * z * z)
        return zero_gain | np.nan_to_num(np.abs(dev) > z, nan=False) | dead


@pytest.mark.parametrize("with_gain", [True, False])
@pytest.mark.parametrize("workers", [1, 2])
def test_kernel_mask_equals_numpy_formulas(with_gain, workers):
    rng = np.random.default_rng(4)
    g = rng.uniform(0.6, 1.5, (150, 170)).astype(np.float32)
    raw = rng.poisson(400.0 / g).astype(np.float32)      # flat after gain correction
    raw[3, 4], raw[80, 90], raw[120, 10] = 1500, 0, 150      # hot, dead, cold
    raw[100:140, 120:170] = np.nan     # no value in that tile: the global median stands in
    if with_gain:
        g[60, :] = 0.0
        g[7, 7] = np.nan
    else:
        raw = rng.poisson(400.0, raw.shape).astype(np.float32)
        raw[3, 4], raw[80, 90], raw[120, 10] = 1500, 0, 150
        raw[100:140, 120:170] = np.nan
        g = None
    mask = detect_defects(raw, 5, g, tile=32, strip=48, workers=workers)
    want = _numpy_mask(raw, 5, g)
    assert want[3, 4] and want[80, 90] and want[120, 10]
    assert 3 <= want.sum() < 400
    np.testing.assert_array_equal(mask, want)
