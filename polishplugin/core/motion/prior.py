"""Gaussian-process motion prior (seed zivanov2019 §2.1.2, eq. 2-5).

Velocities of all particles in one frame follow N(0, Sigma_V) per axis, with the exponential
kernel of eq. 2 evaluated on the initial particle positions. The eigendecomposition of eq. 3
(Sigma_V is symmetric positive semi-definite, so its SVD is its eigendecomposition) gives the
basis b_i = sqrt(lambda_i) w_i of eq. 4, in which the velocity prior is a standard normal in the
coefficients (eq. 5). All quantities in pixels and frames (see :mod:`.units`).
"""
import numpy as np


def velocity_covariance(positions, sigma_vel_px, sigma_div_px, kernel="exp"):
    """Sigma_V (P, P) of eq. 2: sigma_V^2 exp(-d / sigma_D), d = distance of initial positions.

    ``kernel="sq_exp"`` gives RELION's ``--sq_exp_ker`` variant sigma_V^2 exp(-d^2 / (2 sigma_D)).
    sigma_div_px <= 0 makes particles independent (Sigma_V = sigma_V^2 I).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if kernel not in ("exp", "sq_exp"):
        raise ValueError("unknown kernel %r (exp or sq_exp)" % kernel)
    if sigma_div_px <= 0:
        return sigma_vel_px ** 2 * np.eye(len(pos))
    # in place: one P x P array besides the two coordinate differences
    d = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
    if kernel == "exp":
        np.divide(d, -sigma_div_px, out=d)            # -d / s: the same number as -(d / s)
    else:
        np.multiply(d, d, out=d)
        np.multiply(d, -0.5, out=d)
        np.divide(d, sigma_div_px, out=d)
    np.exp(d, out=d)
    return np.multiply(d, sigma_vel_px ** 2, out=d)


def gp_basis(positions, sigma_vel_px, sigma_div_px, max_dims=None, rel_eps=1e-10, kernel="exp"):
    """Basis of eq. 3-4: returns (B (P, D), lambdas (D,)) with columns b_i = sqrt(lambda_i) w_i,
    eigenvalues in decreasing order, those below ``rel_eps * max`` dropped, at most ``max_dims``
    (None or <= 0: all). B B^T = Sigma_V on the kept subspace and B^T B = diag(lambda)."""
    if sigma_vel_px <= 0:
        raise ValueError("sigma_vel must be positive (got %g px/frame)" % sigma_vel_px)
    sigma = velocity_covariance(positions, sigma_vel_px, sigma_div_px, kernel)
    if sigma.shape[0] == 0:
        raise ValueError("no particles: the motion prior needs at least one position")
    lam, w = np.linalg.eigh(sigma)
    order = np.argsort(lam)[::-1]
    lam, w = lam[order], w[:, order]
    keep = lam > rel_eps * lam[0]
    if max_dims is not None and max_dims > 0:
        keep &= np.arange(len(lam)) < max_dims
    lam, w = lam[keep], w[:, keep]
    return w * np.sqrt(lam)[None, :], lam
