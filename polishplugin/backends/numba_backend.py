"""numba implementation of the backend kernels (parallel over particles or points, cached
compilation).

Same layout and results as :mod:`.numpy_backend` (float tolerance). The spectra kernels but
``fcc_pixel_sums``, the recombination and the E-step scores are numpy's (FFT- and BLAS-bound: a
loop is not faster; a numba loop kernel for ``estep_scores``, four translations per pass over a
projection, ran 0.55x the speed of the BLAS product at box 96, BENCHMARKS.md).
"""
import numba
import numpy as np

from .numpy_backend import (cc_windows, estep_scores, patch_spectra,  # noqa: F401
                            power_sums)
from .numpy_backend import check_half_grid

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


@numba.njit(cache=True, inline="always")
def _cc_interp_particle(cc_maps, pos, val, grad, p, wx, dwx, wy, dwy):
    F, W = cc_maps.shape[1], cc_maps.shape[2]
    half = W // 2
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


@numba.njit(cache=True, parallel=True)
def _cc_interp(cc_maps, pos, val, grad):
    for p in numba.prange(cc_maps.shape[0]):
        _cc_interp_particle(cc_maps, pos, val, grad, p, np.empty(4), np.empty(4), np.empty(4),
                            np.empty(4))


@numba.njit(cache=True)
def _cc_interp_serial(cc_maps, pos, val, grad):
    wx, dwx, wy, dwy = np.empty(4), np.empty(4), np.empty(4), np.empty(4)
    for p in range(cc_maps.shape[0]):
        _cc_interp_particle(cc_maps, pos, val, grad, p, wx, dwx, wy, dwy)


def load_serial_kernels():
    """Load the fit's serial kernel from numba's cache, which starts numba's compiler (~0.5 s),
    without starting numba's threads: for a program that forks worker processes afterwards (a
    process forked once the threads run dies at its first parallel kernel), so that they share
    what was loaded instead of each loading it."""
    _cc_interp_serial(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 2)), np.empty((1, 1)),
                      np.empty((1, 1, 2)))


# below this many particle-frames one call takes microseconds and waking the thread pool (once
# per L-BFGS iteration) costs more than it saves
PARALLEL_MIN = 20000


def cc_interp(cc_maps, positions):
    """Bicubic (Catmull-Rom) CC_{p,f}(s_{p,f}) and gradient (eq. 16 at fractional s); see
    :func:`polishplugin.backends.numpy_backend.cc_interp`."""
    cc_maps = np.ascontiguousarray(cc_maps)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    P, F = cc_maps.shape[:2]
    val = np.empty((P, F))
    grad = np.empty((P, F, 2))
    kernel = _cc_interp if P * F >= PARALLEL_MIN and numba.get_num_threads() > 1 \
        else _cc_interp_serial
    kernel(cc_maps, pos, val, grad)
    return val, grad


@numba.njit(cache=True, parallel=True)
def _interp_trilinear(vol, coords, out):
    nz, ny, nx = vol.shape
    for m in numba.prange(coords.shape[1]):
        z, y, x = coords[0, m], coords[1, m], coords[2, m]
        z0, y0, x0 = np.floor(z), np.floor(y), np.floor(x)
        tz, ty, tx = z - z0, y - y0, x - x0
        iz, iy, ix = int(z0) % nz, int(y0) % ny, int(x0) % nx
        jz, jy, jx = (iz + 1) % nz, (iy + 1) % ny, (ix + 1) % nx
        a = vol[iz, iy, ix] * (1 - tx) + vol[iz, iy, jx] * tx
        b = vol[iz, jy, ix] * (1 - tx) + vol[iz, jy, jx] * tx
        c = vol[jz, iy, ix] * (1 - tx) + vol[jz, iy, jx] * tx
        d = vol[jz, jy, ix] * (1 - tx) + vol[jz, jy, jx] * tx
        out[m] = (a * (1 - ty) + b * ty) * (1 - tz) + (c * (1 - ty) + d * ty) * tz


def interp_trilinear(volume, coords):
    """Periodic trilinear interpolation; see
    :func:`polishplugin.backends.numpy_backend.interp_trilinear`."""
    volume = np.ascontiguousarray(volume)
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    out = np.empty(coords.shape[1], dtype=volume.dtype)
    _interp_trilinear(volume, coords, out)
    return out


