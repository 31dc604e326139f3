"""MAP motion estimate of seed zivanov2019 §2.1.4: minimise E_AP (eq. 18) with L-BFGS.

Tolerances follow relion_motion_refine (reference notes C3): at most 10000 iterations, stop when
|grad| < eps max(1, |x|) with eps = 1e-5 (liblbfgs epsilon test; here as L-BFGS-B's projected
gradient bound, evaluated at the start point), memory m = 6, at most 40 line-search steps.
Unlike RELION, L-BFGS works on the GP coefficients scaled to unit curvature
(:func:`coefficient_scales`): the same E_AP and MAP, in ~200 evaluations at 300 to 1000 particles
instead of 800 to 1600 (BENCHMARKS.md).

Prior mean: "zero" (the paper: the GP describes the whole motion) or "initial" (the GP describes
the deviation from the initial tracks, e.g. a MotionCorr global track: positions = initial +
s(c, s0); with flat data the MAP then stays on the initial track).

Modes: "gp" (the paper's GP prior), "none" (no prior: every CC_{p,f} maximised on its own from
its best integer shift in the window, for the benchmark comparison), "global" (one track shared
by all particles, maximising the summed CC, no prior).
"""
import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ...backends import get_backend
from . import energy as en
from .cc_store import CCStore
from .init import global_track_from_cc
from .prior import gp_basis

log = logging.getLogger(__name__)

MODES = ("gp", "none", "global")


class MotionFitError(RuntimeError):
    """The motion of a micrograph could not be estimated (no particles, NaN input or result)."""


@dataclass
class FitResult:
    tracks: np.ndarray      # (P, F, 2) MAP tracks, pixels
    energy: float           # final objective (E_AP for "gp", -2 sum CC otherwise)
    iterations: int
    converged: bool
    message: str
    n_dims: int = 0         # GP basis dimension ("gp" only)


def _lbfgs(fun, x0, max_iters, eps, x0_norm=None):
    """x0_norm: |x0| in the stopping rule (default |x0|; given where L-BFGS works on scaled x)."""
    gtol = eps * max(1.0, float(np.linalg.norm(x0) if x0_norm is None else x0_norm))
    return minimize(fun, x0, jac=True, method="L-BFGS-B",
                    options=dict(maxiter=max_iters, maxcor=6, maxls=40, gtol=gtol, ftol=1e-12))


def _check_finite(name, a):
    if isinstance(a, CCStore):          # the sum of every value written to it
        ok = np.isfinite(a.finite_sum)
    # float32 arrays (the CC maps): one float64 sum instead of a mask of the whole array (a NaN or
    # an infinity makes it non-finite; finite float32 values cannot overflow it)
    elif a.dtype == np.float32:
        ok = np.isfinite(np.sum(a, dtype=np.float64))
    else:
        ok = np.all(np.isfinite(a))
    if not ok:
        raise MotionFitError("%s contains NaN or infinite values" % name)


def _finish(res, tracks, n_dims=0):
    if not np.isfinite(res.fun) or not np.all(np.isfinite(tracks)):
        raise MotionFitError("motion fit diverged: non-finite energy or tracks (%s)" % res.message)
    if not res.success:
        log.warning("motion fit stopped before convergence: %s", res.message)
    return FitResult(tracks, float(res.fun), int(res.nit), bool(res.success), str(res.message),
                     n_dims)


def fit_tracks(cc_maps, positions, sigmas_px, initial_tracks=None, cut_shifts=None, mode="gp",
               max_iters=10000, eps=1e-5, max_dims=None, kernel="exp", backend=None,
               prior_mean="zero", precondition=True):
    """MAP tracks of one micrograph.

    cc_maps (P, F, W, W): CC windows on the scale described in :mod:`.energy` (an array or a
    :class:`.cc_store.CCStore`: modes "none" and "global" read it whole); positions (P, 2):
    particle coordinates in pixels (for Sigma_V); sigmas_px: (sigma_vel, sigma_div, sigma_acc) in
    pixels/frames from ``MotionParams.to_pixels``; initial_tracks (P, F, 2) or None (global track
    from the CC maps); cut_shifts (P, F, 2): where each patch was cut (CC read at track - cut);
    precondition ("gp"): L-BFGS over coefficients scaled by :func:`coefficient_scales` (False:
    over c itself, as RELION; the same minimum, ~P^0.6 times more evaluations).
    Returns a :class:`FitResult`; raises :class:`MotionFitError` on empty or non-finite input.
    """
    if mode not in MODES:
        raise ValueError("mode must be one of %s, got %r" % (MODES, mode))
    if not isinstance(cc_maps, CCStore):
        cc_maps = np.asarray(cc_maps)
    if cc_maps.ndim != 4 or cc_maps.shape[0] == 0 or cc_maps.shape[1] == 0:
        raise MotionFitError("no particles or frames to fit (CC maps of shape %s)" % (cc_maps.shape,))
    P, F = cc_maps.shape[:2]
    _check_finite("CC maps", cc_maps)
    be = get_backend(backend)
    cut = None if cut_shifts is None else np.asarray(cut_shifts, dtype=np.float64)
    if initial_tracks is None:
        initial_tracks = np.repeat(global_track_from_cc(np.asarray(cc_maps))[None], P, axis=0)
        if cut is not None:
            initial_tracks = initial_tracks + cut
    init = np.asarray(initial_tracks, dtype=np.float64)
    if init.shape != (P, F, 2):
        raise ValueError("initial tracks %s do not match (%d, %d, 2)" % (init.shape, P, F))
    _check_finite("initial tracks", init)
    if mode == "gp":
        if prior_mean == "initial":
            # the GP describes the deviation from the initial track: tracks = init + s(c, s0)
            zero = np.zeros_like(init)
            rel_cut = (np.zeros_like(init) if cut is None else cut) - init
            res = _fit_gp(cc_maps, positions, sigmas_px, zero, rel_cut, max_iters, eps, max_dims,
                          kernel, be, precondition)
            res.tracks = res.tracks + init
            return res
        if prior_mean != "zero":
            raise ValueError("prior_mean must be 'zero' or 'initial', got %r" % (prior_mean,))
        return _fit_gp(cc_maps, positions, sigmas_px, init, cut, max_iters, eps, max_dims, kernel, be,
                       precondition)
    cc_maps = np.asarray(cc_maps)
    if mode == "none":
        return _fit_free(cc_maps, cut, max_iters, eps, be)
    return _fit_global(cc_maps, init, cut, max_iters, eps, be)


