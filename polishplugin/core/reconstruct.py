"""Direct Fourier inversion of particle images with known orientations, shifts and CTFs.

Central-slice theorem (:mod:`polishplugin.core.geometry`): the fft2 of a projection, taken with
its origin at the image centre (n//2), is the 3D transform at A^T (kx, ky, 0). Each Fourier
pixel k (|k| <= r_max, in pixels of the n box) is placed at pad * A^T (kx, ky, 0) on an
oversampled (pad n)^3 grid and spread to its 8 neighbours with trilinear weights t:
    D += t CTF X,    W += t CTF^2.
The transform is kept on the half grid kx >= 0: one pixel of each Friedel pair (k, -k) of the
image is inserted (the DC pixel with weight 1/2), moved with its conjugate value to -A^T k when
that has kx >= 0; the kx = 0 plane is then completed by Hermitian symmetry (:meth:`Backprojector.
fourier_weights`), which gives exactly the full-grid sums.
The estimate F = D / (W + lambda) is a Wiener-type regularised division with
lambda(shell) = mean W(shell) / SSNR(shell) (RELION's 1/tau^2) or a small constant; its inverse
transform is divided by the trilinear gridding kernel sinc^2 per axis and cropped to n^3.
Streaming: :class:`Backprojector` accumulates batches; accumulators of half-sets, MPI ranks or
micrographs are combined with :meth:`Backprojector.merge`.
"""
import numpy as np

from ..backends import get_backend
from .fourier import fsc, resolution_at, shift_phase
from .geometry import euler_to_matrix


def centered_fft(images, shifts=None):
    """fft2 of real images (..., n, n) with the origin at the image centre (n//2, n//2), the
    particle first moved from centre + ``shifts`` (..., 2) (x, y pixels) to the centre."""
    n = images.shape[-1]
    f = np.fft.fft2(np.fft.ifftshift(images, axes=(-2, -1)))
    if shifts is not None:
        shifts = np.asarray(shifts, dtype=np.float64)
        f = f * shift_phase(n, n, -shifts[..., 0], -shifts[..., 1])
    return f


def _crop3(vol, n):
    c0 = vol.shape[0] // 2 - n // 2
    return vol[c0:c0 + n, c0:c0 + n, c0:c0 + n]


