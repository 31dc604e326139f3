"""Reference (numpy) implementation of the backend kernels.

CC-map layout shared by all backends: ``cc_maps`` (P, F, W, W) holds, for particle p and frame f,
CC_{p,f} on a window of integer shifts, row = y, column = x, with the zero shift at index W//2;
positions (P, F, 2) are (x, y) shifts in pixels. Interpolation wraps periodically (indices modulo
W), as RELION's ``Interpolation::cubicXY(..., wrap=true)`` does on its full CC maps.
"""
import numpy as np
from scipy import ndimage

NAME = "numpy"


def interp_trilinear(volume, coords):
    """Trilinear interpolation of a complex ``volume`` (nz, ny, nx) at array coordinates
    ``coords`` (3, M) = (z, y, x), periodic (indices modulo the size, ndimage "grid-wrap");
    returns (M,) values of the volume's dtype. Used for the Fourier slices of
    :class:`polishplugin.core.projector.Projector`."""
    return ndimage.map_coordinates(volume, coords, order=1, mode="grid-wrap")


def catmull_rom_weights(t):
    """Catmull-Rom weights of the 4 samples at offsets -1, 0, 1, 2 for fraction t in [0, 1),
    and their derivatives d/dt; returns two arrays (..., 4)."""
    t2 = t * t
    t3 = t2 * t
    w = np.stack([(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2,
                  (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2], axis=-1)
    dw = np.stack([(-3 * t2 + 4 * t - 1) / 2, (9 * t2 - 10 * t) / 2,
                   (-9 * t2 + 8 * t + 1) / 2, (3 * t2 - 2 * t) / 2], axis=-1)
    return w, dw


def cc_interp(cc_maps, positions):
    """Bicubic (Catmull-Rom) CC_{p,f}(s_{p,f}) and its gradient d/ds (eq. 16 at fractional s).

    Returns values (P, F) and grad (P, F, 2) = (dCC/dx, dCC/dy), float64.
    """
    cc_maps = np.asarray(cc_maps)
    pos = np.asarray(positions, dtype=np.float64)
    P, F, W = cc_maps.shape[:3]
    half = W // 2
    u = pos[..., 0] + half
    v = pos[..., 1] + half
    x0 = np.floor(u)
    y0 = np.floor(v)
    wx, dwx = catmull_rom_weights(u - x0)
    wy, dwy = catmull_rom_weights(v - y0)
    offs = np.arange(-1, 3)
    ix = (x0.astype(np.int64)[..., None] + offs) % W            # (P, F, 4)
    iy = (y0.astype(np.int64)[..., None] + offs) % W
    pi = np.arange(P)[:, None, None, None]
    fi = np.arange(F)[None, :, None, None]
    patch = cc_maps[pi, fi, iy[..., :, None], ix[..., None, :]].astype(np.float64)  # (P,F,4,4)
    val = np.einsum("pfi,pfij,pfj->pf", wy, patch, wx)
    gx = np.einsum("pfi,pfij,pfj->pf", wy, patch, dwx)
    gy = np.einsum("pfi,pfij,pfj->pf", dwy, patch, wx)
    return val, np.stack([gx, gy], axis=-1)
