"""M-step of MAP refinement on the half (pad n)^3 Fourier grid (z, y, x >= 0, origin at index 0).

Kimanius et al. 2021 (seed kimanius2021):
- eq. 9: B = sum_i E_g[H_g^* sigma_i^-2 y_i], K = sum_i E_g[diag(H_g^* sigma_i^-2 H_g)];
  accumulated by :func:`backproject` into a :class:`~polishplugin.core.reconstruct.Backprojector`.
  With trilinear spreading K holds sum t c^2 sigma^-2 (the sampling density, as RELION), which
  equals diag(H^* sigma^-2 H) for nearest-neighbour interpolation (weights t in {0, 1}).
- eq. 11 (Tikhonov / Gaussian prior): x = B / (K + tau^-2);
- eq. 12: tau^2 = FSC / (1 - FSC) / K (shell mean of K);
- eq. 17 (RED): x = (B + lambda f(x~) tau^-2) / (K + tau^-2), x~ = B / K.
Shells on the padded grid follow RELION: ires = ROUND(|q| / pad) and tau^-2 = 1 / (pad^3 fudge
tau^2) against the raw padded weight (RELION's oversampling correction); shells with tau^2 = 0
get tau^-2 = 1000 K (RELION: "use small value instead").
"""
import numpy as np

from ..fourier import half_transform_radius, half_transform_shells

FSC_MIN, FSC_MAX = 0.001, 0.999     # RELION's clamps before FSC -> SSNR


def backproject(bp, images_fft, rots, ctfs=None, inv_sigma2=None, weights=None):
    """Add images to B and K of eq. 9 in ``bp``: data += w c y / sigma^2, weight += w c^2 / sigma^2.

    images_fft (N, n, n) centred transforms (:func:`~polishplugin.core.reconstruct.centered_fft`),
    rots (N, 3, 3), ctfs and inv_sigma2 (N, n, n) or broadcastable or None (1), weights (N,)
    posterior probabilities of these poses (E-step) or None (1). Image and CTF are both scaled by
    sqrt(w / sigma^2), so the existing CTF insertion gives the weighted sums exactly.
    """
    images_fft = np.asarray(images_fft)
    scale = np.ones(images_fft.shape)
    if inv_sigma2 is not None:
        scale = scale * np.asarray(inv_sigma2, dtype=np.float64)
    if weights is not None:
        scale = scale * np.asarray(weights, dtype=np.float64)[:, None, None]
    if np.any(scale < 0):
        raise ValueError("inverse noise powers and pose weights must be non-negative")
    s = np.sqrt(scale)
    c = s if ctfs is None else np.asarray(ctfs, dtype=np.float64) * s
    bp.insert(images_fft * s, rots, c)


def ssnr_from_fsc(fsc):
    """SSNR = FSC / (1 - FSC) with RELION's clamps (FSC in [0.001, 0.999])."""
    f = np.clip(np.asarray(fsc, dtype=np.float64), FSC_MIN, FSC_MAX)
    return f / (1.0 - f)


def joined_fsc(fsc):
    """The FSC that sets tau^2 for the map of both halves joined, as RELION's
    BackProjector::reconstruct (is_whole_instead_of_half): sqrt(2 FSC / (1 + FSC)) of the half-map
    FSC clamped at 0.001. The square root makes tau^2 larger than the SSNR doubling alone
    (2 FSC / (1 + FSC)) would: beyond the half-map resolution, where the FSC is near 0, the
    doubling alone shrinks the shells ~1000-fold and the little signal they hold is lost."""
    f = np.maximum(np.asarray(fsc, dtype=np.float64), FSC_MIN)
    return np.sqrt(2.0 * f / (1.0 + f))


def shell_mean(values, shells, nshells, inside):
    """Mean of ``values`` over the voxels of each shell (only where ``inside``)."""
    s = shells[inside]
    total = np.bincount(s, values[inside], minlength=nshells)[:nshells]
    count = np.bincount(s, minlength=nshells)[:nshells]
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def tau2_from_fsc(fsc, weight, pad, r_max=None):
    """Eq. 12: tau^2(shell) = SSNR(shell) / mean K(shell), K = pad^3 x the padded weight.

    ``fsc`` one value per shell of the original box; ``weight`` the half-grid K (Hermitian-
    completed); ``r_max`` (voxels of the padded grid) limits the shells to the current size.
    Shells with no weight get tau^2 = 0. Returned in RELION's units, the values RELION writes as
    rlnReferenceTau2 (before the fudge factor)."""
    fsc = np.asarray(fsc, dtype=np.float64)
    size = weight.shape[0]
    radius = half_transform_radius(size)
    inside = radius < (size // 2 if r_max is None else r_max)
    mean_k = shell_mean(pad ** 3 * np.asarray(weight, np.float64),
                        half_transform_shells(size, pad), len(fsc), inside)
    return np.where(mean_k > 0, ssnr_from_fsc(fsc) / np.where(mean_k > 0, mean_k, 1.0), 0.0)


def prior_precision(tau2, weight, pad, fudge=1.0):
    """tau^-2 on every voxel of the half grid (RELION units, against the raw padded weight):
    1 / (pad^3 fudge tau^2(shell)); where tau^2 = 0 (or beyond the list) 1 / (0.001 K), infinite
    where K = 0 too."""
    if fudge <= 0:
        raise ValueError("tau2 fudge factor must be positive, got %g" % fudge)
    tau2 = np.asarray(tau2, dtype=np.float64)
    if np.any(tau2 < 0):
        raise ValueError("tau2 must be non-negative")
    size = weight.shape[0]
    shells = half_transform_shells(size, pad)
    t = np.zeros(shells.shape)
    known = shells < len(tau2)
    t[known] = tau2[shells[known]]
    with np.errstate(divide="ignore"):
        return np.where(t > 0, 1.0 / (pad ** 3 * fudge * np.where(t > 0, t, 1.0)),
                        1.0 / (0.001 * weight))


def map_update(data, weight, precision, prior_mean=None):
    """(B + tau^-2 m) / (K + tau^-2): eq. 11 when the prior mean m is None (zero), eq. 17 with
    m = lambda f(x~). Where tau^-2 is infinite (no data, no signal) the result is m (0 for eq. 11).
    """
    finite = np.isfinite(precision)
    p = np.where(finite, precision, 0.0)
    num = data if prior_mean is None else data + p * prior_mean
    den = weight + p
    out = np.zeros(np.broadcast(data, den).shape, dtype=np.complex128)
    np.divide(num, den, out=out, where=finite & (den > 0))
    if prior_mean is not None:
        out = np.where(finite, out, prior_mean)
    return out


def unregularised(data, weight):
    """x~ = B / K of eq. 17 (0 where K = 0)."""
    out = np.zeros(data.shape, dtype=np.complex128)
    np.divide(data, weight, out=out, where=weight > 0)
    return out
