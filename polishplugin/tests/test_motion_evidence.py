"""Sigmas chosen from a micrograph's own CC maps (core/motion/evidence.py): the banded evidence
against the dense Gaussian marginal, recovery of known sigmas from tracks drawn from the prior,
the CC peak curvature against the CC maps, and the polish program's --sigmas plumbing."""
import numpy as np
import pytest

from polishplugin.core.motion.evidence import (Evidence, SigmaSearch, choose_sigmas,
                                               peak_curvature, search_in_pixels,
                                               sigmas_in_paper_units)
from polishplugin.core.motion.observation import cc_maps_from_spectra
from polishplugin.core.motion.prior import velocity_covariance
from polishplugin.programs import polish

P, F = 24, 16


def _positions(rng):
    return rng.uniform(0, 800, (P, 2))


def _velocity_precision(pos, sv, sd, sa):
    """Precision of the velocities (F-1) x P per axis (frame-major) of the module doc, dense."""
    sinv = np.linalg.inv(velocity_covariance(pos, sv, sd))
    d = np.diff(np.eye(F - 1), axis=0)
    return np.kron(np.eye(F - 1), sinv) + np.kron(d.T @ d, np.eye(len(pos))) / sa ** 2


def _draw_tracks(rng, pos, sv, sd, sa):
    cov = np.linalg.inv(_velocity_precision(pos, sv, sd, sa))
    v = np.linalg.cholesky(cov) @ rng.standard_normal(((F - 1) * P, 2))    # frame-major
    v = v.reshape(F - 1, P, 2).transpose(1, 0, 2)
    return np.concatenate([np.zeros((P, 1, 2)), np.cumsum(v, axis=1)], axis=1) + \
        rng.normal(0, 2, (P, 1, 2))


def _dense_log_marginal(pos, y, a, sig, tau=1e4):
    """log N(y; 0, C) per axis summed, with s0 ~ N(0, tau^2) (flat in the limit), velocities of
    precision Lambda, observation noise 1 / a: the evidence up to a constant in the sigmas."""
    cov_v = np.linalg.inv(_velocity_precision(pos, *sig))
    low = np.tril(np.ones((F, F)), -1)[:, :F - 1]          # positions from velocities
    m = np.kron(low, np.eye(P))
    c = m @ cov_v @ m.T + tau ** 2 * np.kron(np.ones((F, F)), np.eye(P)) + \
        np.diag(1.0 / a.T.ravel())
    yy = y.transpose(1, 0, 2).reshape(F * P, 2)
    _, logdet = np.linalg.slogdet(c)
    return float(-logdet - 0.5 * np.sum(yy * np.linalg.solve(c, yy)))


def test_banded_evidence_matches_the_dense_gaussian_marginal():
    rng = np.random.default_rng(4)
    pos = _positions(rng)
    y = _draw_tracks(rng, pos, 0.5, 300.0, 1.0) + rng.normal(0, 0.5, (P, F, 2))
    a = rng.uniform(2, 6, (P, F))
    ev = Evidence(pos, y, a)
    trials = [(0.5, 300.0, 1.0), (0.2, 1000.0, 3.0), (1.5, 80.0, 0.4)]
    ours = np.array([ev(*t) for t in trials])
    dense = np.array([_dense_log_marginal(pos, y, a, t) for t in trials])
    # equal up to one constant: the differences between sigma triplets agree
    assert np.allclose(ours - ours[0], dense - dense[0], atol=1e-3 * np.ptp(dense) + 1e-4)


@pytest.mark.parametrize("truth", [(0.4, 400.0, 1.6), (1.0, 120.0, 0.5)])
def test_known_sigmas_recovered_from_tracks_of_the_prior(truth):
    rng = np.random.default_rng(11)
    pos = _positions(rng)
    s = _draw_tracks(rng, pos, *truth)
    a = np.full((P, F), 4.0)                              # 0.5 px noise per axis
    y = s + rng.standard_normal(s.shape) / 2.0
    got = choose_sigmas(Evidence(pos, y, a),
                        SigmaSearch((0.2, 3000.0, 2.0), (0.01, 20.0, 0.05), (20.0, 1e5, 50.0)))
    ratio = np.array(got.sigmas_px) / np.array(truth)
    assert 0.75 < ratio[0] < 1.33, ratio
    assert 0.4 < ratio[1] < 2.5, ratio
    assert 0.5 < ratio[2] < 2.0, ratio
    spread = np.array(got.spread())
    assert np.all(spread > 1.0) and spread[0] < 1.5       # sigma_vel is pinned down


