"""One expectation-maximisation pass over a half set (Kimanius et al. 2021, eq. 7-9): pose
posteriors of every image under the current reference (:mod:`.estep`), then B and K accumulated
over the poses with those weights (:func:`.mstep.backproject`). The M-step update itself
(eq. 11 or 17) is :func:`.mstep.map_update` / :func:`.update.regularised_map` on the sums."""
import numpy as np

from ..fourier import shift_phase
from ..geometry import euler_to_matrix
from .estep import PRUNE, centred_projections, log_likelihoods, pose_posteriors
from .mstep import backproject


def expectation_step(bp, projector, images_fft, ctfs, inv_sigma2, angles, translations,
                     log_prior=None, prune=PRUNE):
    """Add a half set's images to ``bp`` (a :class:`~polishplugin.core.reconstruct.Backprojector`)
    weighted by their pose posteriors over ``angles`` (O, 3) x ``translations`` (T, 2).

    images_fft (N, n, n) centred transforms; ctfs (N, n, n) or None; inv_sigma2 (n, n) or
    (N, n, n). Returns (weights (N, O, T), log marginal likelihoods (N,))."""
    images_fft = np.asarray(images_fft)
    n = images_fft.shape[-1]
    ll = log_likelihoods(images_fft, ctfs, centred_projections(projector, angles),
                         translations, inv_sigma2)
    w, log_marginal = pose_posteriors(ll, log_prior, prune)
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    s2 = np.broadcast_to(np.asarray(inv_sigma2, dtype=np.float64), images_fft.shape)
    for i in range(len(images_fft)):
        o, t = np.nonzero(w[i])
        # move the particle from centre + t back to the centre before inserting at orientation o
        moved = images_fft[i] * shift_phase(n, n, -translations[t, 0], -translations[t, 1])
        c = None if ctfs is None else np.broadcast_to(ctfs[i], moved.shape)
        backproject(bp, moved, rots[o], c, np.broadcast_to(s2[i], moved.shape), w[i, o, t])
    return w, log_marginal
