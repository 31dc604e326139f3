"""Motion-prior sigmas chosen from one micrograph's own CC maps (empirical Bayes, type-II ML).

The paper (seed zivanov2019 §2.2) trains (sigma_vel, sigma_div, sigma_acc) by maximising the TCC
over many particles, which needs a separate job; RELION's defaults are often far from what the
data need. Here they are chosen per micrograph by maximising the marginal likelihood of the data
under the prior of eq. 2-11, with the data term of eq. 15-16 replaced by its quadratic
(Laplace) approximation around a pilot MAP track r_{p,f}:

    CC_{p,f}(s) ~ CC_{p,f}(r) + g_{p,f}.(s - r) - a_{p,f} |s - r|^2 / 2,

g the CC gradient at r and a_{p,f} the expected (Fisher) curvature of the CC peak,
a = amp^2 (2 pi)^2 sum_k |k|^2 / 2 D_f^2 |V_p|^2 w(k) (:func:`peak_curvature`, isotropic half
trace; the same weights w as the CC maps). Since log p(X | s) = CC(s) + const on the likelihood
scale (:mod:`.energy`), each particle-frame becomes a Gaussian pseudo-observation
y = r + g / a with precision a per axis. Positions s (P x F per axis) have the prior of eq. 2-11
on the velocities v_f = s_{f+1} - s_f with flat initial positions:

    precision of v:  Lambda = I_(F-1) (x) Sigma_V^-1 + (D^T D) (x) I_P / sigma_A^2,

D the first difference over frames (eq. 11 in velocity coordinates: u = B c has precision
1 / lambda_i + D^T D / sigma_A^2 per GP dimension). Then with H = diag(a) + G^T Lambda G
(G: positions to velocities) and b = a y, per axis and up to a constant in the sigmas

    log p(y | sigmas) = 1/2 log det Lambda - 1/2 log det H + 1/2 b^T H^-1 b       (Gaussian integral)

H is banded (half-bandwidth 2P in frame-major order): one banded Cholesky per evaluation. The
sigmas are searched in log space (a scan of sigma_vel, then Nelder-Mead on all three within
bounds); their spread is the Laplace width of the evidence in log sigma (a factor exp(sd);
``inf`` where the data do not constrain a sigma). All quantities in pixels and frames.
"""
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.optimize import minimize

from .cc_store import cc_interp
from .observation import cc_scale_factor, crop_plane, inverse_noise_weights

#: search bounds and start in the paper's units (sigma_vel, sigma_div, sigma_acc: A/(e/A^2), A,
#: A/(e/A^2)): far wider than motion seen in practice; the start is RELION's GUI default
SEARCH_LOWER = (0.02, 100.0, 0.05)
SEARCH_UPPER = (20.0, 1e6, 50.0)
SEARCH_START = (0.2, 5000.0, 2.0)

#: relative floor of the GP eigenvalues (directions the fit's basis drops are held nearly fixed)
REL_EPS = 1e-8


def peak_curvature(predictions, damage, noise_power, amplitude, cc_scale="likelihood",
                   max_ring=None, n=None):
    """Expected curvature a_{p,f} (P, F) of the fitted CC (the maps times sign * amplitude) at its
    peak, per axis: amp^2 (2 pi)^2 sum_k (|k|^2 / 2) D_f^2 |V_p|^2 w(k), k in cycles per pixel of
    the n x n patch, w the CC maps' weights (1 / S, DC and rings beyond ``max_ring`` excluded,
    times the cc_scale factor). predictions (P, m, m) full fft2 planes, damage (F, m, m) or None."""
    m = predictions.shape[-1]
    n = m if n is None else n
    k = np.fft.fftfreq(m) * m / n
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    w = (inverse_noise_weights(m, n, noise_power, max_ring) * cc_scale_factor(n, cc_scale)
         * (2 * np.pi) ** 2 * k2 / 2)
    dmg2 = np.ones((1, m, m)) if damage is None else crop_plane(np.asarray(damage), m) ** 2
    from .micrograph import particle_blocks
    return amplitude ** 2 * particle_blocks(
        lambda v: np.einsum("pyx,fyx->pf", np.abs(v) ** 2 * w, dmg2), predictions, len(dmg2))


