"""The doubled negative log-posterior E_AP of seed zivanov2019 eq. 18 and its exact gradient.

Unknowns (eq. 6-7): initial positions s_{p,0} (P, 2) and coefficients c_{i,f} (F-1, D, 2) of the
per-frame velocities v_f = B c_f in the GP basis B (P, D) of :mod:`.prior`; positions
s_{p,f} = s_{p,0} + sum_{f' < f} v_{p,f'} (0-based frames here). They are packed into one
float64 vector x = [s0.ravel(), c.ravel()] (RELION's GpMotionFit uses the same order).

    E(c, s0) = sum_f sum_i |c_{i,f}|^2                                  (E_space, eq. 5, 9)
             + sigma_A^-2 sum_{f>=1} sum_i lambda_i |c_{i,f} - c_{i,f-1}|^2   (E_time, eq. 11)
             - 2 sum_{p,f} CC_{p,f}(s_{p,f} - cut_{p,f})                  (E'_obs, eq. 15-16)

Scale of the CC (what makes the sigmas meaningful). Eq. 12-15: if X and V are whitened so that the
noise is white with unit variance per real-space pixel, then
sum_j (X(j) - V(j - s))^2 = K - 2 CC(s) with CC(s) = sum_j X(j) V(j - s), so -2 CC is the doubled
negative log-likelihood up to a constant and is commensurate with the prior terms, which are also
doubled negative logs. In Fourier terms, with X^(k) = X(k) / sqrt(S(k)) (S: the ring-averaged noise
power, so E|X^|^2 = 1), CC(s) = Re sum_k X^(k) conj(V^(k)) exp(2 pi i k.s) over the full plane.
:func:`polishplugin.core.motion.observation.cc_maps_from_spectra` produces this "likelihood" scale with
``cc_scale="likelihood"``. RELION (relion_motion_refine, whose defaults and trained sigmas users
carry over) computes CC_R = (N / A) CC with N = n^2 pixels and A = pi/4 n (n+1) the number of
Fourier pixels it keeps, and minimises -CC_R + E_space + E_time, i.e. the data term is weighted
by about 2/pi of the exact likelihood. ``cc_scale="relion"`` returns CC_R / 2, so that -2 CC
in this energy equals RELION's -CC_R.

Default here: ``cc_scale="likelihood"``. Our predictions are put on the data's scale by a
least-squares amplitude fitted per micrograph (:mod:`.micrograph`), so -2 CC is the exact doubled
negative log-likelihood and the sigmas keep the statistical meaning of the paper's prior (the
standard deviations of velocity and acceleration). Weighting the data term by c (RELION: c ~ 2/pi)
is the same as scaling every prior sigma by sqrt(c), so RELION-trained sigmas correspond to ours
times ~0.8; ``--cc-scale relion`` reproduces RELION's weighting for users who want its numbers.
On simulated data with known motion the likelihood scale was as good or better (BENCHMARKS.md).
"""
from dataclasses import dataclass

import numpy as np

from .cc_store import cc_interp


@dataclass
class MotionProblem:
    """Everything E_AP needs for one micrograph.

    cc_maps (P, F, W, W): CC windows (zero shift at W//2, see backends.numpy_backend), an array
    or a :class:`.cc_store.CCStore`;
    basis (P, D), lambdas (D,): GP basis of :func:`.prior.gp_basis`;
    sigma_acc_px: sigma_A in px/frame (<= 0 disables E_time);
    cut_shifts (P, F, 2): shift at which each patch was cut (CC(p, f) is read at s - cut);
    backend: module from :func:`polishplugin.backends.get_backend`.
    """
    cc_maps: np.ndarray
    basis: np.ndarray
    lambdas: np.ndarray
    sigma_acc_px: float
    backend: object
    cut_shifts: np.ndarray = None

    @property
    def n_particles(self):
        return self.cc_maps.shape[0]

    @property
    def n_frames(self):
        return self.cc_maps.shape[1]

    @property
    def n_dims(self):
        return self.basis.shape[1]

    @property
    def n_params(self):
        return 2 * self.n_particles + 2 * self.n_dims * (self.n_frames - 1)


def pack(s0, c):
    """x = [s0 (P, 2), c (F-1, D, 2)] as one float64 vector."""
    return np.concatenate([np.ravel(s0), np.ravel(c)]).astype(np.float64)


