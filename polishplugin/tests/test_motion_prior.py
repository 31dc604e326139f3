"""GP prior (eq. 2-5): covariance and basis."""
import numpy as np
import pytest

from polishplugin.core.motion.prior import gp_basis, velocity_covariance
from polishplugin.core.motion.units import MotionParams


def test_covariance_brute_force():
    pos = np.array([[0.0, 0.0], [300.0, 400.0], [100.0, 0.0]])
    s = velocity_covariance(pos, 2.0, 250.0)
    assert s[0, 1] == pytest.approx(4.0 * np.exp(-500.0 / 250.0))
    assert s[0, 2] == pytest.approx(4.0 * np.exp(-100.0 / 250.0))
    np.testing.assert_allclose(np.diag(s), 4.0)


def test_basis_reproduces_covariance():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 4000, size=(25, 2))
    sv, sd, _ = MotionParams(0.5, 5000.0, 2.0).to_pixels(dose_per_frame=1.2, pixel_size=1.0)
    b, lam = gp_basis(pos, sv, sd)
    np.testing.assert_allclose(b @ b.T, velocity_covariance(pos, sv, sd), atol=1e-9 * sv ** 2)
    np.testing.assert_allclose(b.T @ b, np.diag(lam), atol=1e-9 * sv ** 2)
    assert np.all(np.diff(lam) <= 0)


def test_basis_drops_null_space_and_caps_dims():
    pos = np.array([[10.0, 10.0]] * 3 + [[500.0, 0.0]])     # three identical particles: rank 2
    b, lam = gp_basis(pos, 1.0, 100.0)
    assert b.shape == (4, 2)
    np.testing.assert_allclose(b @ b.T, velocity_covariance(pos, 1.0, 100.0), atol=1e-12)
    b1, lam1 = gp_basis(pos, 1.0, 100.0, max_dims=1)
    assert b1.shape == (4, 1) and lam1[0] == pytest.approx(lam[0])


def test_single_particle_basis():
    b, lam = gp_basis([[5.0, 7.0]], 0.8, 1000.0)
    assert b.shape == (1, 1)
    assert b[0, 0] ** 2 == pytest.approx(0.64)


def test_independent_particles_without_divergence():
    s = velocity_covariance([[0, 0], [0, 0]], 1.5, 0.0)
    np.testing.assert_allclose(s, 2.25 * np.eye(2))


def test_to_pixels_matches_relion_unit_formulas():
    """RELION 3.1 MotionEstimator::normalizeSigVel/Div/Acc (reference notes C3): s_vel_px =
    dose_per_frame * s_vel / angpix, s_acc likewise, s_div_px = s_div / angpix, with angpix the
    particles' (coordinate) pixel size. A dose per frame and pixel size away from 1 so that a
    dropped or inverted factor cannot pass."""
    dose, px = 1.73, 0.83
    sv, sd, sa = MotionParams(0.6, 4000.0, 2.2).to_pixels(dose_per_frame=dose, pixel_size=px)
    assert sv == pytest.approx(1.73 * 0.6 / 0.83, rel=1e-12)
    assert sd == pytest.approx(4000.0 / 0.83, rel=1e-12)
    assert sa == pytest.approx(1.73 * 2.2 / 0.83, rel=1e-12)
    assert MotionParams(0.6, 4000.0, 0.0).to_pixels(dose, px)[2] < 0     # no acceleration term



def _eigh_basis(sigma, rel_eps=1e-10, max_dims=None):
    """Eq. 3-4 written out with ``numpy.linalg.eigh``, largest eigenvalue first."""
    lam, w = np.linalg.eigh(sigma)
    order = np.argsort(lam)[::-1]
    lam, w = lam[order], w[:, order]
    keep = lam > rel_eps * lam[0]
    if max_dims:
        keep &= np.arange(len(lam)) < max_dims
    return w[:, keep] * np.sqrt(lam[keep]), lam[keep]


@pytest.mark.parametrize("lapack", [True, False])
def test_basis_made_in_place_equals_the_straightforward_one(monkeypatch, lapack):
    """The in-place basis (Sigma_V a block of rows at a time, dsyevd over Sigma_V's memory,
    columns reordered in place) against eq. 2-4 written out: Sigma_V from the distance matrix
    and ``numpy.linalg.eigh`` (to rounding, up to each column's sign), and the same eigh of the
    same Sigma_V (bit for bit: the tracks must not move)."""
    from polishplugin.core.motion import prior
    monkeypatch.setattr(prior, "BLOCK_VALUES", 1000)        # 12 rows per block of 80
    if not lapack:
        monkeypatch.setattr(prior, "_DSYEVD", None)
    rng = np.random.default_rng(5)
    pos = np.concatenate([rng.uniform(0, 2048, (60, 2)), [[7.0, 9.0]] * 3,   # a null space
                          rng.uniform(100, 110, (17, 2))])
    sv, sd = 0.7, 900.0
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(velocity_covariance(pos, sv, sd), sv ** 2 * np.exp(-d / sd),
                               rtol=1e-14, atol=0)
    for max_dims in (None, 40):
        b, lam = gp_basis(pos, sv, sd, max_dims=max_dims)
        b0, lam0 = _eigh_basis(sv ** 2 * np.exp(-d / sd), max_dims=max_dims)
        assert b.shape == b0.shape and b.shape[1] == (78 if max_dims is None else 40)
        np.testing.assert_allclose(lam, lam0, rtol=1e-12, atol=1e-13 * lam0[0])
        sign = np.sign((b * b0).sum(axis=0))
        np.testing.assert_allclose(b * sign, b0, rtol=0, atol=1e-10 * sv)
        b1, lam1 = _eigh_basis(velocity_covariance(pos, sv, sd), max_dims=max_dims)
        np.testing.assert_array_equal(lam, lam1)
        np.testing.assert_array_equal(b, b1)
        assert b.flags.f_contiguous == b1.flags.f_contiguous


def test_eigh_in_place_gives_numpys_eigh_bit_for_bit():
    """numpy's own dsyevd over the array's memory: eigh's numbers exactly (the fit's tracks
    stay those of the eigh basis), eigenvectors as rows; this install has that dsyevd."""
    from polishplugin.core.motion import prior
    assert prior._DSYEVD is not None
    s = velocity_covariance(np.random.default_rng(3).uniform(0, 2048, (150, 2)), 0.6, 3000.0)
    lam0, w0 = np.linalg.eigh(s)
    lam = prior.eigh_in_place(s)
    np.testing.assert_array_equal(lam, lam0)
    np.testing.assert_array_equal(s, w0.T)
