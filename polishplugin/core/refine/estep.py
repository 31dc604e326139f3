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
import functools

import numpy as np

from ...backends import get_backend
from ..fourier import shift_phase

PRUNE = 1e-8    # weights below this fraction of an image's largest weight are dropped


def _frozen(a):
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=8)
def _centring(n):
    """The phase that moves the origin of an n-box transform to the box centre (cached)."""
    return _frozen(shift_phase(n, n, -(n // 2), -(n // 2)))


@functools.lru_cache(maxsize=32)
def _translation_phases(n, t_bytes):
    """(T, n*n) shift phases of the translations (T, 2) stored in ``t_bytes`` (cached: a
    refinement scores every image against the same few translation grids)."""
    t = np.frombuffer(t_bytes, dtype=np.float64).reshape(-1, 2)
    return _frozen(shift_phase(n, n, t[:, 0], t[:, 1]).reshape(len(t), -1))


@functools.lru_cache(maxsize=32)
def _score_pixels(n, used_bytes):
    cols, mates = score_pixels(n, np.frombuffer(used_bytes, dtype=bool))
    return _frozen(cols), _frozen(mates)


def centred_projections(projector, angles):
    """Centred transforms (origin at the box centre, as :func:`~polishplugin.core.reconstruct.
    centered_fft`) of the reference's projections at ``angles`` (O, 3) radians."""
    n = projector.n
    return projector.project_many(angles) * _centring(n)


def score_pixels(n, used):
    """The Fourier pixels an E-step sums over, Friedel pairs folded (a transform of a real image
    is Hermitian, so pixel -k repeats pixel k): ``used`` (n*n,) bool marks pixels with a non-zero
    sigma^-2. Returns (columns, mates): flat indices of one pixel per pair (kx > 0, or kx = 0
    and ky >= 0; the DC pixel is its own mate) and of the pixels without a true Friedel mate (the
    Nyquist row and column of an even box, mate -1), and each column's mate (M,)."""
    iy, ix = np.divmod(np.arange(n * n), n)
    ky, kx = np.fft.fftfreq(n)[iy], np.fft.fftfreq(n)[ix]
    mate = ((-iy) % n) * n + (-ix) % n
    nyquist = (n % 2 == 0) & ((iy == n // 2) | (ix == n // 2))
    rep = ~nyquist & ((kx > 0) | ((kx == 0) & (ky >= 0))) & (used | used[mate])
    single = nyquist & used
    cols = np.concatenate([np.flatnonzero(rep), np.flatnonzero(single)])
    mates = np.where(rep[cols], mate[cols], -1)
    return cols, mates


def log_likelihoods(images_fft, ctfs, projections, translations, inv_sigma2, backend=None):
    """(N, O, T) log-likelihoods of eq. 5 (without the constant).

    images_fft (N, n, n) centred transforms of the images; ctfs (N, n, n) or None; projections
    (O, n, n) centred transforms of the reference at O orientations (of a real map: Hermitian);
    translations (T, 2) x, y in pixels; inv_sigma2 (N, n, n) or (n, n): sigma^-2 per Fourier
    pixel (0 outside the used radius; those pixels are skipped).
    Computed as -sum s |y|^2 + 2 Re sum s conj(y) c P e_t - sum s c^2 |P|^2 (e_t the shift
    phase) by the backend's ``estep_scores`` over one pixel of each Friedel pair (the pair's
    terms summed into a = s c conj(y) and b = s c^2, :func:`score_pixels`); ``backend`` as
    :func:`polishplugin.backends.get_backend`.
    """
    y = np.asarray(images_fft)
    N, n = len(y), y.shape[-1]
    s = np.broadcast_to(np.asarray(inv_sigma2, dtype=np.float64), y.shape).reshape(N, -1)
    yf = y.reshape(N, -1)
    a = s * np.conj(yf)
    b = s
    if ctfs is not None:
        c = np.broadcast_to(np.asarray(ctfs, dtype=np.float64), y.shape).reshape(N, -1)
        a, b = a * c, s * c * c
    cols, mates = _score_pixels(n, np.any(s != 0, axis=0).tobytes())
    paired = mates >= 0
    folded = paired & (mates != cols)            # the DC pixel is its own mate: counted once
    a_cols, b_cols = a[:, cols], b[:, cols]
    a_cols[:, folded] += np.conj(a[:, mates[folded]])
    b_cols[:, folded] += b[:, mates[folded]]
    t = np.asarray(translations, dtype=np.float64)
    e = _translation_phases(n, np.ascontiguousarray(t).tobytes())[:, cols]
    p = np.asarray(projections).reshape(-1, n * n)[:, cols]
    yy = np.einsum("nm,nm->n", s, yf.real ** 2 + yf.imag ** 2)
    out = get_backend(backend).estep_scores(a_cols, b_cols, p, e)
    out -= yy[:, None, None]
    return out


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
