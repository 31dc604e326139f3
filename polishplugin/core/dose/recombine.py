"""Frame recombination ("shiny" particles), section 2.3 of Zivanov et al. (2019).

Each frame of a particle patch is moved back by its tracked position (sub-pixel, in Fourier
space), multiplied by the per-frame weights of eq. 22 and summed:
    Y(k) = sum_f w_f(k) X_f(k) exp(+2 pi i <t_f, k>),
then the sum is transformed back, cropped to the output box in real space and optionally
resampled by Fourier cropping/padding.
"""
import numpy as np

from ...backends import get_backend
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


def recombine_frames(frames, tracks, weights, out_box=None, rescale=None, dtype=np.float32,
                     backend=None):
    """Weighted sum of aligned frames.

    frames: (P, F, n, n) or (F, n, n) real patches, or their fft2 (complex);
    tracks: (P, F, 2) or (F, 2) particle positions (x, y) in pixels relative to the patch
    reference position (frame f is shifted by -track); weights: (F, n, n) maps on the fft2 grid
    (:func:`weights.weight_maps`; uniform 1/F gives a plain aligned average);
    out_box: crop the result to this centred box (pixels of the patch); rescale: then resample
    the cropped box to this size (Fourier crop/pad); dtype: output type (e.g. np.float16);
    backend: computes the weighted Fourier sum (its ``recombine_sum``).
    Returns (P, m, m) or (m, m).
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
    acc = get_backend(backend).recombine_sum(frames, tracks, np.asarray(weights))
    out = np.fft.ifft2(acc).real
    if out_box is not None:
        out = crop_center(out, out_box, out_box)
    if rescale is not None:
        out = fourier_resize(out, rescale)
    out = out.astype(dtype)
    return out[0] if single else out
