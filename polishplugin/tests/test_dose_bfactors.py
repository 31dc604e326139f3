"""B/C/D fit of eq. 21 of Zivanov et al. (2019) and RELION unit conversions."""
import numpy as np
import pytest

from polishplugin.core.damage import bfactor_filter
from polishplugin.core.dose.bfactors import (fit_bfactors, fit_ring_range, from_relion,
                                             model_fcc, normalise_gauge, relion_sigma,
                                             ring_frequencies, to_relion)

BOX, PX = 128, 1.5
NR = BOX // 2 + 1


def _truth(rng, nframes=12):
    b = np.linspace(0.0, -150.0, nframes) + rng.normal(0, 4, nframes)
    b[0] = -30.0                      # early frames are worse than the best ones
    c = rng.uniform(-0.3, 0.3, nframes)
    s = ring_frequencies(NR, BOX, PX)
    d = 0.8 * np.exp(-40 * s ** 2 / 4) * (1 + 0.3 * np.sin(60 * s))
    return b, c, d, s


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_fit_recovers_relative_b_and_c(noise):
    rng = np.random.default_rng(3)
    b, c, d, s = _truth(rng)
    fcc = model_fcc(b, c, d, s) + rng.normal(0, noise, (len(b), NR))
    fit = fit_bfactors(fcc, BOX, PX, high_res=4.0)
    # gauge-free comparison: differences to frame 0
    np.testing.assert_allclose(fit.bfactors - fit.bfactors[0], b - b[0], atol=5.0)
    np.testing.assert_allclose(fit.scales - fit.scales[0], c - c[0], atol=0.1)
    # documented gauge
    best = np.argmax(fit.bfactors)
    assert fit.bfactors[best] == 0.0 and fit.scales[best] == 0.0
    assert best == np.argmax(b)
    k0, k1 = fit.rings
    resid = (fit.model() - fcc)[:, k0:k1]
    assert np.sqrt(np.mean(resid ** 2)) < 2 * noise + 1e-4


def test_fit_agrees_with_simulator_filter():
    """FCC built with core.damage.bfactor_filter (the simulator's convention) fits back."""
    rng = np.random.default_rng(4)
    b = np.array([-10.0, 0.0, -25.0, -60.0, -120.0])
    c = np.array([0.1, 0.0, -0.05, -0.15, -0.3])
    s = ring_frequencies(NR, BOX, PX)
    fcc = 0.5 * bfactor_filter(s[None, :], b, c)[:, 0, :]
    fit = fit_bfactors(fcc + rng.normal(0, 0.002, fcc.shape), BOX, PX, high_res=3.5)
    np.testing.assert_allclose(fit.bfactors, b - b.max(), atol=5.0)
    np.testing.assert_allclose(fit.scales, c - c[np.argmax(b)], atol=0.1)


def test_normalise_gauge_keeps_model():
    rng = np.random.default_rng(5)
    b, c, d, s = _truth(rng, 6)
    b2, c2, d2 = normalise_gauge(b, c, d, s)
    assert b2.max() == 0 and c2[np.argmax(b2)] == 0
    np.testing.assert_allclose(model_fcc(b2, c2, d2, s), model_fcc(b, c, d, s), rtol=1e-10)


def test_relion_conversion_matches_relion_model():
    """RELION: FCC = a_f exp(-k^2/(2 sigma^2)), B_relion = -8 px^2 sh^2 / sigma^2, sh = box/2+1."""
    b = np.array([-5.0, -40.0, -200.0])
    sigma = relion_sigma(b, BOX, PX)
    k = np.arange(NR)
    np.testing.assert_allclose(np.exp(-k[None] ** 2 / (2 * sigma[:, None] ** 2)),
                               np.exp(b[:, None] * (k[None] / (BOX * PX)) ** 2 / 4), rtol=1e-12)
    b_rel, k_rel = to_relion(b, [0.1, 0.2, 0.3], BOX)
    sh = BOX // 2 + 1
    np.testing.assert_allclose(b_rel, -8 * PX ** 2 * sh ** 2 / sigma ** 2, rtol=1e-12)
    np.testing.assert_allclose(k_rel, [0.1, 0.2, 0.3])
    b_back, c_back = from_relion(b_rel, k_rel, BOX)
    np.testing.assert_allclose(b_back, b, rtol=1e-12)
    with pytest.raises(ValueError):
        relion_sigma([0.0], BOX, PX)


def test_fit_of_relion_style_fcc_reproduces_relion_numbers():
    """An FCC made with RELION's sigma/a model gives back RELION's B (relative) via to_relion."""
    sigma = np.array([60.0, 45.0, 30.0, 22.0])
    a = np.array([0.9, 1.0, 0.95, 0.8])
    k = np.arange(NR)
    scale = 0.6 * np.exp(-k ** 2 / (2 * 40.0 ** 2))
    fcc = scale[None] * a[:, None] * np.exp(-k[None] ** 2 / (2 * sigma[:, None] ** 2))
    fit = fit_bfactors(fcc, BOX, PX, high_res=3.2)
    b_rel, k_rel = to_relion(fit.bfactors, fit.scales, BOX)
    sh = BOX // 2 + 1
    expect = -8 * PX ** 2 * sh ** 2 / sigma ** 2
    np.testing.assert_allclose(b_rel - b_rel[0], expect - expect[0], atol=1.0)
    np.testing.assert_allclose(k_rel - k_rel[0], np.log(a) - np.log(a[0]), atol=0.02)


def test_ring_range():
    assert fit_ring_range(BOX, PX, 4.0, 20.0) == (9, 48)
    with pytest.raises(ValueError):
        fit_ring_range(BOX, PX, 25.0, 20.0)
    with pytest.raises(ValueError):
        fit_ring_range(16, 1.0, 7.0, 8.0)