def pseudo_observations(cc_fit, tracks, cut, curvature, backend):
    """y (P, F, 2) = r + g / a from the fitted CC maps at the pilot tracks r (P, F, 2)."""
    s = tracks if cut is None else tracks - cut
    _, g = cc_interp(backend, cc_fit, s)
    return tracks + g / curvature[..., None]


@njit(cache=True)
def band_cholesky_solve(ab, b):
    """Cholesky H = L L^T of a symmetric positive-definite band matrix given in LAPACK upper
    storage (ab[u + i - j, j] = H[i, j], i <= j), row by row, single-threaded; returns
    (log det H, sum over the columns of b (n, k) of b^T H^-1 b); log det = -inf when H is not
    positive definite. (LAPACK's dpbtrf spins BLAS threads costing several times the work at
    these sizes.)"""
    u = ab.shape[0] - 1
    n = ab.shape[1]
    L = ab.T.copy()                          # L[i, t]: entry (i, i - u + t), t = u: diagonal
    logdet = 0.0
    for i in range(n):
        k0 = max(0, i - u)
        oi = u - i
        for j in range(k0, i + 1):
            oj = u - j
            s = L[i, j + oi]
            for k in range(k0, j):
                s -= L[i, k + oi] * L[j, k + oj]
            if j == i:
                if s <= 0.0:
                    return -np.inf, 0.0
                L[i, u] = np.sqrt(s)
                logdet += 2.0 * np.log(L[i, u])
            else:
                L[i, j + oi] = s / L[j, u]
    quad = 0.0
    z = np.empty(n)
    for c in range(b.shape[1]):              # L z = b, then b^T H^-1 b = |z|^2
        for i in range(n):
            s = b[i, c]
            oi = u - i
            for k in range(max(0, i - u), i):
                s -= L[i, k + oi] * z[k]
            z[i] = s / L[i, u]
            quad += z[i] * z[i]
    return logdet, quad


class Evidence:
    """log p(y | sigmas) of the module doc for one micrograph (pixels, frames)."""

    def __init__(self, positions, y, precision, kernel="exp"):
        self.pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        self.y = np.asarray(y, dtype=np.float64)
        self.a = np.asarray(precision, dtype=np.float64)
        P, F = self.a.shape
        if P == 0 or F < 2 or self.y.shape != (P, F, 2) or len(self.pos) != P:
            raise ValueError("evidence needs P > 0 particles, F >= 2 frames and matching shapes")
        if not np.all(np.isfinite(self.y)) or not np.all(self.a > 0):
            raise ValueError("pseudo-observations must be finite with positive precision")
        self.P, self.F, self.kernel = P, F, kernel
        self.dist = np.hypot(*(self.pos[:, None, :] - self.pos[None, :, :]).transpose(2, 0, 1))
        d = np.diff(np.eye(F), axis=0)                       # G_f (F-1, F)
        self.tf = d.T @ d                                    # tridiagonal
        dd = np.diff(np.eye(F - 1), axis=0)                  # D (F-2, F-1)
        self.t2 = d.T @ (dd.T @ dd) @ d                      # pentadiagonal
        self.mu = np.linalg.eigvalsh(dd.T @ dd) if F > 2 else np.zeros(F - 1)
        self.b = (self.a[..., None] * self.y).transpose(1, 0, 2).reshape(P * F, 2)  # frame-major
        self._eig = {}
        self.evaluations = 0
        ar = np.arange(P)
        self._band = []                                       # (rows, cols, p, q) per offset
        for dlt in range(3):                                  # block offsets (f, f + dlt)
            kk = dlt * P + ar[None, :] - ar[:, None]          # j - i for entries (p, q)
            pp, qq = np.nonzero((kk >= 0) & (kk <= 2 * P))
            g = np.arange(dlt, F)
            self._band.append((2 * P - kk[pp, qq], (g[:, None] * P + qq[None, :]), pp, qq))

    def _kernel_eig(self, sigma_div):
        key = float(sigma_div)
        if key not in self._eig:
            if len(self._eig) > 64:
                self._eig.clear()
            if self.kernel == "exp":
                k = np.exp(-self.dist / sigma_div)
            else:
                k = np.exp(-0.5 * self.dist ** 2 / sigma_div)
            lam, w = np.linalg.eigh(k)
            self._eig[key] = (np.maximum(lam, REL_EPS * lam.max()), w)
        return self._eig[key]

    def __call__(self, sigma_vel, sigma_div, sigma_acc):
        """log evidence (both axes) up to a constant; -inf where H is not positive definite."""
        self.evaluations += 1
        P, F = self.P, self.F
        kappa, w = self._kernel_eig(sigma_div)
        lam = sigma_vel ** 2 * kappa
        sinv = (w / lam) @ w.T                                # Sigma_V^-1
        iacc = 0.0 if sigma_acc <= 0 else 1.0 / sigma_acc ** 2
        logdet_lam = float(np.sum(np.log(1.0 / lam[:, None] + iacc * self.mu[None, :])))
        u = 2 * P
        ab = np.zeros((u + 1, P * F))
        for dlt, (rows, cols, pp, qq) in enumerate(self._band):
            vals = np.diagonal(self.tf, dlt)[:, None] * sinv[pp, qq][None, :]   # (F-dlt, n)
            if iacc:
                vals = vals + np.diagonal(self.t2, dlt)[:, None] * iacc * (pp == qq)[None, :]
            if dlt == 0:
                vals = vals + self.a[pp, :].T * (pp == qq)[None, :]
            ab[rows[None, :], cols] = vals
        logdet_h, quad = band_cholesky_solve(ab, self.b)
        if not np.isfinite(logdet_h):
            return -np.inf
        return logdet_lam - logdet_h + 0.5 * quad


