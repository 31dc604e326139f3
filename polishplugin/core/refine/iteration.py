"""One expectation-maximisation pass over a half set (Kimanius et al. 2021, eq. 7-9): pose
posteriors of every image under the current reference (:mod:`.estep`), then B and K accumulated
over the poses with those weights (:func:`.mstep.backproject`). The M-step update itself
(eq. 11 or 17) is :func:`.mstep.map_update` / :func:`.update.regularised_map` on the sums."""
import numpy as np

from ..fourier import shift_phase
from ..geometry import euler_to_matrix
from .estep import PRUNE, centred_projections, log_likelihoods, pose_posteriors


_POSE_POINTS = 1 << 20     # pose x pixel values per back-projection call
_ORIENTATIONS = 256        # orientations projected and scored at a time


def expectation_step(bp, projector, images_fft, ctfs, inv_sigma2, angles, translations,
                     log_prior=None, prune=PRUNE, backend=None):
    """Add a half set's images to ``bp`` (a :class:`~polishplugin.core.reconstruct.Backprojector`)
    weighted by their pose posteriors over ``angles`` (O, 3) x ``translations`` (T, 2).

    images_fft (N, n, n) centred transforms; ctfs (N, n, n) or None; inv_sigma2 (n, n) or
    (N, n, n). The reference is projected and scored ``_ORIENTATIONS`` orientations at a time
    (the (O, n, n) projections are never all in memory). Each significant pose g = (o, t) of
    image i adds w_g s c y_i e_t^* (the particle moved from centre + t back to the centre) and
    w_g s c^2 at orientation o (eq. 9, as :func:`.mstep.backproject`), all images' poses in
    blocks through ``bp``'s backend.
    ``backend``: the E-step scoring backend (None: the default).
    Returns (weights (N, O, T), log marginal likelihoods (N,))."""
    images_fft = np.asarray(images_fft)
    angles = np.asarray(angles, dtype=np.float64)
    translations = np.asarray(translations, dtype=np.float64)
    N, n = len(images_fft), images_fft.shape[-1]
    s2 = np.broadcast_to(np.asarray(inv_sigma2, dtype=np.float64), images_fft.shape)
    if np.any(s2 < 0):
        raise ValueError("inverse noise powers must be non-negative")
    ll = np.empty((N, len(angles), len(translations)))
    for o0 in range(0, len(angles), _ORIENTATIONS):   # projections of a block at a time
        ll[:, o0:o0 + _ORIENTATIONS] = log_likelihoods(
            images_fft, ctfs, centred_projections(projector, angles[o0:o0 + _ORIENTATIONS]),
            translations, inv_sigma2, backend=backend)
    w, log_marginal = pose_posteriors(ll, log_prior, prune)
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    sel = bp.pixels
    s = s2.reshape(N, -1)[:, sel]
    c = np.ones(s.shape) if ctfs is None else np.broadcast_to(
        np.asarray(ctfs, dtype=np.float64), images_fft.shape).reshape(N, -1)[:, sel]
    sy = s * c * images_fft.reshape(N, -1)[:, sel]               # s c y
    scc = s * c * c
    back = shift_phase(n, n, -translations[:, 0], -translations[:, 1]).reshape(
        len(translations), -1)[:, sel]                           # e_t^*: centre + t -> centre
    ii, oo, tt = np.nonzero(w)
    step = max(1, _POSE_POINTS // max(1, sel.size))
    for g0 in range(0, ii.size, step):
        i, o, t = ii[g0:g0 + step], oo[g0:g0 + step], tt[g0:g0 + step]
        wg = w[i, o, t][:, None]
        bp.add(wg * sy[i] * back[t], wg * scc[i], rots[o])
    return w, log_marginal
