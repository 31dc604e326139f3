"""numba implementation of the backend kernels (parallel over particles, cached compilation).

Same layout and results as :mod:`.numpy_backend` (float tolerance).
"""
import numba
import numpy as np

NAME = "numba"


@numba.njit(cache=True, inline="always")
def _weights(t, w, dw):
    """Catmull-Rom weights and derivatives for fraction t (see numpy_backend.catmull_rom_weights)."""
    t2 = t * t
    t3 = t2 * t
    w[0] = (-t3 + 2 * t2 - t) / 2
    w[1] = (3 * t3 - 5 * t2 + 2) / 2
    w[2] = (-3 * t3 + 4 * t2 + t) / 2
    w[3] = (t3 - t2) / 2
    dw[0] = (-3 * t2 + 4 * t - 1) / 2
    dw[1] = (9 * t2 - 10 * t) / 2
    dw[2] = (-9 * t2 + 8 * t + 1) / 2
    dw[3] = (3 * t2 - 2 * t) / 2


@numba.njit(cache=True, parallel=True)
def _cc_interp(cc_maps, pos, val, grad):
    P, F, W = cc_maps.shape[0], cc_maps.shape[1], cc_maps.shape[2]
    half = W // 2
    for p in numba.prange(P):
        wx = np.empty(4)
        dwx = np.empty(4)
        wy = np.empty(4)
        dwy = np.empty(4)
        for f in range(F):
            u = pos[p, f, 0] + half
            v = pos[p, f, 1] + half
            x0 = np.floor(u)
            y0 = np.floor(v)
            _weights(u - x0, wx, dwx)
            _weights(v - y0, wy, dwy)
            xi = int(x0) - 1
            yi = int(y0) - 1
            s = 0.0
            sx = 0.0
            sy = 0.0
            for i in range(4):
                row = (yi + i) % W
                r = 0.0
                rx = 0.0
                for j in range(4):
                    c = cc_maps[p, f, row, (xi + j) % W]
                    r += wx[j] * c
                    rx += dwx[j] * c
                s += wy[i] * r
                sx += wy[i] * rx
                sy += dwy[i] * r
            val[p, f] = s
            grad[p, f, 0] = sx
            grad[p, f, 1] = sy


def cc_interp(cc_maps, positions):
    """Bicubic (Catmull-Rom) CC_{p,f}(s_{p,f}) and gradient (eq. 16 at fractional s); see
    :func:`polishplugin.backends.numpy_backend.cc_interp`."""
    cc_maps = np.ascontiguousarray(cc_maps)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    P, F = cc_maps.shape[:2]
    val = np.empty((P, F))
    grad = np.empty((P, F, 2))
    _cc_interp(cc_maps, pos, val, grad)
    return val, grad
