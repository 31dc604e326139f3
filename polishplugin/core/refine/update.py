"""One regularised M-step from RELION's back-projector sums: the map that
``relion_refine --external_reconstruct`` expects back (Kimanius et al. 2021, eq. 11 and 17).

Inputs as RELION writes them (BackProjector::externalReconstruct): B (``data``) and K
(``weight``) on the padded half grid before Hermitian completion of the kx = 0 plane, tau^2 per
shell of the original box, the tau^2 fudge factor, the padding factor, the original and current
image sizes. Only |q| < pad * current_size / 2 is used (what RELION itself reads back).
"""
import numpy as np

from ..fourier import half_transform_radius, half_transform_shells
from ..reconstruct import Backprojector
from .gridding import gridding_weights
from .mstep import map_update, prior_precision, unregularised
from .relion_grid import half_to_map, map_to_half

MODES = ("tikhonov", "red")


def completed_sums(data, weight, ori, pad):
    """B and K with the kx = 0 plane summed with its Friedel mates, as RELION's
    enforceHermitianSymmetry (the DC voxel is left as it is)."""
    bp = Backprojector(ori, pad)
    if bp.data.shape != data.shape or bp.weight.shape != weight.shape:
        raise ValueError("data %s / weight %s do not match box %d x padding %d = %s"
                         % (data.shape, weight.shape, ori, pad, bp.data.shape))
    bp.data[...] = data
    bp.weight[...] = weight
    b, k = bp.fourier_data(), bp.fourier_weights()
    b[0, 0, 0], k[0, 0, 0] = data[0, 0, 0], weight[0, 0, 0]
    return b, k


def regularised_map(data, weight, tau2, ori, pad, current_size, fudge=1.0, mode="tikhonov",
                    denoiser=None, lam=1.0, gridding=True, shell_weight=None):
    """Real-space map (ori^3) of eq. 11 (``mode`` "tikhonov") or eq. 17 (``mode`` "red": prior
    mean lam * f(x~), f = ``denoiser`` on the real-space map of x~ = B / K).

    ``gridding``: divide by K + tau^-2 through RELION's iterative gridding weights
    (:mod:`.gridding`, RELION's default) rather than voxel by voxel (RELION's --skip_gridding).
    ``shell_weight``: per shell of the original box, a factor in [0, 1] on the prior mean (0
    beyond the list): lam w(shell) f(x~), a per-shell confidence in the denoiser.
    Returns (map, x~ map or None)."""
    if mode not in MODES:
        raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
    if mode == "red" and denoiser is None:
        raise ValueError("mode 'red' needs a denoiser")
    if not 0.0 <= lam <= 1.0:
        raise ValueError("lambda must lie in [0, 1], got %g" % lam)
    pad = int(round(pad))
    b, k = completed_sums(data, weight, ori, pad)
    inside = half_transform_radius(b.shape[0]) < pad * current_size / 2.0
    b, k = np.where(inside, b, 0.0), np.where(inside, k, 0.0)
    precision = prior_precision(tau2, k, pad, fudge)
    xt_map, prior_mean = None, None
    if mode == "red":
        xt_map = half_to_map(unregularised(b, k), ori, pad)
        if lam > 0:
            prior_mean = lam * map_to_half(denoiser(xt_map), pad)
            if shell_weight is not None:
                w = np.clip(np.asarray(shell_weight, np.float64), 0.0, 1.0)
                shells = half_transform_shells(b.shape[0], pad)
                prior_mean = prior_mean * np.where(shells < len(w),
                                                   w[np.minimum(shells, len(w) - 1)], 0.0)
    if gridding:
        finite = np.isfinite(precision)
        p = np.where(finite, precision, 0.0)
        v = gridding_weights(k + p, inside & finite)
        num = b if prior_mean is None else b + p * prior_mean
        f = np.where(finite, num * v, 0.0 if prior_mean is None else prior_mean)
        f = np.where(inside, f, 0.0)
    else:
        f = np.where(inside, map_update(b, k, precision, prior_mean), 0.0)
    return half_to_map(f, ori, pad), xt_map
