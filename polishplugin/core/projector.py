"""Fourier-slice projection of a cubic volume (RELION's convention, core/geometry.py).

The projection p(x, y) = integral over z of V(A^T (x, y, z)) has the 2D Fourier transform
P(k) = F3(A^T (kx, ky, 0)) (projection-slice theorem). The volume is zero-padded ``pad`` times,
pre-divided by the Fourier transform of the trilinear interpolation kernel (gridding correction,
sinc^2 per axis) and Fourier transformed once; each projection then samples the padded transform
on a central slice with trilinear interpolation, as RELION's projector (padding 2, trilinear).
"""
import numpy as np
import scipy.fft

from ..backends import get_backend
from .fourier import freq_grid, shift_phase
from .geometry import euler_to_matrix

_SLICE_POINTS = 1 << 21     # slice pixels per backend call


def _gridding_correction(npad, n, z=slice(None)):
    """sinc^2(x / npad) sinc^2(y / npad) sinc^2(z / npad) on an n^3 box centred at n//2: the real-space
    transform of the trilinear kernel of a grid with spacing 1/npad (cycles per px); ``z``: only
    those z planes."""
    r = (np.arange(n) - n // 2) / npad
    s = np.sinc(r) ** 2
    return s[z, None, None] * s[None, :, None] * s[None, None, :]


def _gridding_corrected(volume, npad, overwrite=False):
    """float32 ``volume`` / :func:`_gridding_correction` (float64), a z plane at a time (no
    float64 volume-sized temporaries); ``overwrite``: into ``volume`` itself when it is a
    float32 array (no second volume), else into a new one."""
    n = volume.shape[0]
    if overwrite and volume.dtype == np.float32 and volume.flags.writeable:
        out = volume
    else:
        out = np.empty(volume.shape, dtype=np.float32)
    for z in range(n):
        out[z] = volume[z].astype(np.float32) / _gridding_correction(npad, n, slice(z, z + 1))[0]
    return out


def _centred_fft3(vol, npad, keep=None):
    """fftshift(fftn(ifftshift(pad(vol)))) as complex64: ``vol`` (n^3, centre voxel n//2) zero-padded
    to npad^3 (centre at npad//2), transformed with its centre voxel at the origin, zero frequency
    put at index npad//2. The volume is written straight into the wrapped layout (no ifftshift
    copy) and, for even npad, the output fftshift is a sign (-1)^(x+y+z) of the input voxels (a
    shift by npad/2 in Fourier space), so the only padded-size arrays are the input and output.
    ``keep`` (even npad only): return just the cube of frequencies -keep..keep on each axis
    ((2 keep + 1)^3, zero frequency at index keep), read from the half transform without making
    the padded-size output."""
    n = vol.shape[0]
    if keep is not None and keep < npad // 2:
        return _cropped_fft3(vol, npad, keep)
    idx = (np.arange(n) - n // 2) % npad                      # wrapped position of voxel k
    big = np.zeros((npad,) * 3, dtype=np.float32)
    if npad % 2 == 0:
        s = np.where(idx % 2 == 0, 1.0, -1.0).astype(np.float32)
        vol = vol * s[:, None, None] * s[None, :, None] * s[None, None, :]
    big[np.ix_(idx, idx, idx)] = vol
    if npad % 2:
        return np.fft.fftshift(scipy.fft.fftn(big)).astype(np.complex64, copy=False)
    # real input: half the transform (rfftn), the other half by Hermitian symmetry
    # f[k] = conj(f[-k mod npad]), written with slices (index -k of 1..npad-1 is npad-k)
    h = npad // 2
    r = scipy.fft.rfftn(big)
    del big
    f = np.empty((npad,) * 3, dtype=np.complex64)
    f[..., :h + 1] = r
    src = r[..., h - 1:0:-1]                                   # kx = npad - (h+1 .. npad-1)
    for dz, sz in ((slice(0, 1), slice(0, 1)), (slice(1, None), slice(None, 0, -1))):
        for dy, sy in ((slice(0, 1), slice(0, 1)), (slice(1, None), slice(None, 0, -1))):
            np.conjugate(src[sz, sy], out=f[dz, dy, h + 1:])
    return f


def _cropped_fft3(vol, npad, keep, half=False, slab=16, out=None):
    """The cube of frequencies -keep..keep of :func:`_centred_fft3` ((2 keep + 1)^3 complex64,
    zero frequency at index keep), one axis at a time: each 1D transform of the zero-padded
    length npad keeps only the frequencies needed (x: 0..keep, the rest by Hermitian symmetry),
    and the centre voxel n//2 is moved to the origin by the phase exp(2 pi i k (n//2) / npad).
    Never makes a padded-size array: each axis is transformed ``slab`` planes at a time into the
    next stage's array (the same numbers as whole-array transforms, a fraction of the memory).
    ``out``: the array to fill (of the returned shape, complex64) instead of a new one."""
    n = vol.shape[0]
    k = np.arange(-keep, keep + 1)
    K = k.size
    phase = np.exp(2j * np.pi * k * (n // 2) / npad).astype(np.complex64)
    vol = vol.astype(np.float32, copy=False)
    a = np.empty((n, n, keep + 1), dtype=np.complex64)
    for z in range(0, n, slab):
        a[z:z + slab] = scipy.fft.rfft(vol[z:z + slab], n=npad, axis=2)[..., :keep + 1] \
            * phase[keep:]
    b = np.empty((n, K, keep + 1), dtype=np.complex64)
    for z in range(0, n, slab):
        b[z:z + slab] = scipy.fft.fft(a[z:z + slab], n=npad, axis=1)[:, k % npad] \
            * phase[None, :, None]
    del a
    shape = (K, K, keep + 2) if half else (K, K, K)
    if out is None:
        f = np.empty(shape, dtype=np.complex64)
    elif out.shape != shape or out.dtype != np.complex64:
        raise ValueError("out is %s %s, the transform (%s) complex64" % (out.shape, out.dtype,
                                                                         shape))
    else:
        f = out
    if half:   # x >= 0 only, x at index (keep + x) mod (keep + 2): see Projector
        f[..., keep - 1] = 0           # the one column no frequency is written to
    for y in range(0, K, slab):
        c = scipy.fft.fft(b[:, y:y + slab], n=npad, axis=0)[k % npad] * phase[:, None, None]
        if half:
            f[:, y:y + slab, keep:keep + 2] = c[..., :2]
            f[:, y:y + slab, :keep - 1] = c[..., 2:]
        else:
            f[:, y:y + slab, keep:] = c
    del b
    if not half:   # F(-k) = conj F(k), real volume
        f[..., :keep] = np.conj(f[::-1, ::-1, 2 * keep:keep:-1])
    return f


class Projector:
    """Precomputed padded 3D Fourier transform of ``volume`` (n^3, centre voxel n//2).

    ``r_max`` (cycles per px of the n box, default Nyquist 0.5) bounds the slice: frequencies with
    |k| > r_max are zero, as in RELION's projector; only the padded transform's frequencies up to
    r_max (plus the interpolation's neighbours) are kept (less memory when r_max < 0.5).
    ``backend``: the compute backend of the slice interpolation
    (:func:`polishplugin.backends.get_backend`; None: the default).
    ``out``: a complex64 array of the transform's shape (:attr:`shape`) that receives it (see
    :meth:`around`). ``overwrite``: ``volume`` (float32) may be used as scratch and is left
    gridding-corrected (one volume less at the setup's peak).
    ``half``: keep only the x >= 0 half of the (cut) transform, half the memory, when
    r_max < 0.5 and the padded size is even: F(-k) = conj F(k) (real volume), so a slice point
    whose rotated x is negative is read at -k and conjugated (the trilinear weights are
    symmetric: the same value as from the whole cube). The half is stored with x at index
    (keep + x) mod (keep + 2), so that the backends' periodic indexing around the one origin
    ``keep`` of all three axes reads it unchanged; each slice is read at A and -A (twice the
    interpolation, no more backend calls).
    """

    def __init__(self, volume, pad=2, r_max=0.5, backend=None, half=False, out=None,
                 overwrite=False):
        volume = np.asarray(volume)
        if volume.ndim != 3 or len(set(volume.shape)) != 1:
            raise ValueError("volume must be cubic, got shape %s" % (volume.shape,))
        self._layout(volume.shape[0], pad, r_max, backend, half)
        corrected = _gridding_corrected(volume, self.npad, overwrite)
        if self._cut:
            self._f3 = _cropped_fft3(corrected, self.npad, self._keep, half=self._half, out=out)
        else:
            self._f3 = _centred_fft3(corrected, self.npad)
            if out is not None:
                out[...] = self._f3
                self._f3 = out

    def _layout(self, n, pad, r_max, backend, half):
        self.n = int(n)
        self.pad = int(pad)
        self.npad = self.pad * self.n
        self.r_max = float(r_max)
        self.backend = backend
        self._keep = int(np.ceil(self.r_max * self.npad)) + 2
        self._centre = min(self._keep, self.npad // 2) if self.npad % 2 == 0 else self.npad // 2
        self._cut = self.npad % 2 == 0 and self._keep < self.npad // 2
        self._half = bool(half) and self._cut
        K = 2 * self._keep + 1
        self.shape = (K, K, self._keep + 2) if self._half else (K, K, K) if self._cut else \
            (self.npad,) * 3

    @classmethod
    def around(cls, transform, n, pad=2, r_max=0.5, backend=None, half=False):
        """The projector of an n^3 volume (the other arguments as for the constructor) around
        its ``transform``, computed elsewhere by the constructor with ``out=transform``
        (e.g. by another process, into memory both share)."""
        self = cls.__new__(cls)
        self._layout(n, pad, r_max, backend, half)
        if transform.shape != self.shape or transform.dtype != np.complex64:
            raise ValueError("transform %s %s, expected %s complex64"
                             % (transform.shape, transform.dtype, self.shape))
        self._f3 = transform
        return self

    def _slice(self, mats, ny, nx, crop=None):
        """Sample the padded transform on the central slices A^T (kx, ky, 0) of an (ny, nx) grid
        (the backend's ``slice_extract``; ``crop``: only its frequencies of a crop x crop grid,
        even square boxes); only the frequencies |k| <= r_max are non-zero. The transform of the
        real volume is Hermitian, so one pixel of each Friedel pair (k, -k) is interpolated and
        the other is its conjugate (pixels of an even Nyquist row or column, which have no
        Friedel mate on the grid, are interpolated)."""
        ky, kx = freq_grid(ny, nx)
        if crop is not None and crop < nx:
            if ny != nx or nx % 2 or crop % 2:
                raise ValueError("crop needs even square boxes, got %dx%d, crop %d"
                                 % (ny, nx, crop))
            keep = np.r_[0:crop // 2, nx - crop // 2:nx]
            ky, kx = ky[np.ix_(keep, keep)], kx[np.ix_(keep, keep)]
            ny = nx = crop   # kept indices have the parity of their place: same sign pattern
        iy, ix = np.divmod(np.arange(ny * nx), nx)
        inside = np.hypot(ky, kx).ravel() <= self.r_max
        kxf, kyf = kx.ravel(), ky.ravel()
        nyquist = ((ny % 2 == 0) & (iy == ny // 2)) | ((nx % 2 == 0) & (ix == nx // 2))
        first = (kxf > 0) | ((kxf == 0) & (kyf >= 0))
        sampled = np.flatnonzero(inside & (first | nyquist))
        mirrored = np.flatnonzero(inside & ~first & ~nyquist)
        mates = ((-iy[mirrored]) % ny) * nx + (-ix[mirrored]) % nx
        kxy = np.stack([kxf[sampled], kyf[sampled]], axis=1)
        a = np.asarray(mats)
        out = np.zeros((len(a), ny * nx), dtype=np.complex128)
        be = get_backend(self.backend)
        step = max(1, _SLICE_POINTS // max(1, len(kxy)))      # bounds the (orientations, M) block
        # half transform: a point whose rotated x is < 0 is read at -q and conjugated
        for k0 in range(0, len(a), step):
            out[k0:k0 + step, sampled] = be.slice_extract(self._f3, a[k0:k0 + step], kxy,
                                                          self.npad, self._centre,
                                                          half=self._half)
        out[:, mirrored] = np.conj(out[:, mates])
        out = out.reshape(len(a), ny, nx)
        if ny % 2 or nx % 2:
            return out * shift_phase(ny, nx, nx // 2, ny // 2)
        # even box: the shift by (nx/2, ny/2) is the real sign (-1)^(iy + ix)
        out[:, 1::2, ::2] *= -1.0
        out[:, ::2, 1::2] *= -1.0
        return out

    def project(self, rot, tilt, psi, shape=None):
        """2D Fourier transform (unshifted fft2 layout, complex128) of the projection at RELION Euler
        angles (radians), in an (ny, nx) box (default n x n); ``ifft2(...).real`` is the projection
        with the volume centre at (ny//2, nx//2). A box larger than n gives the zero-padded projection."""
        return self.project_many(np.array([[rot, tilt, psi]]), shape)[0]

    def project_many(self, angles, shape=None, crop=None):
        """Projections for an array (K, 3) of (rot, tilt, psi) in radians; returns (K, ny, nx),
        or (K, crop, crop): only the frequencies of a crop x crop grid (even square boxes,
        :func:`polishplugin.core.motion.observation.crop_plane`)."""
        angles = np.atleast_2d(np.asarray(angles, dtype=np.float64))
        ny, nx = (self.n, self.n) if shape is None else shape
        mats = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
        return self._slice(mats, ny, nx, crop=crop)
