"""Reference (numpy) implementation of the backend kernels.

CC-map layout shared by all backends: ``cc_maps`` (P, F, W, W) holds, for particle p and frame f,
CC_{p,f} on a window of integer shifts, row = y, column = x, with the zero shift at index W//2;
positions (P, F, 2) are (x, y) shifts in pixels. Interpolation wraps periodically (indices modulo
W), as RELION's ``Interpolation::cubicXY(..., wrap=true)`` does on its full CC maps.

Spectra layout: ``patch_spectra`` returns the rfft2 half-planes (P, F, n, nh), nh = n//2 + 1, of
a micrograph's patches; the other spectra kernels take what it returned (here the array itself;
OpenCL keeps them on the device).
"""
import numpy as np

from ..core.motion.observation import patch_spectra  # noqa: F401  (host rfft2, scipy.fft)

NAME = "numpy"


def interp_trilinear(volume, coords):
    """Trilinear interpolation of a complex ``volume`` (nz, ny, nx) at array coordinates
    ``coords`` (3, M) = (z, y, x), periodic (indices modulo the size, ndimage "grid-wrap");
    returns (M,) values of the volume's dtype. Used for the Fourier slices of
    :class:`polishplugin.core.projector.Projector` (scipy.ndimage imported here: the numba and
    OpenCL backends, which import this module, do not use it)."""
    from scipy import ndimage
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


_RING_CHUNK = 1 << 22   # particle-frame-pixels per vectorised chunk of ring_correlation