@dataclass
class SigmaSearch:
    """Start and bounds of the search, all (sigma_vel, sigma_div, sigma_acc) in px / frames."""
    start: tuple
    lower: tuple
    upper: tuple
    scan: int = 7                 # sigma_vel values of the first scan (log-spaced over the bounds)
    max_evals: int = 60           # Nelder-Mead evaluations
    xatol: float = 0.03           # simplex size in log sigma to stop
    fit_acc: bool = True          # False: sigma_acc stays at start


@dataclass
class SigmaChoice:  # noqa: D101
    sigmas_px: tuple
    log_sd: tuple                 # Laplace sd of log sigma (inf: not constrained)
    log_evidence: float
    evaluations: int

    def spread(self):
        """Multiplicative spread exp(sd) per sigma (inf where flat)."""
        return tuple(float(np.exp(s)) if np.isfinite(s) and s < 50 else float("inf")
                     for s in self.log_sd)


def search_in_pixels(dose_per_frame, pixel_size, start=SEARCH_START, lower=SEARCH_LOWER,
                     upper=SEARCH_UPPER, **kw):
    """A :class:`SigmaSearch` from paper-unit start and bounds (:mod:`.units`)."""
    from .units import MotionParams
    conv = lambda t: MotionParams(*t).to_pixels(dose_per_frame, pixel_size)  # noqa: E731
    return SigmaSearch(conv(start), conv(lower), conv(upper), **kw)


def sigmas_in_paper_units(sigmas_px, dose_per_frame, pixel_size):
    """Inverse of :meth:`.units.MotionParams.to_pixels` (sigma_acc <= 0 stays -1)."""
    v, d, a = sigmas_px
    return (v * pixel_size / dose_per_frame, d * pixel_size,
            a * pixel_size / dose_per_frame if a > 0 else -1.0)


