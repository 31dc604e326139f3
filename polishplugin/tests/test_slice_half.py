"""slice_extract(half=True) of every backend: a transform kept at x >= 0 only gives the slices
of the whole one (points of negative rotated x read at -q and conjugated), never reading x < 0."""
import numpy as np
import pytest

from polishplugin.backends import get_backend
from polishplugin.core.geometry import euler_to_matrix, random_orientations
from polishplugin.tests.opencl import OPENCL_REASON

BACKENDS = ["numpy", "numba"] + ([] if OPENCL_REASON else ["opencl"])


@pytest.mark.parametrize("name", BACKENDS)
def test_half_transform_slices_equal_whole_transform_slices(name):
    be = get_backend(name)
    rng = np.random.default_rng(3)
    n = 24
    full = np.fft.fftn(rng.normal(size=(n, n, n)))      # Hermitian on the periodic grid
    rots = euler_to_matrix(*random_orientations(7, rng))
    r = 9.0 * np.sqrt(rng.uniform(0, 1, 300))
    a = rng.uniform(0, 2 * np.pi, 300)
    kxy = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    want = be.slice_extract(full, rots, kxy, 1.0, 0.0)
    half = full.copy()
    half[:, :, n // 2 + 1:] = np.nan        # x < 0 (periodic, origin at index 0): never read
    got = be.slice_extract(half, rots, kxy, 1.0, 0.0, half=True)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())
    # without half the x < 0 part is read: the test above would see the NaN
    assert not np.isfinite(be.slice_extract(half, rots, kxy, 1.0, 0.0)).all()
