"""Particle motion drawn from the prior of Bayesian polishing (Zivanov et al. 2019), plus stage drift.

Per-frame velocities v_{p,f} = s_{p,f+1} - s_{p,f} (f = 1..F-1) have the spatial covariance of
eq. 2, Sigma_V[p, q] = sigma_V^2 exp(-|s_p - s_q| / sigma_D), on the initial positions. With
Sigma_V = W Lambda W^T (eq. 3) and b_i = sqrt(lambda_i) w_i, v = sum_i c_i b_i (eq. 4) per axis.
The prior of eq. 18 (eq. 5 times eq. 11, i.e. eq. 10 in the eigen-basis) is Gaussian in c with, for
each eigen-index i and axis, the (F-1) x (F-1) precision Q_i = I + (lambda_i / sigma_A^2) D^T D,
D the first difference; we sample c_i = L_i^{-T} z with Q_i = L_i L_i^T, z ~ N(0, I).
Everything is in pixels and frames (MotionParams.to_pixels). Positions are at mid-frame times.
"""
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..motion.units import MotionParams


def velocity_covariance(positions, sigma_vel_px, sigma_div_px):
    """Sigma_V of eq. 2 for initial positions (P, 2) px."""
    d = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    if sigma_div_px <= 0:
        return sigma_vel_px ** 2 * (d == 0).astype(float)
    return sigma_vel_px ** 2 * np.exp(-d / sigma_div_px)


def difference_matrix(m):
    """(m-1) x m first-difference operator D: (D c)_f = c_{f+1} - c_f."""
    return np.eye(m - 1, m, 1) - np.eye(m - 1, m)


def time_precision(lam, sigma_acc_px, nvel):
    """Q = I + (lam / sigma_A^2) D^T D over the nvel per-frame coefficients of one eigen-vector
    (eq. 18); sigma_acc_px <= 0 disables the acceleration term (Q = I)."""
    q = np.eye(nvel)
    if sigma_acc_px > 0 and nvel > 1:
        d = difference_matrix(nvel)
        q = q + (lam / sigma_acc_px ** 2) * d.T @ d
    return q


def prior_velocity_covariance(positions, nframes, sigma_vel_px, sigma_div_px, sigma_acc_px):
    """Covariance implied by the prior between v_{p,f} and v_{q,g} of one axis:
    sum_i b_i[p] b_i[q] (Q_i^{-1})[f, g]; returned as (P*(F-1), P*(F-1)), index p*(F-1) + f."""
    lam, w = np.linalg.eigh(velocity_covariance(positions, sigma_vel_px, sigma_div_px))
    lam = np.clip(lam, 0.0, None)
    nvel = nframes - 1
    cov = np.zeros((len(lam) * nvel,) * 2)
    for li, wi in zip(lam, w.T):
        cov += np.kron(li * np.outer(wi, wi), np.linalg.inv(time_precision(li, sigma_acc_px, nvel)))
    return cov


def sample_gp_velocities(positions, nframes, sigma_vel_px, sigma_div_px, sigma_acc_px, rng):
    """Velocities (P, F-1, 2) px/frame drawn exactly from the joint prior of eq. 18."""
    lam, w = np.linalg.eigh(velocity_covariance(positions, sigma_vel_px, sigma_div_px))
    lam = np.clip(lam, 0.0, None)
    nvel = nframes - 1
    coeffs = np.zeros((len(lam), nvel, 2))
    z = rng.standard_normal((len(lam), nvel, 2))
    for i, li in enumerate(lam):
        chol = np.linalg.cholesky(time_precision(li, sigma_acc_px, nvel))
        coeffs[i] = linalg.solve_triangular(chol, z[i], lower=True, trans="T")
    basis = w * np.sqrt(lam)                                    # column i is b_i
    return np.einsum("pi,ifa->pfa", basis, coeffs)


def stage_drift(nframes, drift_px, rng, decay_frames=None, curvature=0.5):
    """Smooth global drift (F, 2) px at mid-frame times, zero at frame 0: speed decaying as
    exp(-t / decay_frames) (default F/3), total path length ``drift_px``, direction random and
    turning by up to +-curvature radians over the movie."""
    if drift_px == 0 or nframes < 2:
        return np.zeros((nframes, 2))
    tau = decay_frames or nframes / 3.0
    t = np.arange(nframes, dtype=float)
    theta = rng.uniform(-np.pi, np.pi) + rng.uniform(-curvature, curvature) * t / nframes
    speed = np.exp(-(t[:-1] + 0.5) / tau)
    speed *= drift_px / speed.sum()
    steps = speed[:, None] * np.stack([np.cos(theta[:-1]), np.sin(theta[:-1])], axis=1)
    return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def substep_offsets(tracks, nsub):
    """Positions within each frame (..., F, nsub, 2) relative to the frame's mean position, moving at
    the frame's central velocity (one-sided at the ends) over symmetric times in (-1/2, 1/2), so the
    mean over sub-steps is exactly the per-frame position (motion blur)."""
    if tracks.shape[-2] < 2 or nsub < 2:
        return np.zeros(tracks.shape[:-1] + (max(nsub, 1), 2))
    vel = np.gradient(tracks, axis=-2)
    times = (np.arange(nsub) + 0.5) / nsub - 0.5
    return vel[..., :, None, :] * times[:, None]


@dataclass
class MotionSample:
    positions: np.ndarray      # (P, F, 2) px, true mid-frame positions (local GP motion + drift)
    velocities: np.ndarray     # (P, F-1, 2) px/frame, diff of positions
    gp_velocities: np.ndarray  # (P, F-1, 2) px/frame, the GP part alone (eq. 2-18)
    global_track: np.ndarray   # (F, 2) px, stage drift alone, zero at frame 0
    substeps: np.ndarray       # (P, F, nsub, 2) px, absolute positions within each frame
    sigmas_px: tuple           # (sigma_vel_px, sigma_div_px, sigma_acc_px) used


def sample_motion(initial_positions, nframes, params, dose_per_frame, pixel_size, rng,
                  drift_A=0.0, nsub=4):
    """Trajectories of P particles starting at ``initial_positions`` (P, 2) px: GP motion drawn from
    the prior with ``params`` (MotionParams in the paper's units) plus stage drift of ``drift_A`` A."""
    if not isinstance(params, MotionParams):
        params = MotionParams(*params)
    sv, sd, sa = params.to_pixels(dose_per_frame, pixel_size)
    s0 = np.asarray(initial_positions, dtype=np.float64)
    v = sample_gp_velocities(s0, nframes, sv, sd, sa, rng)
    drift = stage_drift(nframes, drift_A / pixel_size, rng)
    local = np.concatenate([np.zeros((len(s0), 1, 2)), np.cumsum(v, axis=1)], axis=1)
    pos = s0[:, None, :] + local + drift[None]
    sub = pos[:, :, None, :] + substep_offsets(pos, nsub)
    return MotionSample(pos, np.diff(pos, axis=1), v, drift, sub, (sv, sd, sa))


def noisy_global_track(true_global, rng, noise_px):
    """What an earlier whole-frame motion correction would report: the track (F, 2) plus white
    Gaussian error of ``noise_px`` per frame and axis, re-referenced to zero at frame 0."""
    t = np.asarray(true_global, dtype=np.float64) + noise_px * rng.standard_normal(np.shape(true_global))
    return t - t[0]


def refined_position_errors(nparticles, rng, sigma_px):
    """Errors (P, 2) px of refined particle centres: isotropic Gaussian, ``sigma_px`` per axis."""
    return sigma_px * rng.standard_normal((nparticles, 2))