def ring_correlation(q, scale, offset, kx, ky, tracks, box):
    """Numerator of the TCC (eq. 19 of Zivanov 2019) over stored evaluation-ring products:
    sum_{p,f,m} Re[Z_pfm exp(2 pi i (kx_m s_pf,x + ky_m s_pf,y) / box)], float64.

    Z = offset_pf (1 + i) + scale_pf (q_pfm0 + i q_pfm1) are the products w X V* in block
    floating point (:mod:`polishplugin.core.motion.compact`): q (P, F, M, 2) integers, scale and
    offset (P, F) float32; kx, ky (M,) integer frequencies in px of the box; tracks (P, F, 2)
    (x, y) shifts in px. The phase is separable, so it is gathered from 1-D tables per (p, f).
    """
    p, f, m = q.shape[:3]
    kmax = int(max(np.abs(kx).max(), np.abs(ky).max()))
    freqs = np.arange(-kmax, kmax + 1, dtype=np.float64)
    ix, iy = kx + kmax, ky + kmax
    w = 2.0 * np.pi / box
    num = 0.0
    step = max(1, _RING_CHUNK // max(1, f * m))
    for p0 in range(0, p, step):
        s = tracks[p0:p0 + step]
        ex = np.exp(1j * w * s[..., 0, None] * freqs).astype(np.complex64)
        ey = np.exp(1j * w * s[..., 1, None] * freqs).astype(np.complex64)
        parts = q[p0:p0 + step].astype(np.float32) * scale[p0:p0 + step, :, None, None] \
            + offset[p0:p0 + step, :, None, None]
        prod = parts[..., 0].astype(np.complex64)
        prod.imag = parts[..., 1]
        prod *= ex[..., ix]
        prod *= ey[..., iy]
        num += prod.real.sum(dtype=np.float64)
    return float(num)


def power_sums(spectra):
    """Sum over particles of |X_pf(k)|^2 on the half-plane: (F, n, nh) float64 (the ring power
    of :func:`polishplugin.core.motion.observation.ring_power` before binning)."""
    P, F = spectra.shape[:2]
    total = np.zeros((F,) + spectra.shape[2:])
    for p in range(P):
        x = spectra[p]
        total += x.real ** 2 + x.imag ** 2
    return total


def cc_windows(spectra, weights, damage, ey, ex):
    """CC windows (P, F, W, W) of eq. 15-16 (the spectra's real type) as two small DFT products,
    Re[ey (X_pf D_f w_p) ex], in the spectra's precision: weights (P, n, nh) complex (conjugated,
    whitened predictions), damage (F, n, nh) real or None, ey (W, n) and ex (nh, W) the
    inverse-DFT rows and Hermitian columns
    (:func:`polishplugin.core.motion.observation.cc_maps_from_spectra`).

    Per particle: the ky sums C_f = ey (X_pf D_f w_p), then only the real part of the kx sums,
    Re(C_f) Re(ex) - Im(C_f) Im(ex), as one real product (F W, 2 nh) @ (2 nh, W) of C viewed as
    interleaved reals (the frames folded into its rows)."""
    P, F, n, nh = spectra.shape
    W = ey.shape[0]
    rdt = np.finfo(spectra.dtype).dtype
    out = np.empty((P, F, W, W), dtype=rdt)
    cols = np.empty((nh, 2, W), dtype=rdt)          # rows (Re, Im) of C's interleaved reals
    cols[:, 0] = ex.real
    cols[:, 1] = -ex.imag
    cols = cols.reshape(2 * nh, W)
    prod = np.empty((F, n, nh), dtype=spectra.dtype)
    c = np.empty((F, W, nh), dtype=spectra.dtype)
    for p in range(P):
        np.multiply(spectra[p], weights[p], out=prod)
        if damage is not None:
            prod *= damage
        np.matmul(ey, prod, out=c)
        np.matmul(c.view(rdt).reshape(F * W, 2 * nh), cols, out=out[p].reshape(F * W, W))
    return out


def fcc_pixel_sums(spectra, predictions, ey, ex):
    """Sum over particles of Re[X_pf(k) conj(V_p(k)) ey_pf(ky) ex_pf(kx)] on the half-plane:
    (F, n, nh) float64, the FCC numerator (eq. 20) before binning; predictions (P, n, nh) complex,
    ey (P, F, n) and ex (P, F, nh) the shift phases
    (:func:`polishplugin.core.motion.micrograph.fcc_from_spectra`), in the spectra's precision."""
    P, F = spectra.shape[:2]
    cdt = spectra.dtype
    num = np.zeros((F,) + spectra.shape[2:])
    for p in range(P):
        prod = spectra[p] * np.conj(predictions[p]).astype(cdt)
        prod *= ey[p, :, :, None].astype(cdt)
        prod *= ex[p, :, None, :].astype(cdt)
        num += prod.real
    return num


# --- refinement kernels (Fourier-slice projection, back-projection, E-step scoring) ---------

_POINTS = 1 << 20     # slice points (orientations x pixels) per vectorised block


def slice_coords(rots, kxy, scale):
    """Grid coordinates (x, y, z) = scale (kx A_0 + ky A_1) of pixels ``kxy`` (M, 2) on the
    central slices of rotations ``rots`` (O, 3, 3) (the rows A_0, A_1 of RELION's matrix A):
    returns (O, M, 3)."""
    return scale * np.einsum("mj,ojc->omc", np.asarray(kxy, dtype=np.float64),
                             np.asarray(rots, dtype=np.float64)[:, :2, :])


def check_half_grid(data, weight, kxy, scale):
    """ValueError unless data and weight are C-contiguous (s, s, s//2 + 1) grids (accumulated in
    place) and every slice point scale |k| lies inside the grid's sphere (radius s/2)."""
    s = data.shape[0]
    if data.shape != (s, s, s // 2 + 1) or weight.shape != data.shape:
        raise ValueError("data %s and weight %s must both be (s, s, s//2 + 1)"
                         % (data.shape, weight.shape))
    if not (data.flags.c_contiguous and weight.flags.c_contiguous):
        raise ValueError("data and weight are accumulated in place: they must be C-contiguous")
    r = scale * np.sqrt(np.max(np.sum(np.square(kxy), axis=1), initial=0.0))
    if r >= s / 2:
        raise ValueError("slice radius %g voxels reaches the edge of the %d grid" % (r, s))


def _slice_extract_via(interp, volume, rots, kxy, scale, origin, half=False):
    """:func:`slice_extract` through a ``interp_trilinear`` kernel, in blocks of orientations."""
    rots = np.asarray(rots, dtype=np.float64)
    M = len(kxy)
    out = np.empty((len(rots), M), dtype=np.complex128)
    step = max(1, _POINTS // max(M, 1))
    for o0 in range(0, len(rots), step):
        q = slice_coords(rots[o0:o0 + step], kxy, scale)               # (b, M, 3) x, y, z
        flip = q[..., 0] < 0 if half else None
        if half:
            q[flip] *= -1.0
        coords = np.ascontiguousarray((q + origin).reshape(-1, 3)[:, ::-1].T)  # (3, b M) z, y, x
        v = interp(volume, coords).reshape(-1, M)
        out[o0:o0 + step] = np.where(flip, np.conj(v), v) if half else v
    return out


def slice_extract(volume, rots, kxy, scale, origin, half=False):
    """Fourier slices of a full periodic 3D transform ``volume`` (nz, ny, nx), array order (z, y,
    x), by trilinear interpolation at ``origin + scale (kx A_0 + ky A_1)`` (central-slice theorem,
    :mod:`polishplugin.core.geometry`): rots (O, 3, 3), kxy (M, 2) frequencies (kx, ky); returns
    (O, M) complex128. The projection operator of :class:`polishplugin.core.projector.Projector`.
    ``half``: ``volume`` holds a real map's transform at x >= 0 only: a point whose rotated x is
    negative is read at its Friedel mate -q and conjugated (F(-q) = conj F(q))."""
    return _slice_extract_via(interp_trilinear, volume, rots, kxy, scale, origin, half)


def backproject_slices(data, weight, rots, kxy, values, weights, scale):
    """Spread 2D Fourier values into a half 3D grid (in place), the adjoint of slice extraction:
    pixel m of slice b sits at q = scale (kx A_0 + ky A_1) of rots[b]; where q_x < 0 it is moved
    to -q with its conjugate value (Friedel mate, the grid holds x >= 0 only); each of the 8
    neighbours g of q gets t_g values[b, m] in ``data`` and t_g weights[b, m] in ``weight``
    (trilinear t, z and y periodic, origin at index 0).

    data (s, s, s//2 + 1) complex128 and weight (same shape) float64; rots (B, 3, 3); kxy (M, 2);
    values (B, M) complex; weights (B, M) real. Pixels must satisfy scale |k| < s/2."""
    check_half_grid(data, weight, kxy, scale)
    s, sh = data.shape[0], data.shape[2]
    rots = np.asarray(rots, dtype=np.float64)
    values = np.asarray(values)
    weights = np.asarray(weights, dtype=np.float64)
    M = len(kxy)
    step = max(1, _POINTS // max(M, 1))
    flat_d, flat_w = data.reshape(-1), weight.reshape(-1)
    for b0 in range(0, len(rots), step):
        q = slice_coords(rots[b0:b0 + step], kxy, scale).reshape(-1, 3)
        v = values[b0:b0 + step].ravel()
        w = weights[b0:b0 + step].ravel()
        flip = q[:, 0] < 0
        q[flip] *= -1.0
        v = np.where(flip, np.conj(v), v)
        base = np.floor(q).astype(np.int64)
        frac = q - base
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    t = (np.where(dx, frac[:, 0], 1 - frac[:, 0])
                         * np.where(dy, frac[:, 1], 1 - frac[:, 1])
                         * np.where(dz, frac[:, 2], 1 - frac[:, 2]))
                    idx = (((base[:, 2] + dz) % s) * s + (base[:, 1] + dy) % s) * sh \
                        + base[:, 0] + dx
                    np.add.at(flat_d, idx, t * v)
                    np.add.at(flat_w, idx, t * w)


_SCORE_BLOCK = 1 << 21   # elements of the (images x translations, pixels) phase-product block


def estep_scores(a, b, projections, phases):
    """E-step scores out[n, o, t] = 2 Re sum_m a[n,m] P[o,m] e[t,m] - sum_m b[n,m] |P[o,m]|^2
    (the pose-dependent part of eq. 5 of Kimanius 2021 with a = sigma^-2 c conj(y), b = sigma^-2
    c^2): a (N, M) complex, b (N, M) real, projections (O, M) complex, phases (T, M) complex;
    returns (N, O, T) float64.

    Factorised: the phase is applied once per image and translation (a e_t), then the cross term
    of all orientations is one real matrix product [Re, -Im](a e) [Re; Im] P^T, blocked over
    images so that the (images x translations, pixels) products stay small."""
    a = np.asarray(a)
    p = np.asarray(projections)
    e = np.asarray(phases)
    N, M = a.shape
    O, T = len(p), len(e)
    out = np.empty((N, O, T))
    pr = np.concatenate([p.real, p.imag], axis=1).T          # (2M, O): [Re P; Im P]
    pp = np.asarray(b, dtype=np.float64) @ (p.real ** 2 + p.imag ** 2).T   # (N, O)
    nb = max(1, _SCORE_BLOCK // max(1, T * M))
    for n0 in range(0, N, nb):
        ae = a[n0:n0 + nb, None, :] * e[None]                  # (nb, T, M)
        g = np.concatenate([ae.real, -ae.imag], axis=2).reshape(-1, 2 * M)
        cross = (g @ pr).reshape(-1, T, O)                      # Re sum a e P
        out[n0:n0 + nb] = 2.0 * cross.transpose(0, 2, 1) - pp[n0:n0 + nb, :, None]
    return out
