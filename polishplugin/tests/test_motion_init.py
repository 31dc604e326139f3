"""Initial tracks: global track from CC maps, RELION MotionCorr polynomial model."""
import numpy as np

from polishplugin.core.motion.init import (NOT_OBSERVED, fill_not_observed, global_track_from_cc,
                                           initial_tracks_from_global,
                                           initial_tracks_from_local_model, polynomial_shift)


def _bump_maps(shifts, P=4, W=15, width=2.0):
    y, x = np.mgrid[:W, :W] - W // 2
    F = len(shifts)
    cc = np.zeros((P, F, W, W))
    for f, (sx, sy) in enumerate(shifts):
        cc[:, f] = np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * width ** 2))
    return cc


def test_global_track_from_cc():
    shifts = np.array([[0.0, 0.0], [0.4, -0.3], [1.2, -0.9], [2.7, -1.6], [-6.2, 5.5]])
    g = global_track_from_cc(_bump_maps(shifts))
    np.testing.assert_allclose(g, shifts, atol=0.1)
    g1 = global_track_from_cc(_bump_maps(shifts), reference_frame=1)
    np.testing.assert_allclose(g1, g - g[1])


def test_initial_tracks_from_global():
    g = np.arange(10.0).reshape(5, 2)
    t = initial_tracks_from_global(g, np.zeros((3, 2)))
    assert t.shape == (3, 5, 2)
    np.testing.assert_array_equal(t[2], g)


def _literal(cx, cy, z, x, y):
    """ThirdOrderPolynomialModel::getShiftAt written out term by term."""
    def one(c):
        return ((c[0] * z + c[1] * z ** 2 + c[2] * z ** 3)
                + (c[3] * z + c[4] * z ** 2 + c[5] * z ** 3) * x
                + (c[6] * z + c[7] * z ** 2 + c[8] * z ** 3) * x * x
                + (c[9] * z + c[10] * z ** 2 + c[11] * z ** 3) * y
                + (c[12] * z + c[13] * z ** 2 + c[14] * z ** 3) * y * y
                + (c[15] * z + c[16] * z ** 2 + c[17] * z ** 3) * x * y)
    return one(cx), one(cy)


def test_polynomial_shift_matches_relion_formula():
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=36)
    for z, u, v in [(0, 0.1, -0.2), (3, -0.4, 0.3), (7.0, 0.25, 0.5)]:
        sx, sy = _literal(coeffs[:18], coeffs[18:], z, u, v)
        np.testing.assert_allclose(polynomial_shift(coeffs, z, u, v), [sx, sy], rtol=1e-12)


def test_tracks_from_local_model():
    rng = np.random.default_rng(1)
    coeffs = rng.normal(scale=0.01, size=36)
    glob = rng.normal(size=(10, 2))
    pos = np.array([[100.0, 3000.0], [3500.0, 200.0]])
    frames = np.arange(3, 9)                        # movie frames 3..8 (1-based)
    t = initial_tracks_from_local_model(pos, glob, coeffs, 4000, 4000, frames, start_frame=2,
                                        scale=0.5)
    for p in range(2):
        for i, fr in enumerate(frames):
            sx, sy = _literal(coeffs[:18], coeffs[18:], fr - 2, pos[p, 0] / 4000 - 0.5,
                              pos[p, 1] / 4000 - 0.5)
            np.testing.assert_allclose(t[p, i], -0.5 * (glob[fr - 1] + [sx, sy]), rtol=1e-12)
    no_local = initial_tracks_from_local_model(pos, glob, None, 4000, 4000, frames)
    np.testing.assert_allclose(no_local[1], -glob[frames - 1])


def test_not_observed_shifts_filled():
    g = np.array([[NOT_OBSERVED, NOT_OBSERVED], [1.0, 2.0], [NOT_OBSERVED, NOT_OBSERVED]])
    np.testing.assert_array_equal(fill_not_observed(g), [[0, 0], [1, 2], [1, 2]])
