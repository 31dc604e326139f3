"""Per-frame relative B-factors from the FCC: the fit of eq. 21 of Zivanov et al. (2019).

Model: FCC(f, kappa) ~ D_kappa exp(C_f + B_f s_kappa^2 / 4), with s_kappa = kappa / (box * px)
in 1/A (ring kappa of a box of ``box`` pixels of ``px`` A).

Units and conventions
---------------------
* B_f is the standard crystallographic *amplitude* B-factor in A^2: the signal amplitude of frame f
  is multiplied by exp(B_f s^2 / 4); B_f < 0 means decay. This is the convention of
  :func:`polishplugin.core.damage.bfactor_filter` used by the simulator, so simulated and fitted
  B-factors compare directly. C_f is the natural log of the frame's overall scale.
* The paper prints the exponent as ``C_f + 4 B_f kappa^2`` without stating the unit of kappa. The
  numbers it reports are RELION's, which equal our B_f up to the few-percent factor below, so the
  printed form is to be read as ``B_f kappa^2 / 4`` with kappa in 1/A -- what we implement.
* RELION (DamageHelper::fitBkFactors) fits FCC = scale_k * a_f * exp(-k^2 / (2 sigma_f^2)), k the
  ring index in pixels of the reference box s_ref, and writes to ``bfactors.star``
  rlnBfactorUsedForSharpening = -8 px^2 sh^2 / sigma_f^2 with sh = s_ref/2 + 1 (the half-box
  width of its Fourier images, not the box) and rlnFittedInterceptGuinierPlot = ln a_f.
  Since k = s * s_ref * px, exp(-k^2 / (2 sigma^2)) = exp(B s^2 / 4) gives
  B = -2 s_ref^2 px^2 / sigma^2, hence B_relion = B * 4 sh^2 / s_ref^2 = B * ((s_ref + 2) / s_ref)^2
  (3 % larger in magnitude for a 128 box), and C = ln a_f unchanged (:func:`to_relion`,
  :func:`from_relion`, :func:`relion_sigma`). RELION's sigma > 0 restricts it to B < 0; when it
  reads a bfactors.star it shifts all B so that the largest is -1 (a change of gauge).

Gauge: adding beta to every B_f and gamma to every C_f is undone by D_kappa -> D_kappa
exp(-gamma - beta s^2 / 4), so only relative values are defined. We report max_f B_f = 0 and
C_f = 0 for that (best) frame, and rescale D so the model is unchanged. The weights of eq. 22
do not depend on the gauge.
"""
from dataclasses import dataclass

import numpy as np

_TINY = 1e-12


@dataclass
class BFactorFit:
    bfactors: np.ndarray     # (F,) B_f, A^2, max 0
    scales: np.ndarray       # (F,) C_f, 0 for the frame of max B
    ring_scales: np.ndarray  # (nrings,) D_kappa (>= 0)
    rings: tuple             # (k0, k1): rings k0 <= kappa < k1 were fitted
    box: int
    pixel_size: float

    def model(self):
        """Fitted FCC model D_kappa exp(C_f + B_f s^2 / 4), (F, nrings)."""
        s = ring_frequencies(len(self.ring_scales), self.box, self.pixel_size)
        return model_fcc(self.bfactors, self.scales, self.ring_scales, s)


def ring_frequencies(nrings, box, pixel_size):
    """Spatial frequency s_kappa = kappa / (box * px) of rings 0..nrings-1, in 1/A."""
    return np.arange(nrings) / (box * pixel_size)


def fit_ring_range(box, pixel_size, high_res, low_res=20.0, nrings=None):
    """Rings (k0, k1) fitted between ``low_res`` and ``high_res`` A, as RELION:
    k0 = int(box px / low_res), k1 = int(box px / high_res), rings k0 <= kappa < k1."""
    if high_res <= 0 or low_res <= high_res:
        raise ValueError("need 0 < high_res (%g A) < low_res (%g A)" % (high_res, low_res))
    k0 = max(int(box * pixel_size / low_res), 1)
    k1 = int(box * pixel_size / high_res)
    if nrings is not None:
        k1 = min(k1, nrings)
    if k1 - k0 < 2:
        raise ValueError("fewer than 2 Fourier rings between %g and %g A" % (low_res, high_res))
    return k0, k1


def model_fcc(bfactors, scales, ring_scales, s):
    """D_kappa exp(C_f + B_f s_kappa^2 / 4), (F, nrings) (eq. 21)."""
    b = np.asarray(bfactors, dtype=np.float64)[:, None]
    c = np.asarray(scales, dtype=np.float64)[:, None]
    return np.asarray(ring_scales)[None, :] * np.exp(c + b * np.asarray(s)[None, :] ** 2 / 4.0)


