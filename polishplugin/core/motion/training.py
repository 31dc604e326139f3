"""Training of the motion-prior parameters (sigma_vel, sigma_div, sigma_acc), §2.2 of Zivanov 2019.

Steps (i)-(iii) of §2.2: choose a triplet, align a random subset of micrographs with it on the
alignment circle, score the tracks with the TCC (eq. 19, :mod:`.tcc`) on the evaluation ring;
the triplet is optimised by Nelder-Mead. The alignment is a callable supplied by the caller, so
this module does not depend on how tracks are fitted.

Sigmas are in the paper's units (Table 2): sigma_vel, sigma_acc in A/(e-/A^2), sigma_div in A;
sigma_acc <= 0 disables the acceleration term (written as -1, as RELION does).
"""
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from .tcc import tcc_from_sums, tcc_sums

log = logging.getLogger(__name__)

#: RELION's starting point for training (--s_vel_0, --s_div_0, --s_acc_0).
RELION_START = (0.6, 10000.0, 3.0)
#: RELION's seed for the random choice of micrographs (--seed).
RELION_SEED = 23
#: factors of the optimum at which :func:`flatness` probes the TCC along each log-axis.
FLATNESS_FACTORS = (0.5, 2 ** -0.5, 2 ** 0.5, 2.0)
SIGMA_NAMES = ("sigma_vel", "sigma_div", "sigma_acc")


def choose_subset(particles_per_micrograph, min_particles, rng=RELION_SEED, max_bytes=None,
                  bytes_per_particle=None):
    """Names of randomly chosen micrographs holding >= min_particles particles in total.

    As RELION: micrographs in random order, those with < 2 particles skipped (motion cannot be
    estimated on one particle), stop once min_particles is reached. With max_bytes and
    bytes_per_particle, a micrograph that would exceed the budget is skipped. rng: a
    numpy Generator or a seed (the order is reproducible: names are sorted before shuffling).
    """
    if (max_bytes is None) != (bytes_per_particle is None):
        raise ValueError("max_bytes and bytes_per_particle go together")
    rng = np.random.default_rng(rng)
    names = sorted(particles_per_micrograph)
    chosen, total = [], 0
    for i in rng.permutation(len(names)):
        name = names[i]
        count = int(particles_per_micrograph[name])
        if count < 2:
            continue
        if max_bytes is not None and (total + count) * bytes_per_particle > max_bytes:
            continue
        chosen.append(name)
        total += count
        if total >= min_particles:
            break
    if total < min_particles:
        log.warning("training subset has %d particles, fewer than the %d asked for "
                    "(micrographs with >= 2 particles%s)", total, min_particles,
                    " within the memory budget" if max_bytes is not None else "")
    return chosen


def make_tcc_objective(align, eval_data, reduce=None, backend=None):
    """objective(triplet) -> TCC over all micrographs (eq. 19).

    align(m, triplet) -> tracks (P_m, F, 2) of micrograph m aligned with that triplet (on the
    alignment circle, against the particles' own half maps); eval_data[m]: its
    :class:`.tcc.EvalRingData` (opposite-half predictions on the evaluation ring).
    reduce(sums) -> sums over every process, when the micrographs are split between processes
    (each holds its own; the sums of eq. 19 add); it must return the same value everywhere.
    backend: of :func:`.tcc.tcc_sums` (None: the default).
    """
    def objective(triplet):
        sums = np.zeros(3)
        for m, data in enumerate(eval_data):
            sums += tcc_sums(data, align(m, tuple(triplet)), backend)
        return tcc_from_sums(sums if reduce is None else reduce(sums))
    return objective


@dataclass
class TrainingResult:
    """Optimum of one training run and every evaluation made (trace: (triplet, tcc) in order)."""
    sigmas: tuple
    tcc: float
    trace: list
    n_evals: int
    converged: bool
    message: str
    flatness: dict = field(default_factory=dict)


class _BudgetSpent(Exception):
    pass


class _LogObjective:
    """Negative objective in log-space, with cache, trace and a cap on distinct evaluations.
    The objective sees the sigmas with log-sigmas rounded to ``decimals`` (1e-4: 0.01 %)."""

    def __init__(self, objective, fixed_acc, max_evals, decimals=4):
        self.objective = objective
        self.fixed_acc = fixed_acc
        self.max_evals = max_evals
        self.decimals = decimals
        self.cache = {}
        self.trace = []

    def triplet(self, u):
        u = np.round(np.asarray(u, dtype=np.float64), self.decimals)
        s = tuple(float(v) for v in np.exp(u))
        return s if self.fixed_acc is None else s + (float(self.fixed_acc),)

    def value(self, triplet):
        if triplet not in self.cache:
            if len(self.cache) >= self.max_evals:
                raise _BudgetSpent
            val = float(self.objective(triplet))
            if not math.isfinite(val):
                raise ValueError("objective returned %r at %s" % (val, triplet))
            self.cache[triplet] = val
            self.trace.append((triplet, val))
            log.info("training: s_vel %.4g  s_div %.5g  s_acc %.4g  TCC %.9f", *triplet, val)
        return self.cache[triplet]

    def __call__(self, u):
        return -self.value(self.triplet(u))


