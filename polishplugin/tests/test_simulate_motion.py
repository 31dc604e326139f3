"""Motion sampled from the prior of Zivanov et al. 2019 (eq. 2, 10, 18) has the implied statistics."""
import numpy as np
import pytest

from polishplugin.core.motion.units import MotionParams
from polishplugin.core.simulate import motion as sm

POS = np.array([[100.0, 120.0], [300.0, 150.0], [180.0, 400.0], [420.0, 380.0]])
NF = 6
SV, SD = 0.7, 300.0


def _samples(sigma_acc, nsamples, seed=0):
    """(2 * nsamples, P * (F-1)) velocity vectors of one axis, index p * (F-1) + f."""
    rng = np.random.default_rng(seed)
    out = [sm.sample_gp_velocities(POS, NF, SV, SD, sigma_acc, rng) for _ in range(nsamples)]
    v = np.array(out)                                   # (N, P, F-1, 2)
    return np.concatenate([v[..., 0], v[..., 1]]).reshape(2 * nsamples, -1)


def _cov_error_bound(cov, n):
    """sqrt of E||S - C||_F^2 = ((tr C)^2 + ||C||_F^2) / n for a zero-mean Gaussian sample cov."""
    return np.sqrt((np.trace(cov) ** 2 + np.sum(cov ** 2)) / n)


def _explicit_prior_cov(sigma_acc):
    """Covariance from the joint density written in particle space (not the eigen-basis):
    precision = I_{F-1} (x) Sigma_V^{-1} + (1/sigma_A^2) D^T D (x) I_P, from eq. 5/9 and eq. 10."""
    sv = sm.velocity_covariance(POS, SV, SD)
    d = sm.difference_matrix(NF - 1)
    prec = np.kron(np.linalg.inv(sv), np.eye(NF - 1)) + np.kron(np.eye(len(POS)), d.T @ d) / sigma_acc ** 2
    return np.linalg.inv(prec)


def test_prior_cov_matches_particle_space_form():
    """Eigen-basis construction (eq. 3, 4, 18) equals the covariance of eq. 2 x eq. 10 directly."""
    for sa in (0.3, 1.0, 5.0):
        np.testing.assert_allclose(sm.prior_velocity_covariance(POS, NF, SV, SD, sa),
                                   _explicit_prior_cov(sa), atol=1e-10)


def test_velocity_covariance_matches_prior():
    sa = 0.4                                            # strong temporal coupling
    n = 4000
    x = _samples(sa, n)
    emp = x.T @ x / len(x)
    cov = _explicit_prior_cov(sa)
    bound = _cov_error_bound(cov, len(x))
    assert np.linalg.norm(emp - cov) < 3 * bound
    # the test has power: ignoring the acceleration term is far outside the error
    no_acc = np.kron(sm.velocity_covariance(POS, SV, SD), np.eye(NF - 1))
    assert np.linalg.norm(emp - no_acc) > 10 * bound


def test_acceleration_statistics():
    sa = 0.4
    n = 4000
    v = _samples(sa, n, seed=1).reshape(2 * n, len(POS), NF - 1)
    acc = np.diff(v, axis=2).reshape(2 * n, -1)
    dd = np.kron(np.eye(len(POS)), sm.difference_matrix(NF - 1))
    cov = dd @ _explicit_prior_cov(sa) @ dd.T
    emp = acc.T @ acc / len(acc)
    assert np.linalg.norm(emp - cov) < 3 * _cov_error_bound(cov, len(acc))
    # accelerations are smaller than sigma_A (prior is a product with the velocity term)
    assert np.sqrt(np.mean(acc ** 2)) < sa


@pytest.mark.parametrize("sa", [1e6, -1.0])
def test_no_acceleration_term_gives_sigma_v(sa):
    n = 3000
    x = _samples(sa, n, seed=2).reshape(2 * n, len(POS), NF - 1)
    sv = sm.velocity_covariance(POS, SV, SD)
    for f in (0, NF - 2):
        emp = x[:, :, f].T @ x[:, :, f] / len(x)
        assert np.linalg.norm(emp - sv) < 3 * _cov_error_bound(sv, len(x))
    # frames independent: cross-frame covariance ~ 0
    cross = x[:, :, 0].T @ x[:, :, 1] / len(x)
    assert np.linalg.norm(cross) < 3 * np.sqrt((np.trace(sv) ** 2) / len(x))


def test_sample_motion_units_drift_and_substeps():
    rng = np.random.default_rng(5)
    params = MotionParams(0.5, 5000.0, 2.0)
    ms = sm.sample_motion(POS, 10, params, 1.25, 1.2, rng, drift_A=6.0, nsub=5)
    assert ms.sigmas_px == params.to_pixels(1.25, 1.2)
    assert ms.positions.shape == (4, 10, 2) and ms.substeps.shape == (4, 10, 5, 2)
    np.testing.assert_allclose(ms.positions[:, 0], POS)
    np.testing.assert_allclose(ms.substeps.mean(axis=2), ms.positions, atol=1e-12)
    np.testing.assert_allclose(np.diff(ms.positions, axis=1), ms.velocities)
    drift_steps = np.broadcast_to(np.diff(ms.global_track, axis=0), ms.velocities.shape)
    np.testing.assert_allclose(ms.velocities - ms.gp_velocities, drift_steps, atol=1e-12)
    path = np.sum(np.linalg.norm(np.diff(ms.global_track, axis=0), axis=1))
    assert path == pytest.approx(6.0 / 1.2)
    np.testing.assert_allclose(ms.global_track[0], 0.0)


def test_noisy_global_track_and_refined_errors():
    rng = np.random.default_rng(6)
    true = np.cumsum(np.ones((8, 2)), axis=0)
    noisy = sm.noisy_global_track(true, rng, 0.0)
    np.testing.assert_allclose(noisy, true - true[0])
    many = np.array([sm.noisy_global_track(true, rng, 0.5) for _ in range(2000)])
    np.testing.assert_allclose(many[:, 0], 0.0)
    assert np.std(many[:, 3, 0] - (true[3, 0] - true[0, 0])) == pytest.approx(0.5 * np.sqrt(2), rel=0.08)
    e = sm.refined_position_errors(5000, rng, 0.7)
    assert e.shape == (5000, 2) and np.std(e) == pytest.approx(0.7, rel=0.05)