@numba.njit(cache=True, parallel=True)
def _ring_correlation(q, scale, offset, kx, ky, tracks, box, kmax):
    P, F, M = q.shape[0], q.shape[1], q.shape[2]
    w = 2.0 * np.pi / box
    partial = np.zeros(P)
    for p in numba.prange(P):
        ex_re = np.empty(2 * kmax + 1)
        ex_im = np.empty(2 * kmax + 1)
        ey_re = np.empty(2 * kmax + 1)
        ey_im = np.empty(2 * kmax + 1)
        acc = 0.0
        for f in range(F):
            for j in range(2 * kmax + 1):
                ax = w * tracks[p, f, 0] * (j - kmax)
                ay = w * tracks[p, f, 1] * (j - kmax)
                ex_re[j], ex_im[j] = np.cos(ax), np.sin(ax)
                ey_re[j], ey_im[j] = np.cos(ay), np.sin(ay)
            s, o = np.float64(scale[p, f]), np.float64(offset[p, f])
            row = 0.0
            for m in range(M):
                a = kx[m] + kmax
                b = ky[m] + kmax
                c_re = ex_re[a] * ey_re[b] - ex_im[a] * ey_im[b]
                c_im = ex_re[a] * ey_im[b] + ex_im[a] * ey_re[b]
                row += (q[p, f, m, 0] * s + o) * c_re - (q[p, f, m, 1] * s + o) * c_im
            acc += row
        partial[p] = acc
    return partial.sum()


def ring_correlation(q, scale, offset, kx, ky, tracks, box):
    """TCC numerator over stored ring products; see
    :func:`polishplugin.backends.numpy_backend.ring_correlation`."""
    kx = np.ascontiguousarray(kx, dtype=np.int64)
    ky = np.ascontiguousarray(ky, dtype=np.int64)
    kmax = int(max(np.abs(kx).max(), np.abs(ky).max()))
    return float(_ring_correlation(np.ascontiguousarray(q), np.ascontiguousarray(scale),
                                   np.ascontiguousarray(offset),
                                   kx, ky, np.ascontiguousarray(tracks, dtype=np.float64),
                                   float(box), kmax))


@numba.njit(cache=True, nogil=True)
def _fcc_pixel_sums(x, v, ey, ex, out):
    P, F, n, nh = x.shape
    for f in range(F):
        for ky in range(n):
            row = out[f, ky]                  # stays in cache over the particles
            for p in range(P):
                ar, ai = ey[p, f, ky].real, ey[p, f, ky].imag
                for kx in range(nh):
                    e = ex[p, f, kx]
                    cr = ar * e.real - ai * e.imag            # ey ex
                    ci = ar * e.imag + ai * e.real
                    xx = x[p, f, ky, kx]
                    vv = v[p, ky, kx]
                    zr = xx.real * vv.real + xx.imag * vv.imag   # X conj(V)
                    zi = xx.imag * vv.real - xx.real * vv.imag
                    row[kx] += zr * cr - zi * ci


def fcc_pixel_sums(spectra, predictions, ey, ex):
    """FCC numerator per half-plane pixel, (F, n, nh) float64: one pass over the spectra, the
    phases ey ex and the conjugated prediction multiplied per pixel in the spectra's precision
    (no per-particle complex planes), summed over particles in float64; serial and without the
    GIL (threads over particle blocks: :mod:`.threads`). See
    :func:`polishplugin.backends.numpy_backend.fcc_pixel_sums`."""
    x = np.ascontiguousarray(np.asarray(spectra))
    cdt = x.dtype
    P, F, n, nh = x.shape
    out = np.zeros((F, n, nh))
    _fcc_pixel_sums(x, np.ascontiguousarray(predictions, dtype=cdt),
                    np.ascontiguousarray(ey, dtype=cdt), np.ascontiguousarray(ex, dtype=cdt), out)
    return out


# --- refinement kernels ----------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _wrap(i, n):
    """i mod n, without the division when 0 <= i < n (nearly always)."""
    return i if 0 <= i < n else i % n


@numba.njit(cache=True, inline="always")
def _lerp_x(vol, z, y, ix, jx, sx, tx):
    """(real, imag) of vol[z, y, ix] * sx + vol[z, y, jx] * tx in float64, the two parts apart
    (a complex product with a zero imaginary part would cost twice the multiplications)."""
    p0, p1 = vol[z, y, ix], vol[z, y, jx]
    return (np.float64(p0.real) * sx + np.float64(p1.real) * tx,
            np.float64(p0.imag) * sx + np.float64(p1.imag) * tx)