def _initial_simplex(u0, log_step):
    return np.vstack([u0, u0 + log_step * np.eye(u0.size)])


def train_sigmas(objective, x0=RELION_START, fit_acc=True, log_step=math.log(2.0), xatol=0.1,
                 fatol=math.inf, max_evals=100, adaptive=False, quadratic_step=True):
    """Maximise objective(triplet) (the TCC after aligning with the triplet) by Nelder-Mead on
    the log-sigmas (§2.2; RELION's MotionParamEstimator uses Nelder-Mead too).

    x0: starting (sigma_vel, sigma_div, sigma_acc). fit_acc=False is RELION's --params2: only
    sigma_vel and sigma_div are fitted and sigma_acc stays at x0[2] (<= 0: disabled).
    log_step: edge of the initial simplex in log-space (ln 2: each sigma doubled).
    xatol: stop once the simplex is smaller than this in every log-sigma; fatol defaults to inf
    so that only the simplex size decides, as in RELION (on a noisy TCC a tolerance on the
    function values means nothing). max_evals caps distinct evaluations (the cache makes
    revisits free). adaptive: scipy's dimension-adapted coefficients.
    quadratic_step: after Nelder-Mead, fit a quadratic in the log-sigmas to the evaluations
    nearest the best one and evaluate its maximum once, kept if it is better. On smooth
    synthetic objectives NM to xatol=0.1 plus this step found the optimum more accurately than
    NM to xatol=0.02 with about 37 instead of 53 evaluations (3 sigmas); set
    quadratic_step=False, xatol=0.02 for plain Nelder-Mead.
    """
    x0 = tuple(float(v) for v in x0)
    n_fit = 3 if fit_acc else 2
    if any(v <= 0 for v in x0[:n_fit]):
        raise ValueError("starting sigmas must be positive, got %s" % (x0[:n_fit],))
    fun = _LogObjective(objective, None if fit_acc else x0[2], max_evals)
    u0 = np.log(np.asarray(x0[:n_fit]))
    try:
        res = minimize(fun, u0, method="Nelder-Mead",
                       options=dict(initial_simplex=_initial_simplex(u0, log_step), xatol=xatol,
                                    fatol=fatol, maxfev=20 * max_evals, adaptive=adaptive))
        converged, message = bool(res.success), str(res.message)
    except _BudgetSpent:
        converged, message = False, "stopped after max_evals=%d evaluations" % max_evals
    if quadratic_step and len(fun.trace) < max_evals:
        u = _quadratic_maximum(fun.trace, n_fit)
        if u is not None:
            fun(u)
    if not converged:
        log.warning("training did not converge: %s", message)
    best, tcc_best = max(fun.trace, key=lambda t: t[1])
    return TrainingResult(sigmas=_disabled_acc(best), tcc=tcc_best, trace=list(fun.trace),
                          n_evals=len(fun.trace), converged=converged, message=message)


def _quadratic_maximum(trace, n_fit, trust=0.3):
    """Maximum of a least-squares quadratic in the log-sigmas through the 2q evaluations nearest
    the best (q coefficients); None unless concave and within ``trust`` of the best."""
    u = np.log(np.array([t[:n_fit] for t, _ in trace]))
    v = np.array([val for _, val in trace])
    iu = np.triu_indices(n_fit)
    n_coef = 1 + n_fit + iu[0].size
    if len(v) < 2 * n_coef:
        return None
    ub = u[np.argmax(v)]
    near = np.argsort(np.abs(u - ub).max(axis=1))[:2 * n_coef]
    d = u[near] - ub
    design = np.hstack([np.ones((d.shape[0], 1)), d, d[:, iu[0]] * d[:, iu[1]]])
    coef, _, rank, _ = np.linalg.lstsq(design, v[near], rcond=None)
    if rank < n_coef:
        return None
    hess = np.zeros((n_fit, n_fit))
    hess[iu] = coef[1 + n_fit:]
    hess = hess + hess.T
    if np.any(np.linalg.eigvalsh(hess) >= 0):
        return None
    step = -np.linalg.solve(hess, coef[1:1 + n_fit])
    return ub + step if np.abs(step).max() <= trust else None


def _disabled_acc(triplet):
    return tuple(triplet[:2]) + ((triplet[2] if triplet[2] > 0 else -1.0),)