def unpack(x, n_particles, n_frames, n_dims):
    """Inverse of :func:`pack`: returns (s0 (P, 2), c (F-1, D, 2))."""
    s0 = x[:2 * n_particles].reshape(n_particles, 2)
    c = x[2 * n_particles:].reshape(n_frames - 1, n_dims, 2)
    return s0, c


def _gemm_layout(a):
    """(F-1, D, 2) -> (D, 2 (F-1)) C-ordered: frames and axes as the columns of one matrix."""
    return a.transpose(1, 0, 2).reshape(a.shape[1], -1)


def positions(s0, c, basis):
    """Eq. 6-7: tracks (P, F, 2) from initial positions and velocity coefficients.

    B c_f for all frames and both axes is one (P, D) x (D, 2 (F-1)) product: numpy's batched
    ``matmul(B, c)`` over F-1 frames of 2 columns each was ~10x slower at P = D = 1000, the cost
    that dominated the fit of dense micrographs (BENCHMARKS.md)."""
    v = (basis @ _gemm_layout(c)).reshape(basis.shape[0], -1, 2)  # (P, F-1, 2) velocities
    steps = np.concatenate([np.zeros_like(v[:, :1]), np.cumsum(v, axis=1)], axis=1)
    return s0[:, None, :] + steps


def params_from_tracks(tracks, basis, lambdas):
    """Least-squares (s0, c) for given tracks (P, F, 2): s0 = track at frame 0 and
    c_f = argmin |B c - v_f|^2 = B^T v_f / lambda (B^T B = diag(lambda))."""
    tracks = np.asarray(tracks, dtype=np.float64)
    v = np.diff(tracks, axis=1)                                  # (P, F-1, 2)
    c = np.matmul(basis.T, v.transpose(1, 0, 2)) / lambdas[None, :, None]
    return tracks[:, 0, :].copy(), c


def space_term(c):
    """E_space = sum |c|^2 (eq. 5, 9 doubled); returns (value, dE/dc)."""
    return float(np.sum(c * c)), 2.0 * c


def time_term(c, lambdas, sigma_acc_px):
    """E_time = sigma_A^-2 sum_f sum_i lambda_i |c_f - c_{f-1}|^2 (eq. 11 doubled); (value, dE/dc)."""
    grad = np.zeros_like(c)
    if sigma_acc_px <= 0 or c.shape[0] < 2:
        return 0.0, grad
    w = lambdas[None, :, None] / sigma_acc_px ** 2
    d = np.diff(c, axis=0)                                       # (F-2, D, 2)
    wd = 2.0 * w * d
    grad[1:] += wd
    grad[:-1] -= wd
    return float(np.sum(w * d * d)), grad


def obs_term(s0, c, problem):
    """E'_obs = -2 sum CC_{p,f}(s_{p,f} - cut) (eq. 15-16 doubled); returns (value, dE/ds0, dE/dc).

    Chain rule through eq. 7: ds_{p,f}/ds_{p,0} = 1 and ds_{p,f}/dc_{i,f'} = B_{p,i} for f > f', so
    dE/ds0_p = -2 sum_f g_{p,f} and dE/dc_{f'} = -2 B^T sum_{f > f'} g_f (reverse cumulative sum).
    """
    s = positions(s0, c, problem.basis)
    if problem.cut_shifts is not None:
        s = s - problem.cut_shifts
    val, g = cc_interp(problem.backend, problem.cc_maps, s)
    g_s0 = -2.0 * g.sum(axis=1)
    tail = np.cumsum(g[:, :0:-1], axis=1)[:, ::-1]               # sum_{f > f'} g_f, (P, F-1, 2)
    P, D = problem.basis.shape
    g_c = (-2.0 * (problem.basis.T @ tail.reshape(P, -1))).reshape(D, -1, 2).transpose(1, 0, 2)
    return -2.0 * float(val.sum()), g_s0, g_c


def energy(x, problem):
    """E_AP of eq. 18 and its gradient with respect to x (both float64)."""
    s0, c = unpack(x, problem.n_particles, problem.n_frames, problem.n_dims)
    e_s, g_s = space_term(c)
    e_t, g_t = time_term(c, problem.lambdas, problem.sigma_acc_px)
    e_o, g_s0, g_o = obs_term(s0, c, problem)
    return e_s + e_t + e_o, pack(g_s0, g_s + g_t + g_o)