class Backprojector:
    """Accumulates D and W on a half (pad n)^3 Fourier grid (z, y, x >= 0). ``backend``: the
    compute backend of the spreading (:func:`polishplugin.backends.get_backend`; None: the
    default)."""

    def __init__(self, n, pad=2, r_max=None, backend=None):
        self.n, self.pad = int(n), int(pad)
        self.backend = backend
        self.size = self.pad * self.n
        self.r_max = self.n // 2 - 1 if r_max is None else float(r_max)
        if self.r_max > self.n // 2 - 1:
            raise ValueError("r_max must be at most n//2 - 1 = %d" % (self.n // 2 - 1))
        shape = (self.size, self.size, self.size // 2 + 1)
        self.data = np.zeros(shape, dtype=np.complex128)
        self.weight = np.zeros(shape, dtype=np.float64)
        ky, kx = np.meshgrid(np.fft.fftfreq(self.n) * self.n, np.fft.fftfreq(self.n) * self.n,
                             indexing="ij")
        half = (kx > 0) | ((kx == 0) & (ky >= 0))
        self._sel = np.flatnonzero((half & (np.hypot(ky, kx) <= self.r_max)).ravel())
        self._k2 = np.stack([kx.ravel()[self._sel], ky.ravel()[self._sel]], axis=1)  # (M, 2)
        self._dc = np.where(self._sel == 0, 0.5, 1.0)

    @property
    def pixels(self):
        """Flat fft2 indices (M,) of the image pixels that are inserted (half plane, |k| <=
        r_max), the columns of :meth:`add`."""
        return self._sel

    def add(self, values, weights, rots):
        """Spread values (B, M) and weights (B, M) of the :attr:`pixels` of B slices at
        rotations ``rots`` (B, 3, 3) into D and W (the DC pixel is halved here)."""
        get_backend(self.backend).backproject_slices(
            self.data, self.weight, np.asarray(rots, dtype=np.float64), self._k2,
            np.asarray(values) * self._dc, np.asarray(weights, dtype=np.float64) * self._dc,
            self.pad)

    def insert(self, images_fft, rots, ctfs=None):
        """Add images: ``images_fft`` (B, n, n) from :func:`centered_fft`, ``rots`` (B, 3, 3)
        RELION matrices A, ``ctfs`` (B, n, n) on the fft2 grid or None (CTF = 1)."""
        x = np.asarray(images_fft).reshape(len(rots), -1)[:, self._sel]
        if ctfs is None:
            self.add(x, np.ones(x.shape), rots)
        else:
            c = np.asarray(ctfs, dtype=np.float64).reshape(len(rots), -1)[:, self._sel]
            self.add(c * x, c * c, rots)

    def merge(self, other):
        """Add another accumulator's sums (same n and pad)."""
        if (other.n, other.pad) != (self.n, self.pad):
            raise ValueError("cannot merge back-projectors of different sizes")
        self.data += other.data
        self.weight += other.weight
        return self

    def _symmetrise(self, arr):
        """Complete the kx = 0 plane: a(0, y, z) + conj(a(0, -y, -z))."""
        out = arr.copy()
        neg = (-np.arange(self.size)) % self.size
        plane = arr[:, :, 0]
        out[:, :, 0] = plane + np.conj(plane[neg][:, neg])
        return out

    def fourier_weights(self):
        """W = sum t CTF^2 on the half grid (z, y, x >= 0), equal to the full-grid sums."""
        return self._symmetrise(self.weight)

    def fourier_data(self):
        """D = sum t CTF X on the half grid (z, y, x >= 0)."""
        return self._symmetrise(self.data)

    def _shells(self):
        s = self.size
        kz = np.fft.fftfreq(s) * s
        kx = np.arange(s // 2 + 1)
        r = np.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
        return np.rint(r / self.pad).astype(np.int64)

    def fourier_estimate(self, ssnr=None, reg=1e-3):
        """F = D / (W + lambda) on the half grid, 0 where W = 0. ``ssnr``: per-shell SSNR
        (shells of the n box, e.g. FSC / (1 - FSC)) giving lambda = mean W(shell) / SSNR, with
        F = 0 beyond the last shell given; otherwise lambda = ``reg`` times the mean W of all
        sampled voxels."""
        weight, data = self.fourier_weights(), self.fourier_data()
        sampled = weight > 0
        if ssnr is not None:
            ssnr = np.asarray(ssnr, dtype=np.float64)
            nsh = len(ssnr)
            shells = self._shells()
            inside = shells < nsh
            keep = sampled & inside
            wsum = np.bincount(shells[keep], weight[keep], minlength=nsh)
            mean_w = wsum / np.maximum(np.bincount(shells[keep], minlength=nsh), 1)
            lam = np.full(shells.shape, np.inf)
            lam[inside] = (mean_w / np.maximum(ssnr, 1e-12))[shells[inside]]
        else:
            lam = reg * (weight[sampled].mean() if sampled.any() else 1.0)
        f = np.zeros_like(data)
        np.divide(data, weight + lam, out=f, where=sampled)
        return f

    def reconstruct(self, ssnr=None, reg=1e-3):
        """Volume (n, n, n) float32 from :meth:`fourier_estimate`, gridding-corrected."""
        s = self.size
        vol = np.fft.fftshift(np.fft.irfftn(self.fourier_estimate(ssnr, reg), s=(s, s, s)))
        g = np.sinc((np.arange(s) - s // 2) / s) ** 2
        vol /= g[:, None, None] * g[None, :, None] * g[None, None, :]
        return _crop3(vol, self.n).astype(np.float32)


def reconstruct_halves(images, angles, shifts, ctfs, half_sets, pixel_size=1.0, pad=2,
                       batch=256, ssnr=None):
    """Two independent half-set reconstructions and their FSC.

    images (N, n, n) real; angles (N, 3) RELION (rot, tilt, psi) in radians; shifts (N, 2)
    particle centre minus image centre (x, y) in pixels (RELION 3.1: -rlnOrigin{X,Y}Angst / px)
    or None; ctfs (N, n, n) on the fft2 grid or None; half_sets (N,) values 1 or 2
    (rlnRandomSubset). Returns (half1, half2, fsc curve, resolution in A at FSC = 0.143).
    """
    images = np.asarray(images)
    n = images.shape[-1]
    angles = np.asarray(angles, dtype=np.float64)
    half_sets = np.asarray(half_sets)
    if not set(np.unique(half_sets)) <= {1, 2}:
        raise ValueError("half_sets must contain only 1 and 2")
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    halves = []
    for h in (1, 2):
        bp = Backprojector(n, pad)
        idx = np.flatnonzero(half_sets == h)
        for i0 in range(0, len(idx), batch):
            sel = idx[i0:i0 + batch]
            f = centered_fft(images[sel], None if shifts is None else np.asarray(shifts)[sel])
            bp.insert(f, rots[sel], None if ctfs is None else np.asarray(ctfs)[sel])
        halves.append(bp.reconstruct(ssnr=ssnr))
    curve = fsc(halves[0], halves[1])
    return halves[0], halves[1], curve, resolution_at(curve, n, pixel_size)
