"""Movie rendering physics: shifts, motion blur, CTF, dose damage, counting noise, detector."""
import dataclasses

import numpy as np
import pytest

from polishplugin.core.ctf import CtfParams, ctf_2d, ctf_zeros_1d
from polishplugin.core.damage import bfactor_filter, exposure_filter, frame_doses
from polishplugin.core.fourier import radius_grid, shift_phase
from polishplugin.core.simulate import movies
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset

SMALL = SimulationConfig(seed=3, n_micrographs=2, micrograph_shape=(192, 224), n_frames=6,
                         particles_per_micrograph=2, box=32, pixel_size=1.5, dose_per_frame=1.5,
                         astigmatism_max=600.0, snr=0.05, hot_pixels=3, dead_columns=2)
STILL = dataclasses.replace(SMALL, sigma_vel=0.0, drift_A=0.0, particles_per_micrograph=1,
                            gain=False, hot_pixels=0)


def _blob_patch(m=32):
    y, x = np.mgrid[:m, :m] - m // 2
    img = np.exp(-((x - 2) ** 2 + (y + 1) ** 2) / 8.0) + 0.5 * np.exp(-((x + 4) ** 2 + y ** 2) / 3.0)
    return img, np.fft.fft2(np.fft.ifftshift(img)) * shift_phase(m, m, m // 2, m // 2)


def test_render_shift_sign_and_motion_blur():
    img, f = _blob_patch()
    m = img.shape[0]
    ones = np.ones((1, m, m))
    shifted = movies.render_particle(f, np.ones((m, m)), ones, np.array([[[3.0, -2.0]]]))[0]
    np.testing.assert_allclose(shifted, np.roll(img, (-2, 3), axis=(0, 1)), atol=1e-5)
    blurred = movies.render_particle(f, np.ones((m, m)), ones, np.array([[[-1.0, 0.0], [1.0, 0.0]]]))[0]
    ref = 0.5 * (np.roll(img, -1, axis=1) + np.roll(img, 1, axis=1))
    np.testing.assert_allclose(blurred, ref, atol=1e-5)


def test_ctf_zeros_where_theory_puts_them():
    """Sign changes of ctf_2d along the x and y axes sit at ctf_zeros_1d in those directions."""
    n, px = 1024, 1.0
    p = CtfParams(15000.0, 12000.0, 0.0, 300.0, 2.7, 0.1)
    c = ctf_2d(p, n, px)
    k = np.fft.fftfreq(n, px)[: n // 2]
    for line, direction in ((c[0, : n // 2], 0.0), (c[: n // 2, 0], 90.0)):
        idx = np.flatnonzero(np.sign(line[1:]) != np.sign(line[:-1]))
        crossings = k[idx] + line[idx] / (line[idx] - line[idx + 1]) * (k[1] - k[0])
        zeros = ctf_zeros_1d(p, 6, direction_deg=direction)
        np.testing.assert_allclose(crossings[:6], zeros, atol=0.3 * (k[1] - k[0]))


def test_still_particle_frames_follow_projection_ctf_and_damage():
    """Noiseless frames of a still particle = Fourier slice x CTF x exposure filter of that frame,
    shifted to its position (independent recomputation), so frame ratios follow exposure_filter."""
    ds = simulate_dataset(STILL)
    mg = ds.micrograph(0, keep_expected=True)
    m = ds.patch_size
    c = STILL
    pos = mg.positions[0, 0]
    np.testing.assert_allclose(mg.positions[0], np.broadcast_to(pos, mg.positions[0].shape))
    ctr = np.rint(pos).astype(int)
    win = mg.expected[:, ctr[1] - m // 2: ctr[1] - m // 2 + m, ctr[0] - m // 2: ctr[0] - m // 2 + m]
    obs = np.fft.fft2((win - c.dose_px) / (c.dose_px * ds.contrast))
    ctf = ctf_2d(CtfParams(mg.defocus_u[0], mg.defocus_v[0], mg.defocus_angle[0], c.voltage, c.cs,
                           c.amplitude_contrast), m, c.pixel_size)
    k = radius_grid(m, m, c.pixel_size)
    damage = exposure_filter(k, frame_doses(c.n_frames, c.dose_per_frame), c.voltage)
    pred = (ds.projector.project(*mg.angles[0], shape=(m, m)) * ctf * damage
            * shift_phase(m, m, *(pos - ctr)))
    scale = np.abs(pred).max()
    assert np.abs(obs - pred).max() < 2e-3 * scale
    strong = np.abs(obs[0]) > 0.05 * np.abs(obs[0]).max()
    for f in range(1, c.n_frames):
        ratio = np.abs(obs[f][strong] / obs[0][strong])
        np.testing.assert_allclose(ratio, (damage[f] / damage[0])[strong], rtol=2e-3)


def test_explicit_bfactors_replace_exposure_filter():
    b = np.linspace(0.0, -60.0, STILL.n_frames)
    cf = np.linspace(0.0, -0.3, STILL.n_frames)
    cfg = dataclasses.replace(STILL, bfactors=b, bfactor_scales=cf)
    ds = simulate_dataset(cfg)
    mg = ds.micrograph(0, keep_expected=True)
    m = ds.patch_size
    ctr = np.rint(mg.positions[0, 0]).astype(int)
    win = mg.expected[:, ctr[1] - m // 2: ctr[1] - m // 2 + m, ctr[0] - m // 2: ctr[0] - m // 2 + m]
    obs = np.fft.fft2(win - cfg.dose_px)
    filt = bfactor_filter(radius_grid(m, m, cfg.pixel_size), b, cf)
    strong = np.abs(obs[0]) > 0.05 * np.abs(obs[0]).max()
    last = np.abs(obs[-1][strong] / obs[0][strong])
    np.testing.assert_allclose(last, (filt[-1] / filt[0])[strong], rtol=2e-3)
    with pytest.raises(ValueError):
        movies.frame_filters(16, 1.0, 3, 1.0, bfactors=[0.0, 1.0])


def test_dose_per_frame_in_counts():
    cfg = dataclasses.replace(SMALL, particles_per_micrograph=0, gain=False, hot_pixels=0)
    mg = simulate_dataset(cfg).micrograph(0)
    n = mg.frames.size
    se = np.sqrt(cfg.dose_px / n)
    assert abs(mg.frames.mean() - cfg.dose_px) < 4 * se
    per_frame = mg.frames.mean(axis=(1, 2))
    assert np.all(np.abs(per_frame - cfg.dose_px) < 4 * np.sqrt(cfg.dose_px / mg.frames[0].size))
    assert mg.frames.var() == pytest.approx(cfg.dose_px, rel=0.03)      # Poisson: var = mean


def test_gain_corrected_frames_are_unbiased_and_defects_marked():
    ds = simulate_dataset(SMALL)
    mg = ds.micrograph(1, keep_expected=True)
    good = ~mg.defect_mask
    good[mg.hot_pixels[:, 1], mg.hot_pixels[:, 0]] = False
    corrected = mg.frames.astype(np.float64) * mg.gain
    diff = corrected[:, good] - mg.expected[:, good]
    se = np.sqrt(np.mean(mg.expected[:, good] * mg.gain[good] ** 2 / mg.gain[good]) / diff.size)
    assert abs(diff.mean()) < 4 * se
    raw_bias = mg.frames[:, good].mean() - mg.expected[:, good].mean()
    assert np.all(mg.frames[:, mg.defect_mask] == 0) and np.all(mg.gain[mg.defect_mask] == 0)
    assert mg.defect_mask.any(axis=0).sum() == SMALL.dead_columns
    sens = ds.detector.sensitivity[good]
    assert np.std(sens) == pytest.approx(SMALL.gain_sigma, rel=0.1)
    assert abs(raw_bias - (np.mean(mg.expected[:, good] * sens) - mg.expected[:, good].mean())) < 4 * se


def test_hot_pixels_where_truth_says():
    cfg = SMALL
    mg = simulate_dataset(cfg).micrograph(0)
    x, y = mg.hot_pixels.T
    assert len(x) == cfg.hot_pixels
    assert np.all(mg.frames[:, y, x] > 0.5 * cfg.hot_level * cfg.dose_px)
    others = mg.frames.copy()
    others[:, y, x] = 0
    assert others.max() < 0.25 * cfg.hot_level * cfg.dose_px


def test_contrast_for_snr_definition():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(200000) * 0.3
    dose, nf, snr = 1.7, 20, 0.05
    c = movies.contrast_for_snr(snr, dose, nf, s.var())
    counts = rng.poisson(nf * dose * (1 + c * s))
    signal_var = (nf * dose * c) ** 2 * s.var()
    noise_var = counts.var() - signal_var
    assert signal_var / noise_var == pytest.approx(snr, rel=0.05)
    assert noise_var == pytest.approx(nf * dose, rel=0.02)


def test_place_particles_and_mtf():
    rng = np.random.default_rng(1)
    p = movies.place_particles((300, 400), 10, 50.0, 30.0, rng)
    d = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.eye(10) * 1e9
    assert d.min() >= 50.0
    assert p[:, 0].min() >= 30 and p[:, 0].max() <= 370 and p[:, 1].max() <= 270
    with pytest.raises(ValueError):
        movies.place_particles((100, 100), 50, 40.0, 10.0, rng, max_tries=500)
    mtf = movies.detector_mtf(16, "sinc")
    assert mtf[0, 0] == 1.0 and mtf[8, 0] == pytest.approx(2 / np.pi)
    assert movies.detector_mtf(16, None) is None