def data_curvature(cc_maps):
    """h: the median over particle-frames of the curvature of -2 CC (per axis) at the window
    centre (where each patch was cut, near the track), from the 3 x 3 centre; 0 if negative."""
    if isinstance(cc_maps, CCStore):
        centre = cc_maps.centre(1)
        r = centre.shape[-1] // 2
    else:
        centre, r = cc_maps, cc_maps.shape[-1] // 2
    m = np.asarray(centre[:, :, r - 1:r + 2, r - 1:r + 2], dtype=np.float64)
    lap = m[..., 1, 2] + m[..., 1, 0] + m[..., 2, 1] + m[..., 0, 1] - 4.0 * m[..., 1, 1]
    return max(0.0, float(np.median(-lap)))          # -2 (lap / 2): both axes' mean, doubled


def coefficient_scales(lambdas, h):
    """Scales s_i of the coefficients c_i = s_i y_i in which L-BFGS works: 1 / sqrt(2 + h lambda_i),
    the inverse root of E_AP's curvature along c_i (E_space: 2; -2 CC: B^T (h I) B = h diag(lambda)).
    Without them the curvature spans 2 .. 2 + h lambda_1, and lambda_1 grows as the number of
    particles (sigma_D >> the micrograph: nearly one shared motion), so the L-BFGS evaluations grew
    as ~P^0.6 (BENCHMARKS.md)."""
    return 1.0 / np.sqrt(2.0 + h * np.asarray(lambdas, dtype=np.float64))


def _fit_gp(cc_maps, positions, sigmas_px, init, cut, max_iters, eps, max_dims, kernel, be,
            precondition=True):
    sig_vel, sig_div, sig_acc = sigmas_px
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if len(pos) != cc_maps.shape[0]:
        raise ValueError("%d positions for %d particles" % (len(pos), cc_maps.shape[0]))
    _check_finite("positions", pos)
    basis, lambdas = gp_basis(pos, sig_vel, sig_div, max_dims=max_dims, kernel=kernel)
    problem = en.MotionProblem(cc_maps, basis, lambdas, sig_acc, be, cut)
    P, F, D = problem.n_particles, problem.n_frames, problem.n_dims
    x0 = en.pack(*en.params_from_tracks(init, basis, lambdas))
    # L-BFGS over y = x / scales (the same E_AP and minimum; |x0| of the stopping rule unscaled)
    scales = np.ones_like(x0)
    if precondition:
        h = data_curvature(cc_maps)
        scales[2 * P:] = np.repeat(np.tile(coefficient_scales(lambdas, h), F - 1), 2)
        # s0: 1 / sqrt(1 + h), chosen by measurement (BENCHMARKS.md): its own curvature h F
        # (1 / sqrt(1 + h F)) took 2.5x the evaluations on real data (s0 and c are coupled);
        # unscaled, 4x on the high-SNR synthetic test (h ~ 4000)
        scales[:2 * P] = 1.0 / np.sqrt(1.0 + h)

    def fun(y):
        e, g = en.energy(y * scales, problem)
        return e, g * scales
    res = _lbfgs(fun, x0 / scales, max_iters, eps, x0_norm=np.linalg.norm(x0))
    res.x = res.x * scales
    s0, c = en.unpack(res.x, P, F, D)
    return _finish(res, en.positions(s0, c, basis), basis.shape[1])


def _neg2cc(be, cc_maps, cut):
    """-2 sum CC at free positions x = tracks.ravel() and its gradient."""
    shape = cc_maps.shape[:2] + (2,)

    def fun(x):
        s = x.reshape(shape)
        val, g = be.cc_interp(cc_maps, s if cut is None else s - cut)
        return -2.0 * float(val.sum()), -2.0 * g.ravel()
    return fun


def _fit_free(cc_maps, cut, max_iters, eps, be):
    P, F, W = cc_maps.shape[:3]
    flat = cc_maps.reshape(P, F, -1).argmax(axis=-1)
    start = np.stack([flat % W, flat // W], axis=-1).astype(np.float64) - W // 2
    if cut is not None:
        start = start + cut
    res = _lbfgs(_neg2cc(be, cc_maps, cut), start.ravel(), max_iters, eps)
    return _finish(res, res.x.reshape(P, F, 2))


def _fit_global(cc_maps, init, cut, max_iters, eps, be):
    P, F = cc_maps.shape[:2]
    free = _neg2cc(be, cc_maps, cut)

    def fun(x):
        e, g = free(np.repeat(x.reshape(1, F, 2), P, axis=0).ravel())
        return e, g.reshape(P, F, 2).sum(axis=0).ravel()
    res = _lbfgs(fun, init.mean(axis=0).ravel(), max_iters, eps)
    return _finish(res, np.repeat(res.x.reshape(1, F, 2), P, axis=0))