def test_fcc_significance_separates_signal_from_noise():
    """The noise model of fcc_significance checked on FCCs of real random images: pure noise
    gives z-scores of mean ~0 and spread ~1; a weak common signal is detected."""
    from polishplugin.core.dose.bfactors import fcc_is_informative, fcc_significance
    from polishplugin.core.dose.fcc import FccAccumulator
    rng = np.random.default_rng(3)
    P, F, n = 60, 8, 48
    pred = np.fft.fft2(rng.normal(size=(P, n, n)))
    noise = np.fft.fft2(rng.normal(size=(P, F, n, n)))
    acc = FccAccumulator(F, n)
    acc.add(noise, pred, np.zeros((P, F, 2)))
    z = fcc_significance(acc.fcc(), (3, 20), P)
    assert abs(float(z.mean())) < 0.8 and 0.5 < float(z.std()) < 1.6
    assert not fcc_is_informative(acc.fcc(), (3, 20), P)
    acc2 = FccAccumulator(F, n)
    acc2.add(noise + 0.15 * pred[:, None], pred, np.zeros((P, F, 2)))
    assert fcc_is_informative(acc2.fcc(), (3, 20), P)
    # sums of patches twice the box put on the box's rings (polish): 4x the pixels per ring
    from polishplugin.core.motion.micrograph import fcc_from_spectra
    from polishplugin.core.motion.observation import patch_spectra
    big = rng.normal(size=(P, F, 2 * n, 2 * n))
    acc3 = fcc_from_spectra(patch_spectra(big), np.fft.fft2(rng.normal(size=(P, 2 * n, 2 * n))),
                            np.zeros((P, F, 2)), box=n)
    z = fcc_significance(acc3.fcc(), (3, 20), P, oversampling=2.0)
    assert abs(float(z.mean())) < 0.8 and 0.5 < float(z.std()) < 1.6


def test_exposure_weights_sum_to_one_and_favour_early_frames_at_high_frequency():
    from polishplugin.core.damage import frame_doses
    from polishplugin.core.dose.weights import exposure_weight_maps
    w = exposure_weight_maps(frame_doses(20, 1.5), 32, 1.0)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-5)
    assert w[0, 0, 10] > w[-1, 0, 10] and abs(w[0, 0, 1] - w[-1, 0, 1]) < 0.02


def _dose_truth(nframes=24):
    """Smooth per-frame B and C as real data show them: early frames blurred by fast motion,
    then a steady decay with the dose."""
    f = np.arange(nframes)
    b = -12.0 * f - 60.0 * np.exp(-f / 1.5)
    c = -0.01 * f - 0.2 * np.exp(-f / 1.5)
    return b, c


def _relative_errors(fit, b, c):
    """Gauge-free RMS errors of B and C (each centred over frames)."""
    eb = (fit.bfactors - fit.bfactors.mean()) - (b - b.mean())
    ec = (fit.scales - fit.scales.mean()) - (c - c.mean())
    return np.sqrt(np.mean(eb ** 2)), np.sqrt(np.mean(ec ** 2))


@pytest.mark.parametrize("n_particles", [400, 4000])
def test_smoothness_prior_recovers_b_and_c_better_at_low_snr(n_particles):
    """FCC built by eq. 21 (weak signal, D ~ 0.05) plus the noise of an FCC over n_particles
    (SD 1 / sqrt(n pi kappa)): with the smoothness prior the per-frame B and C are recovered
    about 2-3x better than frame by frame (measured 40 -> 13 A^2 at 400 particles, 18 -> 7 at
    4000), and still close to the truth in absolute terms."""
    box, px = 128, 1.2
    nr = box // 2 + 1
    s = ring_frequencies(nr, box, px)
    b, c = _dose_truth()
    clean = model_fcc(b, c, 0.05 * np.exp(-60 * s ** 2 / 4), s)
    sd = 1.0 / np.sqrt(n_particles * np.pi * np.maximum(np.arange(nr), 0.5))
    plain, smooth = [], []
    for seed in range(4):
        fcc = clean + np.random.default_rng(seed).normal(0, 1, clean.shape) * sd
        plain.append(_relative_errors(fit_bfactors(fcc, box, px, 4.0), b, c))
        smooth.append(_relative_errors(fit_bfactors(fcc, box, px, 4.0, smooth=3.0), b, c))
    plain, smooth = np.mean(plain, axis=0), np.mean(smooth, axis=0)
    print("RMS error B, C: frame by frame %.1f %.3f, smooth %.1f %.3f" % (*plain, *smooth))
    assert smooth[0] < 0.6 * plain[0] and smooth[1] < 0.7 * plain[1]
    assert smooth[0] < (20.0 if n_particles < 1000 else 10.0)


def test_smoothness_prior_keeps_a_noise_free_fit_and_the_gauge():
    """Without noise the prior (which does not penalise a linear change with the dose) must not
    pull a smooth truth away, and the result keeps the documented gauge."""
    box, px = 128, 1.2
    nr = box // 2 + 1
    s = ring_frequencies(nr, box, px)
    b, c = _dose_truth(12)
    fcc = model_fcc(b, c, 0.3 * np.exp(-60 * s ** 2 / 4), s)
    fit = fit_bfactors(fcc, box, px, 4.0, smooth=3.0)
    eb, ec = _relative_errors(fit, b, c)
    assert eb < 3.0 and ec < 0.01
    best = np.argmax(fit.bfactors)
    assert fit.bfactors[best] == 0.0 and fit.scales[best] == 0.0
