"""Frame weights of eq. 22 of Zivanov et al. (2019).

w_f(s) = exp(C_f + B_f s^2 / 4) / sum_f' exp(C_f' + B_f' s^2 / 4), s in 1/A, with B_f, C_f as in
:mod:`polishplugin.core.dose.bfactors` (amplitude convention, B < 0 = decay). The weights sum
to 1 over frames at every frequency and do not depend on the gauge of B and C. Computed with a
log-sum-exp so that frames decayed far below double precision still give finite weights.
"""
import numpy as np

from ..fourier import radius_grid
from .bfactors import ring_frequencies


def frame_weights(bfactors, scales, s):
    """Weights (F, *s.shape) of eq. 22 at spatial frequencies ``s`` (1/A, any shape)."""
    b = np.asarray(bfactors, dtype=np.float64)
    c = np.asarray(scales, dtype=np.float64)
    s2 = np.asarray(s, dtype=np.float64) ** 2
    extra = (1,) * s2.ndim
    logw = c.reshape((-1,) + extra) + b.reshape((-1,) + extra) * s2[None] / 4.0
    logw -= logw.max(axis=0, keepdims=True)
    w = np.exp(logw)
    return w / w.sum(axis=0, keepdims=True)


def ring_weights(bfactors, scales, nrings, box, pixel_size):
    """Weights per frame and Fourier ring, (F, nrings), ring kappa at kappa / (box px) 1/A."""
    return frame_weights(bfactors, scales, ring_frequencies(nrings, box, pixel_size))


def weight_maps(bfactors, scales, box, pixel_size, dtype=np.float32):
    """Weights as 2D maps (F, box, box) on the unshifted fft2 grid of a ``box`` of ``pixel_size``
    A (exact |k| of each pixel, not its ring), for :func:`recombine.recombine_frames`."""
    return frame_weights(bfactors, scales, radius_grid(box, box, pixel_size)).astype(dtype)


def exposure_weight_maps(doses, box, pixel_size, voltage=300.0, dtype=np.float32):
    """Weights (F, box, box) from the Grant & Grigorieff exposure filter instead of fitted
    B-factors: w_f(k) = q_f(k) / sum_f' q_f'(k), q_f = exp(-N_f / (2 Ne(k))) the amplitude left
    after the accumulated exposure N_f (:mod:`polishplugin.core.damage`), the same
    amplitude-proportional form as eq. 22. The fallback when the FCC holds too little signal."""
    from ..damage import exposure_filter
    q = exposure_filter(radius_grid(box, box, pixel_size), np.asarray(doses, float), voltage)
    return (q / q.sum(axis=0, keepdims=True)).astype(dtype)
