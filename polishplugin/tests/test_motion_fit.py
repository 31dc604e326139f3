"""MAP fit (eq. 18, L-BFGS) on a tiny synthetic micrograph with known sub-pixel tracks: smooth
random particle images shifted with fourier_shift, CC maps from the observation model."""
import numpy as np
import pytest

from polishplugin.core.fourier import fourier_shift
from polishplugin.core.motion import energy as en
from polishplugin.core.motion.fit import MotionFitError, fit_tracks
from polishplugin.core.motion.observation import (cc_maps_from_spectra, noise_power_from_spectra,
                                                  patch_spectra)
from polishplugin.core.motion.prior import gp_basis

N, R = 40, 7
SIGMAS = (0.6, 800.0, 0.3)           # px/frame, px, px/frame


def _smooth_image(rng, n=N, blur=2.5):
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    return np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * np.exp(-2 * (np.pi * blur * k) ** 2)).real


def _true_tracks(rng, positions, F):
    """Smooth tracks drawn in the GP basis: velocities B c_f with coefficients linear in time."""
    basis, lam = gp_basis(positions, *SIGMAS[:2])
    c0 = rng.normal(scale=0.5, size=(basis.shape[1], 2))
    c1 = rng.normal(scale=0.3, size=(basis.shape[1], 2))
    t = np.linspace(1.0, 0.3, F - 1)[:, None, None]
    c = c0[None] * t + c1[None] * (1 - t)
    return en.positions(rng.uniform(-1, 1, size=(len(positions), 2)), c, basis)


def _micrograph(seed=0, P=6, F=12, tracks=None):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 1500, size=(P, 2))
    if tracks is None:
        tracks = _true_tracks(rng, pos, F)
    imgs = [_smooth_image(rng) for _ in range(P)]
    patches = np.array([[fourier_shift(imgs[p], *tracks[p, f]) for f in range(F)] for p in range(P)])
    preds = np.fft.fft2(np.array(imgs))
    power = np.full(N, np.mean(np.abs(preds) ** 2) * 0.05)     # high-SNR flat "noise" spectrum
    cc = cc_maps_from_spectra(patch_spectra(patches), preds, None, R, power)
    return cc, pos, tracks


def _rms(a, b):
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1))))


@pytest.fixture(scope="module")
def synthetic():
    return _micrograph()


def test_map_recovers_known_tracks(synthetic):
    cc, pos, truth = synthetic
    assert 2.0 < np.abs(truth).max() < R - 2                    # real motion, not a trivial problem
    res = fit_tracks(cc, pos, SIGMAS, backend="numpy")
    assert res.converged, res.message
    assert _rms(res.tracks, truth) <= 0.05
    start = fit_tracks(cc, pos, SIGMAS, backend="numpy", max_iters=0)  # the global initialisation
    assert _rms(start.tracks, truth) > 3 * _rms(res.tracks, truth)


def test_numba_and_numpy_fits_agree(synthetic):
    cc, pos, _ = synthetic
    a = fit_tracks(cc, pos, SIGMAS, backend="numpy")
    b = fit_tracks(cc, pos, SIGMAS, backend="numba")
    # identical kernels up to rounding; the optimiser paths then agree to its tolerance
    np.testing.assert_allclose(b.tracks, a.tracks, atol=1e-3)
    assert b.energy == pytest.approx(a.energy, rel=1e-8)


