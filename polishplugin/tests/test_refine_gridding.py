"""RELION's iterative gridding weights (core/refine/gridding.py): the blob's transform evaluated
once per distinct radius equals the formula voxel by voxel (to float32), and the weights iterated
in float32 equal the double-precision iteration with that formula to 1e-5."""
import numpy as np
import pytest
import scipy.fft

from polishplugin.core.fourier import half_transform_radius
from polishplugin.core.refine import gridding


def _whole_grid(weight, inside, iterations=gridding.ITERATIONS):
    """The iteration on the whole size^3 grid, the blob's transform evaluated voxel by voxel."""
    size = weight.shape[0]
    k = np.fft.fftfreq(size) * size
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    kernel = gridding.blob_transform(r / size)
    w = np.where(inside, weight, 0.0)
    v = inside.astype(np.float64)
    for _ in range(iterations):
        conv = scipy.fft.rfftn(scipy.fft.irfftn(v * w, s=(size,) * 3) * kernel)
        v = np.where(inside, v / np.maximum(np.abs(conv), gridding.MIN_CONV), 0.0)
    return v


@pytest.mark.parametrize("size,radius", [(64, 10.0), (96, 47.0)])
def test_weights_equal_the_iteration_with_the_kernel_voxel_by_voxel(size, radius):
    """A density like a back-projection's (falling as 1 / |q|, 5 % of the voxels empty) inside
    ``radius``: the same v to float32 rounding (measured 1.4e-6 at box 192), and not 1 / K (the
    gridding does its work)."""
    rng = np.random.default_rng(int(radius))
    r = half_transform_radius(size)
    inside = r < radius
    k = 50.0 / np.maximum(r, 1.0) * rng.gamma(2.0, 0.5, r.shape)
    k[rng.random(r.shape) < 0.05] = 0.0
    k += 0.01
    v = gridding.gridding_weights(k, inside)
    assert np.all(v[~inside] == 0.0)
    assert v.dtype == np.float64
    np.testing.assert_allclose(v, _whole_grid(k, inside), rtol=1e-5, atol=0)
    assert np.abs(v[inside] * k[inside] - 1.0).max() > 0.05


@pytest.mark.parametrize("n", [30, 96, 101])
def test_radial_kernel_is_the_formula_voxel_by_voxel(n):
    k = np.fft.fftfreq(n) * n
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    np.testing.assert_allclose(gridding._blob_kernel(n), gridding.blob_transform(r / n),
                               rtol=1e-6)
