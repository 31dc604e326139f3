"""Frame recombination ("shiny" particles), section 2.3 of Zivanov et al. (2019).

Each frame of a particle patch is moved back by its tracked position (sub-pixel, in Fourier
space), multiplied by the per-frame weights of eq. 22 and summed:
    Y(k) = sum_f w_f(k) X_f(k) exp(+2 pi i <t_f, k>),
then the sum is transformed back, cropped to the output box in real space and optionally
resampled by Fourier cropping/padding.
"""
import numba
import numpy as np
import scipy.fft

from ..fourier import crop_center, pad_center


def fourier_resize(images, size):
    """Resample real images (..., n, n) to (..., size, size) by cropping or zero-padding their
    centred spectrum; the pixel size becomes px * n / size and the mean value is kept."""
    n = images.shape[-1]
    if size == n:
        return images
    f = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))
    f = crop_center(f, size, size) if size < n else pad_center(f, size, size)
    out = np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))).real
    return out * (size * size) / float(n * n)


class ShinySum:
    """Y_p(k) = sum_f w_f(k) X_pf(k) exp(+2 pi i <t_pf, k>) accumulated one frame at a time on
    the rfft2 half-plane, for P particles in n x n patches; :meth:`images` transforms it back once
    per particle. The sums have the precision of the frames' transforms: complex64 for float32
    frames (n (n/2 + 1) 8 bytes per particle: 161 kB at n = 200; F terms of relative rounding
    ~6e-8 each, ~1e-6 of the sum, far below any frame's counting noise; sums in complex128 took
    twice the memory for digits the float32 frames do not have), complex128 for float64 ones. The
    phase factorises over ky and kx (two short vectors per particle instead of an n x n ramp); on
    the even-n Nyquist row only its real part cos(pi t_y)
    counts (what the real part of the full-plane inverse keeps), the Nyquist column is at
    kx = -1/2 as on the fft2 grid, and the corner, its own partner, takes cos(pi (t_x + t_y))."""

    def __init__(self, P, n, workers=1):
        self.n, self.nh = int(n), int(n) // 2 + 1
        self.P = int(P)
        self.acc = None         # made at the first add, in the precision of its transforms
        self.k = np.fft.fftfreq(self.n)
        self.workers = workers

    def add(self, patches, shifts, weight, rows=slice(None)):
        """patches (P, n, n) real (one frame) or their fft2 (complex); shifts (P, 2) px: the
        particle's position in the patch (undone); weight (n, n) on the fft2 grid; ``rows``:
        the particles they are (a slice of the P; default all)."""
        n, nh = self.n, self.nh
        if np.iscomplexobj(patches):
            x = np.asarray(patches)[..., :nh]
        else:
            x = scipy.fft.rfft2(np.asarray(patches), workers=self.workers)
        shifts = np.asarray(shifts, dtype=np.float64)
        cdt = x.dtype
        ey = np.exp(2j * np.pi * shifts[:, 1, None] * self.k)
        if n % 2 == 0:
            ey[:, n // 2] = ey[:, n // 2].real
        ex = np.exp(2j * np.pi * shifts[:, 0, None] * self.k[:nh])
        # the corner (-1/2, -1/2) of an even n is its own partner: cos(pi (t_x + t_y))
        corner = np.cos(np.pi * (shifts[:, 0] + shifts[:, 1])) if n % 2 == 0 else \
            np.zeros(len(shifts))
        if self.acc is None:
            self.acc = np.zeros((self.P, n, nh), dtype=cdt)
        rdt = self.acc.real.dtype
        _add_shifted(self.acc[rows], np.ascontiguousarray(x, dtype=self.acc.dtype),
                     ey.astype(self.acc.dtype), ex.astype(self.acc.dtype),
                     np.ascontiguousarray(np.asarray(weight)[:, :nh], dtype=rdt),
                     corner.astype(rdt), n % 2 == 0)

    def images(self, out_box=None, rows=slice(None)):
        """The sums as real images (P, n, n) (float32 from complex64 sums), cropped to a centred
        ``out_box`` when given; ``rows``: only those particles (a slice)."""
        if self.acc is None:
            self.acc = np.zeros((self.P, self.n, self.nh), dtype=np.complex64)
        out = scipy.fft.irfft2(self.acc[rows], s=(self.n, self.n), workers=self.workers)
        return out if out_box is None else crop_center(out, out_box, out_box)


@numba.njit(cache=True, nogil=True)
def _add_shifted(acc, x, ey, ex, w, corner, even):
    """acc[i] += w X_i ey_i(ky) ex_i(kx) on the half-plane, in one pass in the sums' precision
    (no per-block complex temporaries); where ``even``, the corner (n/2, nh - 1) takes
    w X_i corner_i instead (:meth:`ShinySum.add`)."""
    b, n, nh = x.shape
    for i in range(b):
        for ky in range(n):
            ar, ai = ey[i, ky].real, ey[i, ky].imag
            top = nh - 1 if even and ky == n // 2 else nh
            for kx in range(top):
                e = ex[i, kx]
                cr = (ar * e.real - ai * e.imag) * w[ky, kx]
                ci = (ar * e.imag + ai * e.real) * w[ky, kx]
                z = x[i, ky, kx]
                acc[i, ky, kx] += complex(z.real * cr - z.imag * ci, z.real * ci + z.imag * cr)
            if top < nh:
                acc[i, ky, top] += x[i, ky, top] * (corner[i] * w[ky, top])


def recombine_frames(frames, tracks, weights, out_box=None, rescale=None, dtype=np.float32,
                     workers=1):
    """Weighted sum of aligned frames.

    frames: (P, F, n, n) or (F, n, n) real patches, or their fft2 (complex);
    tracks: (P, F, 2) or (F, 2) particle positions (x, y) in pixels relative to the patch
    reference position (frame f is shifted by -track); weights: (F, n, n) maps on the fft2 grid
    (:func:`weights.weight_maps`; uniform 1/F gives a plain aligned average);
    out_box: crop the result to this centred box (pixels of the patch); rescale: then resample
    the cropped box to this size (Fourier crop/pad); dtype: output type (e.g. np.float16).
    Returns (P, m, m) or (m, m). (Frames read one at a time: :class:`ShinySum`.)
    """
    frames = np.asarray(frames)
    tracks = np.asarray(tracks, dtype=np.float64)
    single = frames.ndim == 3
    if single:
        frames, tracks = frames[None], tracks[None]
    p, nf, n = frames.shape[0], frames.shape[1], frames.shape[-1]
    if tracks.shape != (p, nf, 2):
        raise ValueError("tracks %s do not match frames %s" % (tracks.shape, frames.shape))
    if np.shape(weights) != (nf, n, n):
        raise ValueError("weights must be (%d, %d, %d), got %s" % (nf, n, n, np.shape(weights)))
    acc = ShinySum(p, n, workers)
    for f in range(nf):
        acc.add(frames[:, f], tracks[:, f], weights[f])
    out = acc.images(out_box)
    if rescale is not None:
        out = fourier_resize(out, rescale)
    out = out.astype(dtype)
    return out[0] if single else out