def normalise_gauge(bfactors, scales, ring_scales=None, s=None):
    """Shift B so that max_f B_f = 0 and C so that C = 0 for that frame; D (if given, with the
    ring frequencies ``s``) is rescaled so the model of eq. 21 is unchanged."""
    b = np.asarray(bfactors, dtype=np.float64)
    c = np.asarray(scales, dtype=np.float64)
    best = int(np.argmax(b))
    beta, gamma = b[best], c[best]
    b, c = b - beta, c - gamma
    if ring_scales is None:
        return b, c
    d = np.asarray(ring_scales, dtype=np.float64) * np.exp(gamma + beta * np.asarray(s) ** 2 / 4.0)
    return b, c, d


def _default_b_range(s_max):
    """B range whose exponent B s_max^2 / 4 spans [-40, 10] at the highest fitted ring."""
    return -160.0 / s_max ** 2, 40.0 / s_max ** 2


def _best_b(p, q0, s2, lo, hi, steps, depth):
    """Recursive 1-D grid search of B_f for every frame at once; for each trial B the scale
    a_f = exp(C_f) is the closed-form least-squares solution. p: (F, K) data, q0: (K,) D_kappa,
    s2: (K,) s^2, lo/hi: (F,) search bounds. Returns (B, a), each (F,)."""
    t = np.linspace(0.0, 1.0, steps)
    for level in range(depth + 1):
        grid = lo[:, None] + (hi - lo)[:, None] * t[None, :]               # (F, S)
        q = q0[None, None, :] * np.exp(grid[..., None] * s2 / 4.0)          # (F, S, K)
        qq = (q * q).sum(-1)
        a = np.maximum((q * p[:, None, :]).sum(-1) / np.maximum(qq, 1e-300), _TINY)
        err = ((p[:, None, :] - a[..., None] * q) ** 2).sum(-1)
        i = np.argmin(err, axis=1)
        rows = np.arange(len(p))
        best, best_a = grid[rows, i], a[rows, i]
        step = (hi - lo) / (steps - 1)
        lo, hi = best - step, best + step
    return best, best_a


def fit_bfactors(fcc, box, pixel_size, high_res, low_res=20.0, n_rounds=5, b_range=None,
                 steps=21, depth=5, smooth=0.0):
    """Fit B_f, C_f, D_kappa of eq. 21 to ``fcc`` (F, nrings) by alternation (section 2.3):
    D_kappa by linear least squares given B, C; for each frame a recursive 1-D search over B_f
    (``steps`` grid points, refined ``depth`` times to +-1 grid step) with exp(C_f) solved
    linearly for each trial B_f. Only rings between ``low_res`` and ``high_res`` A (the
    FSC = 0.143 resolution) are used. D starts as the FCC of the frame with the largest FCC sum
    (as RELION). ``b_range`` (A^2) defaults to exponents in [-40, 10] at ``high_res``.
    ``smooth`` > 0 (A^2) then refines the fit under the smoothness prior of
    :func:`smooth_refine` (B_f and C_f varying smoothly with the frame, i.e. with the dose)."""
    fcc = np.asarray(fcc, dtype=np.float64)
    nframes, nrings = fcc.shape
    k0, k1 = fit_ring_range(box, pixel_size, high_res, low_res, nrings)
    s = ring_frequencies(nrings, box, pixel_size)
    p, s2 = fcc[:, k0:k1], s[k0:k1] ** 2
    lo, hi = b_range if b_range is not None else _default_b_range(s[k1 - 1])
    d = np.maximum(fcc[np.argmax(fcc[:, k0:k1].sum(axis=1))], 0.0)
    for _ in range(n_rounds):
        b, a = _best_b(p, d[k0:k1], s2, np.full(nframes, float(lo)), np.full(nframes, float(hi)),
                       steps, depth)
        c = np.log(a)
        q = np.exp(c[:, None] + b[:, None] * s[None, :] ** 2 / 4.0)         # (F, nrings)
        d = np.maximum((q * fcc).sum(0) / np.maximum((q * q).sum(0), 1e-300), 0.0)
    if smooth > 0:
        b, c, d = smooth_refine(fcc, b, c, d, s, (k0, k1), smooth, n_rounds)
    b, c, d = normalise_gauge(b, c, d, s)
    return BFactorFit(b, c, d, (k0, k1), int(box), float(pixel_size))


def _second_difference(nframes):
    """(F-2, F) matrix of second differences x[f-1] - 2 x[f] + x[f+1]."""
    m = np.zeros((max(nframes - 2, 0), nframes))
    for i in range(nframes - 2):
        m[i, i:i + 3] = (1.0, -2.0, 1.0)
    return m


