"""Per-micrograph polishing end to end on tiny simulations with known tracks."""
import dataclasses

import numpy as np
import pytest

from polishplugin.core.motion.fit import MotionFitError
from polishplugin.core.motion.micrograph import align_micrograph, polish_simulated_micrograph
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset

BASE = SimulationConfig(seed=3, n_micrographs=1, micrograph_shape=(512, 512), n_frames=10,
                        particles_per_micrograph=6, box=64, pixel_size=1.5,
                        half_map_resolution=6.0, defocus_range=(6000.0, 9000.0), min_distance=120,
                        refined_from_data=False)  # known centre errors for the geometry checks


def _errors(mic, tracks):
    """RMS (px) of estimated - true positions, in full and after removing each particle's mean."""
    d = mic.centres[:, None, :] + tracks - mic.positions
    shape = d - d.mean(axis=1, keepdims=True)
    return (float(np.sqrt(np.mean(np.sum(d ** 2, -1)))),
            float(np.sqrt(np.mean(np.sum(shape ** 2, -1)))))


def _noiseless(**kw):
    ds = simulate_dataset(dataclasses.replace(BASE, **kw))
    return dataclasses.replace(ds, half1=ds.volume, half2=ds.volume), \
        ds.micrograph(0, keep_expected=True)


@pytest.mark.parametrize("init", ["global", "none"])
def test_noiseless_tracks_recovered(init):
    """Noiseless frames, half maps = truth: the GP MAP reproduces the true motion (the likelihood
    of a 1e4 x higher dose, so that the prior does not bias a noise-free fit)."""
    ds, mic = _noiseless(refined_position_sigma=0.5)
    start = _errors(mic, np.repeat(mic.global_track[None], len(mic.centres), axis=0))
    res = polish_simulated_micrograph(ds, mic, init=init, noiseless=True, noise_level=1e-4)
    full, shape = _errors(mic, res.tracks)
    assert shape <= 0.05 and start[1] > 0.15, (shape, start)
    assert full <= 0.05 and start[0] > 0.4, (full, start)    # the refined-centre error is absorbed
    assert res.sign == 1 and res.fit.converged
    np.testing.assert_allclose(res.amplitude, ds.contrast * BASE.dose_px, rtol=0.1)


def test_noiseless_exact_centres_full_error():
    ds, mic = _noiseless(refined_position_sigma=0.0, global_track_noise=0.0)
    res = polish_simulated_micrograph(ds, mic, noiseless=True, noise_level=1e-4)
    assert _errors(mic, res.tracks)[0] <= 0.05


@pytest.mark.parametrize("dark", [False, True])
def test_contrast_sign_found_from_data(dark):
    ds = simulate_dataset(dataclasses.replace(BASE, dark_particles=dark, snr=0.1, seed=4))
    mic = ds.micrograph(0)
    res = polish_simulated_micrograph(ds, mic, init="none", invert="auto")
    assert res.sign == (-1 if dark else 1)
    start = _errors(mic, np.zeros_like(res.tracks))
    assert _errors(mic, res.tracks)[0] < 0.5 * start[0]


def test_nan_frames_and_no_particles_raise():
    ds = simulate_dataset(BASE)
    mic = ds.micrograph(0)
    frames = mic.frames.astype(np.float32)
    frames[3, 100:400, 100:400] = np.nan
    n, F = BASE.box, BASE.n_frames
    preds = np.ones((len(mic.centres), n, n), dtype=complex)
    init = np.zeros((len(mic.centres), F, 2))
    for initial in (init, None):
        with pytest.raises(MotionFitError):
            align_micrograph(frames, mic.centres, preds, None, (0.5, 3000.0, 2.0), initial,
                             n_frames=F)
    with pytest.raises(MotionFitError):
        align_micrograph(frames, np.zeros((0, 2)), preds[:0], None, (0.5, 3000.0, 2.0),
                         np.zeros((0, F, 2)))


def test_hot_pixel_detection_protects_tracks():
    """Many strong hot pixels near the particles pull the tracks; detecting them (from the movie,
    without the truth) restores the accuracy of a simulation without hot pixels."""
    cfg = dict(seed=5, particles_per_micrograph=8, min_distance=100, snr=0.5)
    ds = simulate_dataset(dataclasses.replace(BASE, hot_pixels=300, hot_level=50.0, **cfg))
    mic = ds.micrograph(0)
    on = _errors(mic, polish_simulated_micrograph(ds, mic, defects="detect").tracks)
    off = _errors(mic, polish_simulated_micrograph(ds, mic, defects=None).tracks)
    assert on[0] < 0.4 * off[0] and on[1] < 0.5 * off[1], (on, off)