def test_cut_shifts_are_accounted_for(synthetic):
    cc, pos, truth = synthetic
    P, F = cc.shape[:2]
    cut = np.zeros((P, F, 2))
    cut[:, F // 2:] = [1.0, -1.0]
    # patches cut 1 px further along: the same content appears at track - cut
    moved = np.roll(cc[:, F // 2:], shift=(1, -1), axis=(2, 3))
    cc2 = cc.copy()
    cc2[:, F // 2:] = moved
    res = fit_tracks(cc2, pos, SIGMAS, cut_shifts=cut, backend="numpy")
    assert _rms(res.tracks, truth) <= 0.05


def test_single_particle_micrograph():
    cc, pos, truth = _micrograph(seed=3, P=1, F=8)
    res = fit_tracks(cc, pos, SIGMAS, backend="numpy")
    assert res.n_dims == 1
    assert _rms(res.tracks, truth) <= 0.05


def test_no_prior_and_global_modes():
    F = 8
    g = np.cumsum(np.r_[[[0.0, 0.0]], np.tile([[0.55, -0.35]], (F - 1, 1))], axis=0)
    tracks = np.repeat(g[None], 4, axis=0)
    cc, pos, _ = _micrograph(seed=5, P=4, F=F, tracks=tracks)
    free = fit_tracks(cc, pos, SIGMAS, mode="none", backend="numpy")
    glob = fit_tracks(cc, pos, SIGMAS, mode="global", backend="numpy")
    assert _rms(free.tracks, tracks) <= 0.05
    assert _rms(glob.tracks, tracks) <= 0.05
    assert np.ptp(glob.tracks, axis=0).max() == 0.0          # one shared track


def test_fit_errors():
    cc, pos, truth = _micrograph(seed=7, P=2, F=4)
    bad = cc.copy()
    bad[1, 2, 3, 3] = np.nan
    with pytest.raises(MotionFitError, match="NaN"):
        fit_tracks(bad, pos, SIGMAS, backend="numpy")
    init = truth.copy()
    init[0, 1, 0] = np.inf
    with pytest.raises(MotionFitError, match="initial"):
        fit_tracks(cc, pos, SIGMAS, initial_tracks=init, backend="numpy")
    with pytest.raises(MotionFitError, match="no particles"):
        fit_tracks(np.zeros((0, 4, 15, 15)), np.zeros((0, 2)), SIGMAS, backend="numpy")


def test_prior_helps_on_noisy_data():
    # low-SNR frames, noise spectrum estimated from the patches: the GP prior must beat
    # per-frame maximisation (the point of the paper, Fig. 1)
    rng = np.random.default_rng(11)
    P, F = 8, 12
    pos = rng.uniform(0, 1500, size=(P, 2))
    truth = _true_tracks(rng, pos, F)
    imgs = [_smooth_image(rng) for _ in range(P)]
    clean = np.array([[fourier_shift(imgs[p], *truth[p, f]) for f in range(F)] for p in range(P)])
    noisy = clean + rng.normal(scale=2.0 * clean.std(), size=clean.shape)
    spectra = patch_spectra(noisy)
    cc = cc_maps_from_spectra(spectra, np.fft.fft2(np.array(imgs)), None, R,
                              noise_power_from_spectra(spectra))
    gp = fit_tracks(cc, pos, SIGMAS, backend="numba")
    free = fit_tracks(cc, pos, SIGMAS, mode="none", backend="numba")
    assert _rms(gp.tracks, truth) < 0.7 * _rms(free.tracks, truth)


def test_prior_mean_initial_keeps_the_initial_track_without_data():
    """Flat CC maps carry no information: with the GP centred on the initial track the MAP is
    that track; with the paper's zero-mean prior every particle comes to rest (no velocity)."""
    rng = np.random.default_rng(5)
    P, F, W = 4, 6, 9
    flat = np.zeros((P, F, W, W))
    pos = rng.uniform(0, 500, size=(P, 2))
    init = np.cumsum(rng.normal(scale=0.7, size=(P, F, 2)), axis=1)
    sig = (0.5, 300.0, 1.0)
    kept = fit_tracks(flat, pos, sig, init, mode="gp", prior_mean="initial").tracks
    np.testing.assert_allclose(kept, init, atol=1e-6)
    still = fit_tracks(flat, pos, sig, init, mode="gp", prior_mean="zero").tracks
    np.testing.assert_allclose(np.diff(still, axis=1), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="prior_mean"):
        fit_tracks(flat, pos, sig, init, mode="gp", prior_mean="median")


def _gaussian_posterior_mode(m, a, positions, sigmas_px):
    """Mode of the Gaussian posterior of the tracks, built in track space without the GP basis.

    Data: log p(X | s_pf) = CC_pf(s_pf) + const with CC_pf(s) = -(a/2)|s - m_pf|^2 (eq. 15: CC is
    the log-likelihood on the whitened scale); prior: velocities v_f ~ N(0, Sigma_V) (eq. 2) and
    accelerations v_f - v_{f-1} ~ N(0, sigma_A^2 I) (eq. 10), flat on the start positions. Minimises
    a |s - m|^2 + sum_f v_f^T Sigma_V^-1 v_f + sigma_A^-2 sum_f |v_f - v_{f-1}|^2 per axis by one
    linear solve over the P*F positions."""
    from polishplugin.core.motion.prior import velocity_covariance
    P, F = m.shape[:2]
    sv, sd, sa = sigmas_px
    prec = np.linalg.inv(velocity_covariance(positions, sv, sd))
    n = P * F
    idx = lambda p, f: p * F + f                                  # noqa: E731
    D = np.zeros(((F - 1) * P, n))                               # velocities v_f = s_{f+1} - s_f
    for f in range(F - 1):
        for p in range(P):
            D[f * P + p, idx(p, f + 1)] += 1.0
            D[f * P + p, idx(p, f)] -= 1.0
    Q = D.T @ np.kron(np.eye(F - 1), prec) @ D
    if sa > 0 and F > 2:
        A = np.zeros(((F - 2) * P, (F - 1) * P))                  # accelerations v_f - v_{f-1}
        for f in range(F - 2):
            for p in range(P):
                A[f * P + p, (f + 1) * P + p] += 1.0
                A[f * P + p, f * P + p] -= 1.0
        Q += (D.T @ A.T @ A @ D) / sa ** 2
    H = a * np.eye(n) + Q
    out = np.empty_like(m)
    for ax in range(2):
        out[..., ax] = np.linalg.solve(H, a * m[..., ax].reshape(n)).reshape(P, F)
    return out


@pytest.mark.parametrize("sigma_acc", [-1.0, 0.2])
def test_map_equals_closed_form_gaussian_posterior(sigma_acc):
    """With quadratic CC maps (the Gaussian limit of eq. 15) the posterior is Gaussian and its mode
    is one linear solve: the L-BFGS MAP of the full energy must equal it. This pins the absolute
    weight of the data term against the prior (-2 CC against the doubled negative log prior): a
    data term of -1 CC gives a different mode, which the last assertion shows the test detects."""
    rng = np.random.default_rng(7)
    P, F, W = 5, 9, 10
    pos = rng.uniform(0, 800, size=(P, 2))
    sig = (0.4, 300.0, sigma_acc)
    m = np.cumsum(rng.normal(scale=0.6, size=(P, F, 2)), axis=1)
    m -= m.mean(axis=(0, 1))
    assert np.abs(m).max() < W - 3
    a = 1.7                                                      # CC curvature per px^2
    g = np.arange(2 * W + 1) - W
    cc = -0.5 * a * ((g[None, None, None, :] - m[..., 0, None, None]) ** 2
                     + (g[None, None, :, None] - m[..., 1, None, None]) ** 2)
    res = fit_tracks(cc, pos, sig, initial_tracks=np.zeros((P, F, 2)), eps=1e-10)
    want = _gaussian_posterior_mode(m, a, pos, sig)
    assert np.abs(res.tracks - want).max() < 1e-4
    half_weight = _gaussian_posterior_mode(m, a / 2, pos, sig)
    assert np.abs(half_weight - want).max() > 100 * 1e-4


def test_data_curvature_of_quadratic_maps():
    """h is the curvature of -2 CC per axis: 2 a for CC = -(a/2)|s - m|^2 peaked near the centre."""
    from polishplugin.core.motion.fit import data_curvature
    g = np.arange(-5, 6)
    a = np.array([1.3, 1.7, 2.2])[:, None, None, None]
    cc = -0.5 * a * ((g[None, None, None, :] - 0.3) ** 2 + (g[None, None, :, None] + 0.2) ** 2)
    assert abs(data_curvature(cc) - 2 * 1.7) < 1e-9
    assert data_curvature(-cc) == 0.0                      # a minimum at the centre: no scaling


def test_scaled_coefficients_same_map_in_fewer_iterations():
    """Many particles sharing one motion (sigma_D >> their spread): the plain L-BFGS over c and the
    one over scaled coefficients reach the closed-form Gaussian posterior mode, the scaled one in
    well under half the iterations (the plain one's count grows with P, BENCHMARKS.md)."""
    rng = np.random.default_rng(3)
    P, F, W = 60, 8, 10
    pos = rng.uniform(0, 2000, size=(P, 2))
    sig = (0.5, 4000.0, 1.5)
    m = np.cumsum(rng.normal(scale=0.5, size=(P, F, 2)), axis=1)
    m -= m.mean(axis=(0, 1))
    a = 1.2
    g = np.arange(2 * W + 1) - W
    cc = -0.5 * a * ((g[None, None, None, :] - m[..., 0, None, None]) ** 2
                     + (g[None, None, :, None] - m[..., 1, None, None]) ** 2)
    want = _gaussian_posterior_mode(m, a, pos, sig)
    runs = [fit_tracks(cc, pos, sig, initial_tracks=np.zeros((P, F, 2)), eps=1e-10,
                       precondition=pre) for pre in (False, True)]
    for r in runs:
        assert np.abs(r.tracks - want).max() < 1e-3
    assert runs[1].iterations * 2 < runs[0].iterations, [r.iterations for r in runs]