def smooth_refine(fcc, bfactors, scales, ring_scales, s, rings, tau, n_rounds=5):
    """MAP refinement of eq. 21 under a smoothness prior across frames: minimises
        sum_{f, kappa in rings} (FCC - D_kappa exp(C_f + B_f s^2 / 4))^2 / (2 sigma^2)
        + |Delta2 B|^2 / (2 tau^2) + |Delta2 C|^2 / (2 tau_C^2),
    Delta2 the second difference over frames, sigma^2 the residual variance of the unpenalised
    fit (given), tau in A^2 and tau_C = tau s_max^2 / 4 (the same prior width on the frame's
    log-weight C_f + B_f s^2 / 4 at the highest fitted ring, eq. 22). B, C by L-BFGS with
    analytic gradients alternating with D by linear least squares. A linear or smooth change with
    the dose is not penalised; a frame that jumps away from its neighbours is."""
    from scipy.optimize import minimize
    fcc = np.asarray(fcc, dtype=np.float64)
    k0, k1 = rings
    p, s2 = fcc[:, k0:k1], np.asarray(s, dtype=np.float64)[k0:k1] ** 2 / 4.0
    nframes, dof = p.shape[0], p.size - 2 * p.shape[0] - p.shape[1]
    b, c, d = (np.array(v, dtype=np.float64) for v in (bfactors, scales, ring_scales))
    resid = p - model_fcc(b, c, d[k0:k1], np.sqrt(4.0 * s2))
    var = max(float((resid ** 2).sum()) / max(dof, 1), 1e-30)
    lap = _second_difference(nframes)
    lap2 = lap.T @ lap
    wb, wc = 1.0 / tau ** 2, 1.0 / (tau * s2[-1]) ** 2

    def energy(x, dk):
        bb, cc = x[:nframes], x[nframes:]
        m = dk[None, :] * np.exp(cc[:, None] + bb[:, None] * s2[None, :])
        r = m - p
        e = 0.5 * (r * r).sum() / var + 0.5 * wb * bb @ lap2 @ bb + 0.5 * wc * cc @ lap2 @ cc
        g_c = (r * m).sum(1) / var + wc * lap2 @ cc
        g_b = (r * m * s2[None, :]).sum(1) / var + wb * lap2 @ bb
        return e, np.concatenate([g_b, g_c])

    for _ in range(n_rounds):
        res = minimize(energy, np.concatenate([b, c]), args=(d[k0:k1],), jac=True,
                       method="L-BFGS-B")
        b, c = res.x[:nframes], res.x[nframes:]
        q = np.exp(c[:, None] + b[:, None] * np.asarray(s)[None, :] ** 2 / 4.0)
        d = np.maximum((q * fcc).sum(0) / np.maximum((q * q).sum(0), 1e-300), 0.0)
    return b, c, d


def _relion_sh(box):
    return box // 2 + 1


def to_relion(bfactors, scales, box):
    """(rlnBfactorUsedForSharpening, rlnFittedInterceptGuinierPlot) for our (B_f, C_f) fitted on
    a reference box of ``box`` pixels: B * 4 sh^2 / box^2 (sh = box//2 + 1), and C unchanged."""
    factor = 4.0 * _relion_sh(box) ** 2 / box ** 2
    return np.asarray(bfactors, dtype=np.float64) * factor, np.asarray(scales, dtype=np.float64)


def from_relion(b_relion, k_relion, box):
    """Inverse of :func:`to_relion`: our (B_f, C_f) from a RELION bfactors.star of a ``box``
    pixel reference (gauge not normalised)."""
    factor = box ** 2 / (4.0 * _relion_sh(box) ** 2)
    return np.asarray(b_relion, dtype=np.float64) * factor, np.asarray(k_relion, dtype=np.float64)


def relion_sigma(bfactors, box, pixel_size):
    """RELION's Gaussian width sigma_f (pixels of the ``box`` reference) for our B_f < 0:
    exp(-k^2 / (2 sigma^2)) = exp(B s^2 / 4) with k = s box px."""
    b = np.asarray(bfactors, dtype=np.float64)
    if np.any(b >= 0):
        raise ValueError("RELION's sigma is defined for negative B-factors only")
    return np.sqrt(-2.0 * box ** 2 * pixel_size ** 2 / b)


def fcc_significance(fcc, rings, n_particles, oversampling=1.0):
    """z-score per ring of the frame-averaged FCC in ``rings`` (k0, k1): under pure noise each
    FCC(f, kappa) is a normalised sum over n_particles * pi * kappa independent complex Fourier
    pixels (half of the ring's 2 pi kappa, Hermitian symmetry), times ``oversampling``^2 when the
    sums were taken on patches ``oversampling`` times the FCC's box (polish: patch / particle
    box), so its mean over F frames has a standard deviation of about
    1 / (oversampling sqrt(F n_particles pi kappa))."""
    fcc = np.asarray(fcc, dtype=np.float64)
    k0, k1 = rings
    kappa = np.arange(k0, k1, dtype=np.float64)
    sd = 1.0 / (oversampling * np.sqrt(fcc.shape[0] * max(n_particles, 1) * np.pi
                                       * np.maximum(kappa, 0.5)))
    return fcc[:, k0:k1].mean(axis=0) / sd


def fcc_is_informative(fcc, rings, n_particles, z=5.0, min_rings=3, oversampling=1.0):
    """Whether the FCC carries signal in at least ``min_rings`` rings of the fit range at
    ``z`` standard deviations (:func:`fcc_significance`); a B-factor fit to noise is not."""
    return int(np.sum(fcc_significance(fcc, rings, n_particles, oversampling) > z)) \
        >= min_rings
