"""E-step of MAP refinement (Kimanius et al. 2021, eq. 2, 5 and 8): pose log-likelihoods of each
image under the current reference, and posterior pose weights by log-sum-exp, with negligible
weights pruned.

eq. 5: log P(y | x, g) = -|| sigma^-1 (y - c H_g x) ||^2 + const, summed over the Fourier pixels
of the image (``inv_sigma2`` = 0 masks pixels out);
eq. 8: P(g | x, y) = P(y | x, g) P(g) / sum_g' P(y | x, g') P(g').
A pose g is an orientation (a projection of the reference, :class:`~polishplugin.core.projector.
Projector`) and a translation t (x, y pixels: the particle centre sits at image centre + t), so
the prediction is c P_o exp(-2 pi i k.t) in the image's centred transform.
"""
import numpy as np

from ..fourier import shift_phase

PRUNE = 1e-8    # weights below this fraction of an image's largest weight are dropped


def centred_projections(projector, angles):
    """Centred transforms (origin at the box centre, as :func:`~polishplugin.core.reconstruct.
    centered_fft`) of the reference's projections at ``angles`` (O, 3) radians."""
    n = projector.n
    return projector.project_many(angles) * shift_phase(n, n, -(n // 2), -(n // 2))


def log_likelihoods(images_fft, ctfs, projections, translations, inv_sigma2):
    """(N, O, T) log-likelihoods of eq. 5 (without the constant).

    images_fft (N, n, n) centred transforms of the images; ctfs (N, n, n) or None; projections
    (O, n, n) centred transforms of the reference at O orientations; translations (T, 2) x, y in
    pixels; inv_sigma2 (N, n, n) or (n, n): sigma^-2 per Fourier pixel (0 outside the used radius).
    Computed as -sum s |y|^2 + 2 Re sum s conj(y) c P e_t - sum s c^2 |P|^2 (e_t the shift phase).
    """
    y = np.asarray(images_fft)
    n = y.shape[-1]
    s = np.broadcast_to(np.asarray(inv_sigma2, dtype=np.float64), y.shape)
    c = np.ones(y.shape) if ctfs is None else np.asarray(ctfs, dtype=np.float64)
    p = np.asarray(projections)
    e = shift_phase(n, n, np.asarray(translations)[:, 0], np.asarray(translations)[:, 1])
    yy = np.einsum("nij,nij->n", s, np.abs(y) ** 2)
    cross = np.einsum("nij,oij,tij->not", np.conj(y) * s * c, p, e, optimize=True).real
    pp = np.einsum("nij,oij->no", s * c * c, np.abs(p) ** 2)
    return -yy[:, None, None] + 2.0 * cross - pp[:, :, None]


def pose_posteriors(loglik, log_prior=None, prune=PRUNE):
    """Posterior weights of eq. 8 over the pose axes of ``loglik`` (N, ...), normalised per image
    by log-sum-exp; weights below ``prune`` x the image's largest are set to 0 and the rest
    renormalised. Returns (weights, log marginal likelihood per image: log sum_g P(y|g) P(g))."""
    ll = np.asarray(loglik, dtype=np.float64)
    if log_prior is not None:
        ll = ll + log_prior
    flat = ll.reshape(len(ll), -1)
    top = flat.max(axis=1, keepdims=True)
    rel = np.exp(flat - top)
    total = rel.sum(axis=1, keepdims=True)
    log_marginal = top[:, 0] + np.log(total[:, 0])
    w = rel / total
    w[w < prune * w.max(axis=1, keepdims=True)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return w.reshape(ll.shape), log_marginal