@numba.njit(cache=True, parallel=True)
def _slice_extract(vol, rots, kxy, scale, origin, half, out):
    nz, ny, nx = vol.shape
    O, M = out.shape
    for task in numba.prange(O * ((M + 255) // 256)):       # (orientation, block of pixels)
        o = task // ((M + 255) // 256)
        m0 = (task % ((M + 255) // 256)) * 256
        for m in range(m0, min(M, m0 + 256)):
            kx, ky = kxy[m, 0], kxy[m, 1]
            u = kx * rots[o, 0, 0] + ky * rots[o, 1, 0]
            v = kx * rots[o, 0, 1] + ky * rots[o, 1, 1]
            w = kx * rots[o, 0, 2] + ky * rots[o, 1, 2]
            mate = half and u < 0      # x < 0 of a half transform: read at -q, conjugated
            if mate:
                u, v, w = -u, -v, -w
            x = origin + scale * u
            y = origin + scale * v
            z = origin + scale * w
            z0, y0, x0 = np.floor(z), np.floor(y), np.floor(x)
            tz, ty, tx = z - z0, y - y0, x - x0
            iz, iy, ix = _wrap(int(z0), nz), _wrap(int(y0), ny), _wrap(int(x0), nx)
            jz, jy, jx = _wrap(iz + 1, nz), _wrap(iy + 1, ny), _wrap(ix + 1, nx)
            # complex values times real weights, real and imaginary parts apart (_lerp_x)
            sx, sy, sz = 1 - tx, 1 - ty, 1 - tz
            ar, ai = _lerp_x(vol, iz, iy, ix, jx, sx, tx)
            br, bi = _lerp_x(vol, iz, jy, ix, jx, sx, tx)
            cr, ci = _lerp_x(vol, jz, iy, ix, jx, sx, tx)
            dr, di = _lerp_x(vol, jz, jy, ix, jx, sx, tx)
            vr = (ar * sy + br * ty) * sz + (cr * sy + dr * ty) * tz
            vi = (ai * sy + bi * ty) * sz + (ci * sy + di * ty) * tz
            out[o, m] = complex(vr, -vi if mate else vi)


def slice_extract(volume, rots, kxy, scale, origin, half=False):
    """Fourier slices by trilinear interpolation (parallel over orientations and pixel blocks);
    see :func:`polishplugin.backends.numpy_backend.slice_extract`."""
    rots = np.ascontiguousarray(rots, dtype=np.float64)
    kxy = np.ascontiguousarray(kxy, dtype=np.float64)
    out = np.empty((len(rots), len(kxy)), dtype=np.complex128)
    _slice_extract(np.ascontiguousarray(volume), rots, kxy, float(scale), float(origin),
                   bool(half), out)
    return out


@numba.njit(cache=True, parallel=True)
def _backproject(data, weight, rots, kxy, values, weights, scale):
    s = data.shape[0]
    B, M = values.shape
    P = B * M
    q = np.empty((P, 3))
    v = np.empty(P, dtype=np.complex128)
    plane = np.empty(P, dtype=np.int64)
    for b in numba.prange(B):                 # slice coordinates, Friedel-flipped to x >= 0
        for m in range(M):
            kx, ky = kxy[m, 0], kxy[m, 1]
            x = scale * (kx * rots[b, 0, 0] + ky * rots[b, 1, 0])
            y = scale * (kx * rots[b, 0, 1] + ky * rots[b, 1, 1])
            z = scale * (kx * rots[b, 0, 2] + ky * rots[b, 1, 2])
            p = b * M + m
            if x < 0:
                x, y, z = -x, -y, -z
                v[p] = np.conj(values[b, m])
            else:
                v[p] = values[b, m]
            q[p, 0], q[p, 1], q[p, 2] = x, y, z
            plane[p] = int(np.floor(z)) % s
    # bucket the points by their lower z plane (counting sort, copying them into bucket order so
    # that the spreading reads memory in sequence): plane z gets the dz = 0 part of bucket z and
    # the dz = 1 part of bucket z - 1, so each output plane is written by one thread
    start = np.zeros(s + 1, dtype=np.int64)
    for p in range(P):
        start[plane[p] + 1] += 1
    for z in range(s):
        start[z + 1] += start[z]
    fill = start[:s].copy()
    sq = np.empty((P, 3))
    sv = np.empty(P, dtype=np.complex128)
    sw = np.empty(P)
    for p in range(P):
        k = fill[plane[p]]
        fill[plane[p]] += 1
        sq[k, 0], sq[k, 1], sq[k, 2] = q[p, 0], q[p, 1], q[p, 2]
        sv[k] = v[p]
        sw[k] = weights[p // M, p % M]
    for z in numba.prange(s):
        for dz in range(2):
            src = (z - dz) % s
            for k in range(start[src], start[src + 1]):
                x, y, zz = sq[k, 0], sq[k, 1], sq[k, 2]
                fx, fy = np.floor(x), np.floor(y)
                tx, ty = x - fx, y - fy
                tz = zz - np.floor(zz)
                wz = tz if dz == 1 else 1.0 - tz
                ix = int(fx)
                val, w = sv[k], sw[k]
                for dy in range(2):
                    iy = (int(fy) + dy) % s
                    wzy = wz * (ty if dy == 1 else 1.0 - ty)
                    t0 = wzy * (1.0 - tx)
                    t1 = wzy * tx
                    data[z, iy, ix] += t0 * val
                    weight[z, iy, ix] += t0 * w
                    data[z, iy, ix + 1] += t1 * val
                    weight[z, iy, ix + 1] += t1 * w


def backproject_slices(data, weight, rots, kxy, values, weights, scale):
    """Trilinear spreading into the half grid, in place (each z plane written by one thread);
    see :func:`polishplugin.backends.numpy_backend.backproject_slices`."""
    check_half_grid(data, weight, kxy, scale)
    _backproject(data, weight, np.ascontiguousarray(rots, dtype=np.float64),
                 np.ascontiguousarray(kxy, dtype=np.float64),
                 np.ascontiguousarray(values, dtype=np.complex128),
                 np.ascontiguousarray(weights, dtype=np.float64), float(scale))
