"""RELION's iterative gridding weights (core/refine/gridding.py) on the current radius only: close
to the iteration on the whole padded grid (RELION's way, written out here) and the same where the
radius needs the whole grid; the blob's transform per distinct radius equal to the formula voxel
by voxel; the transform size the smallest even one without wrap-around of the blob."""
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


@pytest.mark.parametrize("size,radius", [(64, 10.0), (96, 20.5), (96, 47.0)])
def test_weights_on_the_current_radius_equal_the_whole_grid_iteration(size, radius):
    """A density like a back-projection's (falling as 1 / |q|, 5 % of the voxels empty) inside
    ``radius``: v within 1 % in norm (measured 0.4 %, 0.2 % median, 4 % at worst: the blob's
    transform, cut off at the grid's Nyquist, has a tail that wraps on a smaller grid); at
    radius 47 of 96 the grid is the whole one and v is the same to rounding."""
    rng = np.random.default_rng(int(radius))
    r = half_transform_radius(size)
    inside = r < radius
    k = 50.0 / np.maximum(r, 1.0) * rng.gamma(2.0, 0.5, r.shape)
    k[rng.random(r.shape) < 0.05] = 0.0
    k += 0.01
    v = gridding.gridding_weights(k, inside, size // 2, 2)
    ref = _whole_grid(k, inside)
    n = gridding.convolution_size(size, float(r[inside].max()))
    assert np.all(v[~inside] == 0.0)
    assert np.linalg.norm((v - ref)[inside]) < 0.01 * np.linalg.norm(ref[inside])
    np.testing.assert_allclose(v[inside], ref[inside], rtol=0.1)
    if n == size:
        np.testing.assert_allclose(v, ref, rtol=1e-12, atol=0)
    else:
        assert n < size
    # the weights are not 1 / K: the gridding is doing its work here
    assert np.abs(v[inside] * k[inside] - 1.0).max() > 0.05


@pytest.mark.parametrize("n", [30, 96, 101])
def test_radial_kernel_is_the_formula_voxel_by_voxel(n):
    k = np.fft.fftfreq(n) * n
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    np.testing.assert_allclose(gridding._blob_kernel(n), gridding.blob_transform(r / n),
                               rtol=1e-12)


@pytest.mark.parametrize("radius", [0.0, 5.0, 19.6, 40.0, 95.0])
def test_convolution_size_is_the_smallest_even_without_wrap_around(radius):
    n = gridding.convolution_size(192, radius)
    need = 2 * (radius + gridding.BLOB_RADIUS) + 1
    assert n % 2 == 0 and n <= 192
    assert n >= need or n == 192
    assert n == 192 or scipy.fft.next_fast_len(int(np.ceil(need)), real=True) <= n
