"""Iterative gridding weights for the M-step division (Pipe & Menon 1999, eq. 14; Matej 2001,
eq. 4), as RELION's BackProjector::reconstruct computes them by default.

Trilinear back-projection leaves K (+ tau^-2) as a sampling density on the padded grid; instead of
dividing by it voxel by voxel, RELION finds weights v with (v (K + tau^-2)) * b ~ 1 inside the
current radius, * b being convolution with a Kaiser-Bessel blob (radius 1.9 voxels, order 0,
alpha 15), by the fixed-point iteration v <- v / |(v (K + tau^-2)) * b| from v = 1, done through
real space (multiplication by the blob's transform). The estimate is then (B + tau^-2 m) v.
Where the data are dense this equals 1 / (K + tau^-2); where they are sparse it smooths the
density and keeps isolated, barely sampled voxels from dominating the map.

The convolution runs on the smallest transform grid that holds it without wrap-around of the
blob: the frequencies within the current radius R plus the blob's reach, n >= 2 (R + 1.9) + 1,
not the whole padded grid (RELION's size; at R near the padded Nyquist both are the same). The
blob's transform is cut off at the grid's Nyquist, so the kernel it stands for has a weak tail
(-4e-4 of the centre 10 voxels out) that wraps differently on the smaller grid: v moves by
0.1-0.4 % in norm (tested), the map by 1e-4 inside the particle and 0.3 % over the box, and its
distance to relion_external_reconstruct's from 1.41 to 1.41 % (5.45 to 5.53 % over the box).
The cost falls with (n / padded size)^3 (BENCHMARKS.md, "Gridding on the current radius").
"""
import functools

import numpy as np
import scipy.fft
from scipy.special import iv, jv

from ..fourier import crop_index, half_transform_radius

BLOB_RADIUS, BLOB_ALPHA = 1.9, 15.0
ITERATIONS = 10
MIN_CONV = 1e-6          # RELION's floor on |(v w) * b|


def blob_transform(w, radius=BLOB_RADIUS, alpha=BLOB_ALPHA):
    """3-D transform of the order-0 Kaiser-Bessel blob at frequency ``w`` (cycles per voxel),
    normalised to 1 at w = 0: I_1.5(s) / s^1.5 (J_1.5 once 2 pi a w > alpha),
    s = sqrt(|alpha^2 - (2 pi a w)^2|)."""
    x = 2.0 * np.pi * radius * np.asarray(w, dtype=np.float64)
    s = np.maximum(np.sqrt(np.abs(alpha ** 2 - x ** 2)), 1e-8)
    val = np.where(x > alpha, jv(1.5, s), iv(1.5, s)) / s ** 1.5
    return val / (iv(1.5, alpha) / alpha ** 1.5)


@functools.lru_cache(maxsize=8)
def _blob_kernel(size):
    """The blob's transform on the full size^3 real-space grid of a size^3 transform grid,
    B(|x| / size) (read-only, cached: a refinement divides on the same few grids every
    iteration). The Bessel functions run once per distinct |x|^2, not per voxel."""
    k = np.r_[0:(size + 1) // 2, -(size // 2):0]          # fftfreq(size) * size, as integers
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    kernel = blob_transform(np.sqrt(np.arange(r2.max() + 1)) / size)[r2]
    kernel.flags.writeable = False
    return kernel


def convolution_size(size, radius):
    """The even transform size (at most ``size``) that holds frequencies below ``radius`` voxels
    convolved with the blob without wrap-around."""
    need = int(np.ceil(2.0 * (radius + BLOB_RADIUS))) + 1
    n = scipy.fft.next_fast_len(need + need % 2, real=True)
    while n % 2:
        n = scipy.fft.next_fast_len(n + 1, real=True)
    return min(size, n)


def gridding_weights(weight, inside, ori, pad, iterations=ITERATIONS):
    """Weights v on the half grid (0 outside ``inside``) for K + tau^-2 = ``weight``; the
    iteration runs on :func:`convolution_size` of ``inside``'s radius."""
    size = weight.shape[0]
    radius = float(half_transform_radius(size)[inside].max()) if inside.any() else 0.0
    n = convolution_size(size, radius)
    idx = crop_index(size, n)
    cut = np.ix_(idx, idx, np.arange(n // 2 + 1))
    kernel = _blob_kernel(n)
    on = inside[cut]
    w = np.where(on, weight[cut], 0.0)
    v = on.astype(np.float64)
    for _ in range(iterations):
        # scipy's transforms: the same sums, ~4x numpy's speed
        conv = scipy.fft.rfftn(scipy.fft.irfftn(v * w, s=(n,) * 3) * kernel)
        v = np.where(on, v / np.maximum(np.abs(conv), MIN_CONV), 0.0)
    if n == size:
        return v
    out = np.zeros(weight.shape)
    out[cut] = v
    return out
