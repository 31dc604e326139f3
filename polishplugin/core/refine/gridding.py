"""Iterative gridding weights for the M-step division (Pipe & Menon 1999, eq. 14; Matej 2001,
eq. 4), as RELION's BackProjector::reconstruct computes them by default.

Trilinear back-projection leaves K (+ tau^-2) as a sampling density on the padded grid; instead of
dividing by it voxel by voxel, RELION finds weights v with (v (K + tau^-2)) * b ~ 1 inside the
current radius, * b being convolution with a Kaiser-Bessel blob (radius 1.9 voxels, order 0,
alpha 15), by the fixed-point iteration v <- v / |(v (K + tau^-2)) * b| from v = 1, done through
real space (multiplication by the blob's transform). The estimate is then (B + tau^-2 m) v.
Where the data are dense this equals 1 / (K + tau^-2); where they are sparse it smooths the
density and keeps isolated, barely sampled voxels from dominating the map.

The blob's transform on the padded grid is radial: its Bessel functions are evaluated once per
distinct radius (a refinement used to spend ~10 s on them at box 96 with padding 2). The
iteration runs in single precision (v to ~1e-6 of the double-precision iteration, 1.8x faster
on the 192^3 grid of box 96: BENCHMARKS.md, "The U-Net in bfloat16").
"""
import functools

import numpy as np
import scipy.fft
from scipy.special import iv, jv

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
    B(|x| / size), float32 (read-only, cached: a refinement divides on the same few grids every
    iteration). The Bessel functions run once per distinct |x|^2, not per voxel."""
    k = np.r_[0:(size + 1) // 2, -(size // 2):0]          # fftfreq(size) * size, as integers
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    kernel = blob_transform(np.sqrt(np.arange(r2.max() + 1)) / size)[r2].astype(np.float32)
    kernel.flags.writeable = False
    return kernel


def gridding_weights(weight, inside, iterations=ITERATIONS):
    """Weights v (float64) on the half grid (0 outside ``inside``) for K + tau^-2 = ``weight``,
    iterated in float32; the blob's scale is the grid's size (padding x box)."""
    size = weight.shape[0]
    kernel = _blob_kernel(size)
    w = np.where(inside, weight, 0.0).astype(np.float32)
    v = inside.astype(np.float32)
    floor, zero = np.float32(MIN_CONV), np.float32(0.0)
    for _ in range(iterations):
        # scipy's transforms (single precision for float32 input), ~4x numpy's speed
        conv = scipy.fft.rfftn(scipy.fft.irfftn(v * w, s=(size,) * 3) * kernel)
        v = np.where(inside, v / np.maximum(np.abs(conv), floor), zero)
    return v.astype(np.float64)