def test_peak_curvature_matches_the_cc_maps():
    rng = np.random.default_rng(2)
    n, p, f, ring = 48, 3, 4, 6
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n))) * n
    img = np.fft.ifft2(np.fft.fft2(rng.standard_normal((p, n, n))) * (k <= ring)).real
    pred = np.fft.fft2(img)
    damage = np.exp(-np.arange(f)[:, None, None] * 0.002 * k[None] ** 2)
    noise = rng.uniform(0.5, 2.0, n // 2 + 2) * n * n
    frames = np.fft.ifft2(pred[:, None] * damage[None]).real                # exact, no shift
    spectra = np.fft.rfft2(frames)
    cc = cc_maps_from_spectra(spectra, pred, damage, 3, noise, dtype=np.float64, max_ring=ring)
    h = cc[..., 3, 2] - 2 * cc[..., 3, 3] + cc[..., 3, 4]                   # second difference
    amp = 1.7
    curv = peak_curvature(pred, damage, noise, amp, max_ring=ring)
    # the fitted CC is amp * (raw CC) and the raw CC of data amp * V is amp * cc here: amp^2
    num = -amp ** 2 * h
    assert np.allclose(curv, num, rtol=0.12), (curv / num)


def test_units_round_trip():
    s = search_in_pixels(1.3, 0.9)
    back = sigmas_in_paper_units(s.start, 1.3, 0.9)
    assert np.allclose(back, (0.2, 5000.0, 2.0))


def _resolve(*argv):
    args = polish.build_parser().parse_args(["--particles", "p", "--mics", "m", "--postprocess",
                                             "pp", "--out", "o"] + list(argv))
    return polish.resolve_sigmas(args)


def test_sigma_options(tmp_path):
    assert _resolve() == ("auto", None)
    assert _resolve("--sigmas", "auto") == ("auto", None)
    assert _resolve("--sigmas", "relion-defaults") == ("relion-defaults", (0.2, 5000.0, 2.0))
    assert _resolve("--sigma-vel", "0.7") == ("given", (0.7, 5000.0, 2.0))
    assert _resolve("--sigmas", "given") == ("given", (0.2, 5000.0, 2.0))
    f = tmp_path / "opt.txt"
    f.write_text("0.9 3000 -1\n")
    assert _resolve("--params-file", str(f)) == ("given", (0.9, 3000.0, -1.0))
    with pytest.raises(SystemExit):
        _resolve("--sigmas", "auto", "--sigma-div", "300")
    with pytest.raises(SystemExit):
        _resolve("--sigmas", "relion-defaults", "--params-file", str(f))


def _tiny(snr, seed=5):
    from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset
    cfg = SimulationConfig(seed=seed, n_micrographs=1, micrograph_shape=(640, 640), n_frames=16,
                           particles_per_micrograph=14, box=64, pixel_size=1.5, snr=snr,
                           dark_particles=True, sigma_vel=0.8, sigma_div=3000.0, sigma_acc=1.5,
                           refined_from_data=False)
    ds = simulate_dataset(cfg)
    return ds, ds.micrograph(0)


def test_sigma_vel_recovered_on_a_simulated_micrograph():
    """Movie simulated with sigma_vel 0.8 A/dose: --sigmas auto lands within x1.5 of it (the
    start, RELION's 0.2, is 4x off) and its tracks are no worse than those of the true sigmas."""
    from polishplugin.core.motion.micrograph import polish_simulated_micrograph
    ds, mic = _tiny(0.2)
    c = ds.config
    search = search_in_pixels(c.dose_per_frame, c.pixel_size)
    auto = polish_simulated_micrograph(ds, mic, sigma_search=search)
    chosen = sigmas_in_paper_units(auto.sigma_choice.sigmas_px, c.dose_per_frame, c.pixel_size)
    assert 0.8 / 1.5 < chosen[0] < 0.8 * 1.5, chosen
    true = polish_simulated_micrograph(ds, mic)

    def shape_err(t):
        d = mic.centres[:, None, :] + t - mic.positions
        return np.sqrt(np.mean(np.sum((d - d.mean(1, keepdims=True)) ** 2, -1)))
    assert shape_err(auto.tracks) < 1.05 * shape_err(true.tracks)


def test_failed_choice_falls_back_to_the_start(monkeypatch, caplog):
    import polishplugin.core.motion.evidence as ev
    from polishplugin.core.motion.micrograph import polish_simulated_micrograph

    def broken(*a, **k):
        raise ValueError("no signal")
    monkeypatch.setattr(ev, "choose_for_micrograph", broken)
    ds, mic = _tiny(0.2)
    c = ds.config
    search = search_in_pixels(c.dose_per_frame, c.pixel_size)
    res = polish_simulated_micrograph(ds, mic, sigma_search=search)
    fixed = polish_simulated_micrograph(ds, mic, sigmas=(0.2, 5000.0, 2.0))
    assert res.sigma_choice is None and "could not be chosen" in caplog.text
    np.testing.assert_allclose(res.tracks, fixed.tracks, atol=1e-9)


def test_search_without_acceleration_keeps_it_off_and_still_searches():
    """With sigma_acc not fitted and off (start <= 0) the search maximises over sigma_vel and
    sigma_div and hands the evidence sigma_acc's start value (before: its log was NaN, every
    evaluation failed and the start came back unsearched)."""
    seen = set()

    class Quadratic:
        evaluations = 0

        def __call__(self, v, d, a):
            self.evaluations += 1
            seen.add(a)
            return -(np.log(v / 2.0)) ** 2 - (np.log(d / 300.0)) ** 2

    search = SigmaSearch(start=(1.0, 100.0, -1.0), lower=(0.1, 10.0, 0.1),
                         upper=(10.0, 1e4, 10.0), fit_acc=False)
    choice = choose_sigmas(Quadratic(), search)
    assert seen == {-1.0}
    assert choice.sigmas_px[2] == -1.0 and choice.log_sd[2] == 0.0
    assert choice.sigmas_px[0] == pytest.approx(2.0, rel=0.05)
    assert choice.sigmas_px[1] == pytest.approx(300.0, rel=0.05)
    assert np.isfinite(choice.log_evidence)
