"""Frame weights, eq. 22 of Zivanov et al. (2019)."""
import numpy as np

from polishplugin.core.dose.weights import frame_weights, ring_weights, weight_maps
from polishplugin.core.fourier import radius_grid

B = np.array([-20.0, 0.0, -35.0, -80.0, -150.0])
C = np.array([-0.2, 0.0, 0.05, -0.1, -0.3])


def test_weights_sum_to_one_and_match_closed_form():
    box, px = 64, 1.2
    w = ring_weights(B, C, box // 2 + 1, box, px)
    assert w.shape == (5, box // 2 + 1)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    s = np.arange(box // 2 + 1) / (box * px)
    direct = np.exp(C[:, None] + B[:, None] * s ** 2 / 4)
    np.testing.assert_allclose(w, direct / direct.sum(0), rtol=1e-12)
    # the best frame dominates at high frequency, early/late frames lose weight
    assert np.argmax(w[:, -1]) == 1 and w[4, -1] < w[4, 1]


def test_weights_gauge_invariant_and_finite_for_extreme_b():
    s = np.linspace(0, 0.5, 30)
    w = frame_weights(B, C, s)
    np.testing.assert_allclose(frame_weights(B + 37.0, C - 1.3, s), w, rtol=1e-12)
    wx = frame_weights(np.array([0.0, -1e5]), np.zeros(2), s)
    assert np.all(np.isfinite(wx))
    np.testing.assert_allclose(wx.sum(0), 1.0)


def test_weight_maps_follow_exact_radius():
    box, px = 32, 1.5
    maps = weight_maps(B, C, box, px, dtype=np.float64)
    assert maps.shape == (5, box, box)
    np.testing.assert_allclose(maps.sum(0), 1.0, atol=1e-12)
    r = radius_grid(box, box, px)
    iy, ix = 3, 7
    np.testing.assert_allclose(maps[:, iy, ix], frame_weights(B, C, np.array(r[iy, ix])),
                               rtol=1e-12)
    # Friedel symmetric
    np.testing.assert_allclose(maps[:, iy, ix], maps[:, -iy, -ix])


def test_weights_equal_relions_normalised_gaussians():
    """RELION (DamageHelper::computeWeights, normalised) weighs frame f at a Fourier pixel r
    pixels from the origin by a_f exp(-r^2 / (2 sigma_f^2)) / sum over frames; with sigma_f from
    relion_sigma and a_f = exp(C_f) this is eq. 22 on the same grid."""
    from polishplugin.core.dose.bfactors import relion_sigma
    box, px = 48, 1.3
    b = B - 1.0                                   # RELION's gauge: all B < 0
    sigma = relion_sigma(b, box, px)
    ky, kx = np.meshgrid(np.fft.fftfreq(box) * box, np.fft.fftfreq(box) * box, indexing="ij")
    g = np.exp(C)[:, None, None] * np.exp(-(kx ** 2 + ky ** 2)[None] / (2 * sigma[:, None, None] ** 2))
    np.testing.assert_allclose(weight_maps(b, C, box, px, dtype=np.float64), g / g.sum(0),
                               rtol=1e-9, atol=1e-15)