def test_fcc_sums_with_opposite_half():
    ds = simulate_dataset(dataclasses.replace(BASE, snr=0.5, seed=6))
    mic = ds.micrograph(0)
    res = polish_simulated_micrograph(ds, mic, fcc=True)
    fcc = res.fcc.fcc()
    assert res.fcc.box == BASE.box and fcc.shape == (BASE.n_frames, BASE.box // 2 + 1)
    low = fcc[:, 2:8].mean(axis=1)
    assert np.all(low > 0.02) and low[0] > low[-1]            # signal, fading with dose


@pytest.mark.parametrize("n", [24, 25])
def test_fcc_half_plane_matches_full_plane_accumulator(n):
    """fcc_sums works on rfft half-planes; it must equal FccAccumulator's full fft2 sums."""
    from polishplugin.core.dose.fcc import FccAccumulator
    from polishplugin.core.motion.micrograph import fcc_sums
    rng = np.random.default_rng(n)
    P, F = 3, 4
    patches = rng.normal(size=(P, F, n, n))
    preds = np.fft.fft2(rng.normal(size=(P, n, n)))
    shifts = rng.uniform(-3, 3, size=(P, F, 2))
    half = fcc_sums(patches, preds, shifts)
    full = FccAccumulator(F, n)
    full.add(np.fft.fft2(patches), preds, shifts)
    for a, b in ((half.num, full.num), (half.wobs, full.wobs), (half.wpred, full.wpred)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max())


def test_track_beyond_window_widens_it_instead_of_wrapping(caplog):
    """Patches cut at the centres (zero initial tracks) and a 2 px CC window, for motion of up to
    3.7 px: the fit reaches the window edge, where the bicubic read would wrap to the opposite
    edge. It must be detected, logged, and refitted in a wider window, giving the tracks a wide
    window gives."""
    ds, mic = _noiseless(refined_position_sigma=0.0, global_track_noise=0.0)
    assert np.abs(mic.positions - mic.centres[:, None, :]).max() > 3.0
    with caplog.at_level("WARNING"):
        res = polish_simulated_micrograph(ds, mic, init="zero", window=2, noiseless=True,
                                          noise_level=1e-4)
    assert "CC search window" in caplog.text
    assert _errors(mic, res.tracks)[0] <= 0.05


def test_outside_window_is_where_the_bicubic_read_wraps():
    """Brute force: the same CC values inside a window of radius r and embedded in a larger
    window with other values around it; the periodic bicubic read agrees between the two exactly
    at the shifts outside_window() accepts, and differs at some it rejects."""
    from polishplugin.backends import get_backend
    from polishplugin.core.motion.micrograph import outside_window
    be = get_backend("numpy")
    rng = np.random.default_rng(1)
    r, R = 4, 9
    big = rng.normal(size=(1, 1, 2 * R + 1, 2 * R + 1))
    small = big[:, :, R - r:R + r + 1, R - r:R + r + 1].copy()
    s = rng.uniform(-r - 1, r + 1, size=(1, 4000, 2))
    same = np.isclose(be.cc_interp(np.repeat(small, 4000, 1), s)[0],
                      be.cc_interp(np.repeat(big, 4000, 1), s)[0], rtol=0, atol=1e-12)[0]
    ok = np.array([outside_window(p, r) == 0 for p in s[0]])
    assert np.all(same[ok]) and ok.sum() > 500
    assert not np.all(same[~ok])
    assert outside_window(s, r) == int((~ok).sum())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_patch_pixel_is_refused(bad):
    """One NaN or infinite pixel anywhere in the patch stack is refused; the largest finite
    float32 values everywhere are not."""
    from polishplugin.core.motion.micrograph import _check_patches
    big = np.full((3, 4, 16, 16), np.finfo(np.float32).max, dtype=np.float32)
    _check_patches(big)
    big[2, 3, 15, 7] = bad
    with pytest.raises(MotionFitError, match="NaN or infinite"):
        _check_patches(big)


def test_window_edge_is_measured_from_where_the_patch_was_cut(caplog):
    """The CC window is centred where each patch was cut (the initial track), not at the
    particle's centre: initial tracks 3.5 px off a true motion under 1 px cut the patches there,
    so the true track lies ~3.5 px from the window centre and leaves a 2 px window although it
    never leaves 1 px of the particle centre. It must be detected relative to the cut (never
    read from the window's opposite edge), logged and refitted, giving the true track."""
    ds, mic = _noiseless(refined_position_sigma=0.0, global_track_noise=0.0, sigma_vel=0.05,
                         drift_A=0.0)
    assert np.abs(mic.positions - mic.centres[:, None, :]).max() < 1.0
    mic = dataclasses.replace(mic, global_track=mic.global_track + np.array([3.5, -3.5]))
    with caplog.at_level("WARNING"):
        res = polish_simulated_micrograph(ds, mic, init="global", window=2, noiseless=True,
                                          noise_level=1e-4)
    assert "CC search window" in caplog.text
    assert _errors(mic, res.tracks)[0] <= 0.05