def choose_sigmas(evidence, search):
    """Maximise ``evidence`` over log sigmas within the bounds of ``search``
    (:class:`SigmaSearch`); returns a :class:`SigmaChoice`."""
    lo = np.log(np.asarray(search.lower, dtype=np.float64))
    hi = np.log(np.asarray(search.upper, dtype=np.float64))
    start = np.asarray(search.start, dtype=np.float64)
    # a sigma_acc that is not fitted keeps its start value, also when it is off (<= 0)
    x0 = np.clip(np.log(np.where(start > 0, start, 1.0)), lo, hi)
    free = [0, 1, 2] if search.fit_acc else [0, 1]

    def full(z):
        x = x0.copy()
        x[free] = np.clip(z, lo[free], hi[free])
        return x

    def sigmas(x):
        s = np.exp(x)
        if not search.fit_acc:
            s[2] = start[2]
        return s

    def negf(z):
        x = full(z)
        v = evidence(*sigmas(x))
        # beyond the bounds: flat continuation minus a penalty so the simplex comes back
        over = np.sum(np.maximum(lo[free] - z, 0) + np.maximum(z - hi[free], 0))
        return (-v if np.isfinite(v) else 1e300) + 1e3 * over

    best_v, best_z = negf(x0[free]), x0[free]
    for lv in np.linspace(lo[0], hi[0], search.scan):
        z = x0[free].copy()
        z[0] = lv
        v = negf(z)
        if v < best_v:
            best_v, best_z = v, z
    step = np.array([0.7] * len(free))
    simplex = np.vstack([best_z] + [best_z + np.diag(step)[i] for i in range(len(free))])
    res = minimize(negf, best_z, method="Nelder-Mead",
                   options=dict(initial_simplex=simplex, xatol=search.xatol, fatol=1e-3,
                                maxfev=search.max_evals))
    z = res.x if res.fun <= best_v else best_z
    x = full(z)
    sd = np.full(3, np.inf)
    sd[free] = _laplace_sd(negf, np.clip(z, lo[free], hi[free]))
    if not search.fit_acc:
        sd[2] = 0.0
    return SigmaChoice(tuple(float(v) for v in sigmas(x)), tuple(float(v) for v in sd),
                       float(-negf(z)), evidence.evaluations)


def _laplace_sd(negf, z, h=0.25):
    """sd of each log sigma from the central-difference Hessian of -log evidence (inf when the
    Hessian is not positive definite along it)."""
    d = len(z)
    f0 = negf(z)
    hess = np.zeros((d, d))
    e = np.eye(d) * h
    fp = [negf(z + e[i]) for i in range(d)]
    fm = [negf(z - e[i]) for i in range(d)]
    for i in range(d):
        hess[i, i] = (fp[i] - 2 * f0 + fm[i]) / h ** 2
        for j in range(i + 1, d):
            hess[i, j] = hess[j, i] = (negf(z + e[i] + e[j]) - fp[i] - fp[j] + f0) / h ** 2
    try:
        cov = np.linalg.inv(hess)
        var = np.diag(cov)
    except np.linalg.LinAlgError:
        return np.full(d, np.inf)
    return np.where((var > 0) & (np.diag(hess) > 0), np.sqrt(np.abs(var)), np.inf)


#: particles of one micrograph the evidence uses at most (an evaluation costs ~P^3 F)
MAX_PARTICLES = 32


def choose_for_micrograph(cc_fit, centres, initial_tracks, cut, curvature, search, backend,
                          prior_mean="zero", rounds=1, kernel="exp", max_particles=MAX_PARTICLES,
                          max_dims=None):
    """Sigmas (px) for one micrograph: a pilot MAP fit at ``search.start``, the pseudo-observations
    around its tracks, the evidence maximum; ``rounds`` > 1 re-expands around the MAP at the
    previous choice; 0: around the initial tracks (no pilot fit). cc_fit: the CC maps times sign *
    amplitude (what the fit uses); curvature (P, F): :func:`peak_curvature`. The evidence uses at
    most ``max_particles`` particles
    (evenly spaced in the input order; the pilot fit uses all, with at most ``max_dims`` GP
    dimensions). Returns a :class:`SigmaChoice`."""
    from .fit import fit_tracks
    sig = tuple(search.start)
    init = np.asarray(initial_tracks, dtype=np.float64)
    choice = None
    for r in range(max(1, int(rounds))):
        if rounds > 0:
            tracks = fit_tracks(cc_fit, centres, sig, init, cut, backend=backend,
                                prior_mean=prior_mean, kernel=kernel, max_dims=max_dims).tracks
        else:                     # expand around the initial tracks: no pilot fit
            tracks = init
        y = pseudo_observations(cc_fit, tracks, cut, curvature, backend)
        if prior_mean == "initial":
            y = y - init
        sub = np.arange(len(y))
        if len(sub) > max_particles:
            sub = np.unique(np.linspace(0, len(y) - 1, max_particles).round().astype(int))
        step = SigmaSearch(sig, search.lower, search.upper, search.scan if r == 0 else 0,
                           search.max_evals, search.xatol, search.fit_acc)
        new = choose_sigmas(Evidence(np.asarray(centres)[sub], y[sub], curvature[sub], kernel),
                            step)
        if choice is not None:
            new.evaluations += choice.evaluations
        choice, sig = new, new.sigmas_px
    return choice
