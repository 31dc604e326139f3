"""Initial tracks from MotionCorr metadata: global shifts, -9999 gaps and the local model."""
import numpy as np

from polishplugin.core.motion.init import polynomial_shift
from polishplugin.io.polish_inputs import MicrographInput


def _mic(shifts, model=None, start=1):
    return MicrographInput(
        name="m", movie="m.tif", gain=None, nframes=len(shifts), shape=(400, 600),
        pixel_size=1.0, dose_per_frame=1.0, pre_exposure=0.0, voltage=300.0,
        shifts=np.asarray(shifts, dtype=float), motion_model=model, hot_pixels=np.zeros((0, 2)),
        index=np.arange(2), centres=np.array([[150.0, 100.0], [450.0, 300.0]]),
        angles=np.zeros((2, 3)), half_sets=np.array([1, 2]), start_frame=start)


def test_global_shifts_become_negative_tracks_and_gaps_are_filled():
    shifts = [[0.0, 0.0], [1.0, -2.0], [np.nan, np.nan], [3.0, 1.0]]
    tr = _mic(shifts).initial_tracks
    assert tr.shape == (2, 4, 2)
    expected = -np.array([[0, 0], [1, -2], [1, -2], [3, 1]], dtype=float)
    np.testing.assert_allclose(tr[0], expected)
    np.testing.assert_allclose(tr[1], expected)


def test_local_model_adds_the_polynomial_at_each_particle():
    rng = np.random.default_rng(2)
    idx = np.arange(36)
    coeffs = rng.normal(scale=0.01, size=36)
    shifts = np.zeros((5, 2))
    tr = _mic(shifts, (idx[::-1], coeffs[::-1]), start=1).initial_tracks  # any row order
    for p, (x, y) in enumerate([(150.0, 100.0), (450.0, 300.0)]):
        z = np.arange(5)
        local = polynomial_shift(coeffs, z, x / 600 - 0.5, y / 400 - 0.5)
        np.testing.assert_allclose(tr[p], -local, atol=1e-12)
    assert not np.allclose(tr[0], tr[1])