def flatness(objective, sigmas, tcc_opt=None, factors=FLATNESS_FACTORS, fit_acc=True):
    """Relative TCC drop (TCC_opt - TCC) / |TCC_opt| when one sigma is multiplied by each factor.

    Returns {name: array over factors}; small drops mean the TCC hardly distinguishes those
    values (the tutorial's warning that repeated trainings give very different sigmas).
    """
    if tcc_opt is None:
        tcc_opt = float(objective(tuple(sigmas)))
    out = {}
    for i, name in enumerate(SIGMA_NAMES[:3 if fit_acc else 2]):
        drops = []
        for fac in factors:
            probe = list(sigmas)
            probe[i] *= fac
            drops.append((tcc_opt - float(objective(tuple(probe)))) / abs(tcc_opt))
        out[name] = np.array(drops)
    return out


@dataclass
class RestartSummary:
    """Per-restart optima and their agreement: geometric mean and spread (max/min) per sigma."""
    results: list
    geo_mean: tuple
    spread: tuple

    def report(self):
        """Plain-text table for the log."""
        lines = ["restart     s_vel        s_div      s_acc         TCC  evals"]
        for i, r in enumerate(self.results):
            lines.append("%7d %9.4g %12.6g %10.4g %11.8f %6d"
                         % ((i,) + tuple(r.sigmas) + (r.tcc, r.n_evals)))
        lines.append("geo.mean %8.4g %12.6g %10.4g" % self.geo_mean)
        lines.append("max/min  %8.3g %12.3g %10.3g" % self.spread)
        for i, r in enumerate(self.results):
            for name, drops in r.flatness.items():
                lines.append("restart %d %s: relative TCC drop at x%s = %s" % (
                    i, name, "/".join("%.3g" % f for f in FLATNESS_FACTORS),
                    " ".join("%.2e" % d for d in drops)))
        return "\n".join(lines)


def summarize_restarts(results):
    """Geometric mean and spread (max/min) of each sigma over restarts (NaN for disabled acc)."""
    s = np.array([r.sigmas for r in results], dtype=np.float64)
    geo, spread = [], []
    for col in s.T:
        if np.all(col > 0):
            geo.append(float(np.exp(np.mean(np.log(col)))))
            spread.append(float(col.max() / col.min()))
        else:
            geo.append(-1.0 if np.all(col <= 0) else math.nan)
            spread.append(math.nan)
    return RestartSummary(results=list(results), geo_mean=tuple(geo), spread=tuple(spread))


def train_with_restarts(make_objective, seeds, x0=RELION_START, jitter=math.log(1.5),
                        fit_acc=True, flatness_factors=FLATNESS_FACTORS, **kwargs):
    """Run :func:`train_sigmas` once per seed and summarise the spread of the optima.

    make_objective(seed) -> objective (e.g. aligning a random subset chosen with that seed; it
    may ignore the seed to reuse one subset). Each restart starts from x0 scaled by
    exp(U(-jitter, jitter)) per fitted sigma (a different simplex), drawn from the seed.
    flatness_factors: probe the TCC around each optimum (:func:`flatness`); None skips it.
    kwargs go to :func:`train_sigmas`.
    """
    results = []
    n_fit = 3 if fit_acc else 2
    for seed in seeds:
        objective = make_objective(seed)
        rng = np.random.default_rng(seed)
        start = list(x0)
        for i in range(n_fit):
            start[i] *= math.exp(rng.uniform(-jitter, jitter))
        res = train_sigmas(objective, x0=start, fit_acc=fit_acc, **kwargs)
        if flatness_factors is not None:
            res.flatness = flatness(objective, res.sigmas, res.tcc, flatness_factors, fit_acc)
        log.info("restart seed %s: s_vel %.4g s_div %.5g s_acc %.4g TCC %.9f (%d evaluations)",
                 seed, *res.sigmas, res.tcc, res.n_evals)
        results.append(res)
    return summarize_restarts(results)


def format_opt_params(triplet):
    """One line "s_vel s_div s_acc" as RELION's opt_params_all_groups.txt (s_acc -1 if off)."""
    s_vel, s_div, s_acc = (float(v) for v in triplet)
    return "%g %g %g\n" % (s_vel, s_div, s_acc if s_acc > 0 else -1.0)


def parse_opt_params(text):
    """(s_vel, s_div, s_acc) from the text of a RELION opt_params file (first non-empty line)."""
    for line in text.splitlines():
        fields = line.split()
        if fields:
            if len(fields) != 3:
                raise ValueError("expected 's_vel s_div s_acc', got %r" % line)
            s_vel, s_div, s_acc = (float(v) for v in fields)
            return s_vel, s_div, (s_acc if s_acc > 0 else -1.0)
    raise ValueError("no parameters in opt_params text")
