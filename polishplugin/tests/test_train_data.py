"""Training data of a micrograph (core/motion/train_data.py): alignment-circle CC maps checked by
brute force and against align_micrograph, the evaluation ring and its TCC by brute force on the
full fft2 grid, align() against the polishing fit, and the TCC preferring the true triplet on a
tiny simulation (§2.2, eq. 19 of Zivanov 2019)."""
import numpy as np
import pytest

from polishplugin.core.motion.micrograph import align_micrograph
from polishplugin.core.motion.tcc import (alignment_circle_mask, evaluation_ring_mask,
                                          split_threshold, tcc)
from polishplugin.core.motion.train_data import (build_training_micrograph, make_align,
                                                 simulated_training_micrograph)
from polishplugin.core.motion.units import MotionParams

N, F, W = 24, 4, 3
K_MAX = 10.0
T_ALIGN, T_EVAL = split_threshold(K_MAX)
DOSE, PX = 1.5, 1.2


def _problem(seed=0):
    """Random frames with two bright blobs moving by known integer steps; random predictions."""
    rng = np.random.default_rng(seed)
    centres = np.array([[30.0, 34.0], [70.0, 60.0]])
    yy, xx = np.mgrid[:N, :N] - N // 2
    blob = np.exp(-(xx ** 2 + yy ** 2) / 8.0)
    frames = rng.normal(size=(F, 100, 100))
    for f in range(F):
        for c in centres:
            x, y = int(c[0]) + f, int(c[1])
            frames[f, y - N // 2:y + N // 2, x - N // 2:x + N // 2] += 3 * blob
    pred = np.fft.fft2(blob + 0.1 * rng.normal(size=(2, N, N)))
    opp = np.fft.fft2(blob + 0.2 * rng.normal(size=(2, N, N)))
    damage = np.exp(-0.02 * np.arange(1, F + 1)[:, None, None] * np.abs(np.fft.fftfreq(N) * N)
                    [None, :, None] ** 2 / 10)
    damage = np.broadcast_to(damage, (F, N, N)).copy()
    init = np.zeros((2, F, 2))
    noise = np.linspace(2.0, 0.5, N // 2 + 2)
    return frames, centres, pred, opp, damage, init, noise


def _build(frames, centres, pred, opp, damage, init, noise, **kw):
    return build_training_micrograph(iter(frames), centres, pred, opp, damage, init, T_ALIGN,
                                     T_EVAL, K_MAX, DOSE, PX, **{"window": W, "noise_power": noise, **kw})


def test_cc_maps_are_the_alignment_circle_cc_by_brute_force():
    frames, centres, pred, opp, damage, init, noise = _problem()
    m = _build(frames, centres, pred, opp, damage, init, noise)
    circle = alignment_circle_mask(N, T_ALIGN)
    # full-grid whitening 1/S(ring), zero at DC and beyond Nyquist (independent of the rfft path)
    ky, kx = np.meshgrid(np.fft.fftfreq(N) * N, np.fft.fftfreq(N) * N, indexing="ij")
    ring = np.rint(np.hypot(ky, kx)).astype(int)
    inv_s = np.where((ring > 0) & (ring <= N // 2), 1.0 / noise[np.minimum(ring, len(noise) - 1)],
                     0.0)
    scale = m.sign * m.amplitude
    maps = m.cc_maps
    for p in range(2):
        for f in range(F):
            x, y = np.rint(centres[p] + init[p, f]).astype(int)
            patch = frames[f, y - N // 2:y + N // 2, x - N // 2:x + N // 2]
            X = np.fft.fft2(patch)
            for sy in range(-W, W + 1):
                for sx in range(-W, W + 1):
                    phase = np.exp(2j * np.pi * (kx * sx + ky * sy) / N)
                    want = np.sum(X * np.conj(damage[f] * pred[p] * circle) * inv_s * phase).real
                    got = maps[p, f, sy + W, sx + W] / scale
                    # 16-bit storage: within half a step of the map's range (compact.py)
                    tol = 2e-4 * abs(want) + 1e-4 + 0.51 * m.cc.scale[p, f] / abs(scale)
                    assert got == pytest.approx(want, abs=tol)
    assert m.sign == 1 and m.amplitude > 0


def test_cc_maps_ignore_the_evaluation_ring():
    """Adding a pattern on the evaluation ring changes the ring data but not the CC maps."""
    frames, centres, pred, opp, damage, init, noise = _problem()
    base = _build(frames, centres, pred, opp, damage, init, noise, invert=False)
    yy, xx = np.mgrid[:100, :100]
    k = 9.0 / N              # 9 cycles per patch (no leakage): inside the evaluation ring
    wave = 5.0 * np.cos(2 * np.pi * k * xx)
    other = _build(frames + wave, centres, pred, opp, damage, init, noise, invert=False)
    # float32 sums: rounding of the changed patch spectra, relative to the maps' range (a leak of
    # the ring's wave would be of the order of the range itself)
    scale = np.abs(base.cc_maps).max()
    assert np.abs(other.cc_maps - base.cc_maps).max() <= 1e-4 * scale
    assert other.eval_data.x2 > 1.5 * base.eval_data.x2


def test_eval_ring_tcc_by_brute_force():
    """TCC of stored ring data (one pixel per Friedel pair, damage weights) equals eq. 19 summed
    over the full fft2 grid with whitened frames and opposite-half predictions."""
    frames, centres, pred, opp, damage, init, noise = _problem(1)
    m = _build(frames, centres, pred, opp, damage, init, noise, bits=16)
    m8 = _build(frames, centres, pred, opp, damage, init, noise)
    rng = np.random.default_rng(3)
    shifts = rng.normal(scale=0.7, size=(2, F, 2))
    ringm = evaluation_ring_mask(N, T_EVAL, K_MAX)
    ky, kx = np.meshgrid(np.fft.fftfreq(N) * N, np.fft.fftfreq(N) * N, indexing="ij")
    ring = np.rint(np.hypot(ky, kx)).astype(int)
    white = np.where(ring <= N // 2, 1 / np.sqrt(noise[np.minimum(ring, len(noise) - 1)]), 0.0)
    num = x2 = v2 = 0.0
    for p in range(2):
        for f in range(F):
            x, y = np.rint(centres[p] + init[p, f]).astype(int)
            X = np.fft.fft2(frames[f, y - N // 2:y + N // 2, x - N // 2:x + N // 2]) * white
            V = m.sign * opp[p] * white * np.exp(-2j * np.pi * (kx * shifts[p, f, 0]
                                                              + ky * shifts[p, f, 1]) / N)
            w = damage[f] * ringm
            num += np.sum(w * (X * np.conj(V)).real)
            x2 += np.sum(w * np.abs(X) ** 2)
            v2 += np.sum(w * np.abs(V) ** 2)
    assert tcc(m.eval_data, shifts) == pytest.approx(num / np.sqrt(x2 * v2), rel=1e-4)
    assert tcc(m8.eval_data, shifts) == pytest.approx(num / np.sqrt(x2 * v2), rel=2e-2)
    assert m.nbytes >= m.eval_data.nbytes + m.cc.nbytes
    assert 2 * m8.eval_data.blocks.q.nbytes == m.eval_data.blocks.q.nbytes


def test_align_reproduces_the_polishing_fit():
    """align(m, triplet) + cut equals align_micrograph on the same frames with the predictions
    restricted to the alignment circle (an independent path through sign, amplitude and fit)."""
    frames, centres, pred, opp, damage, init, noise = _problem(2)
    w = 2 * W          # wide enough that no track reaches the window edge at either triplet
    m = _build(frames, centres, pred, opp, damage, init, noise, window=w)
    align = make_align([m])
    circle = alignment_circle_mask(N, T_ALIGN)
    for triplet in [(0.5, 3000.0, 2.0), (2.0, 300.0, -1.0)]:
        sig_px = MotionParams(*triplet).to_pixels(DOSE, PX)
        ref = align_micrograph(iter(frames), centres, pred * circle, damage, sig_px, init,
                               window=w, noise_power=noise)
        # 16-bit CC maps (compact.py) move the fitted tracks by < 1e-3 px
        np.testing.assert_allclose(align(0, triplet) + m.cut_shifts, ref.tracks, atol=1e-3)
        assert ref.amplitude == pytest.approx(m.amplitude, rel=1e-5)


def test_align_refuses_tracks_that_leave_the_stored_window(caplog):
    """In a 3 px window the weak-prior triplet moves tracks to the window's edge, where the
    bicubic read would wrap to the opposite edge: training keeps the initial tracks there (with a
    warning), while polishing widens its window (test_polish_micrograph)."""
    frames, centres, pred, opp, damage, init, noise = _problem(2)
    m = _build(frames, centres, pred, opp, damage, init, noise)
    with caplog.at_level("WARNING"):
        tracks = m.align((2.0, 300.0, -1.0))
    assert "left the 3 px CC window" in caplog.text
    np.testing.assert_allclose(tracks, m.initial_tracks - m.cut_shifts)


@pytest.fixture(scope="module")
def simulated():
    from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset
    cfg = SimulationConfig(seed=5, n_micrographs=3, micrograph_shape=(384, 384), n_frames=12,
                           particles_per_micrograph=10, box=64, pixel_size=1.5, snr=1.0,
                           sigma_vel=0.5, sigma_div=5000.0, sigma_acc=2.0)
    ds = simulate_dataset(cfg)
    k_max = 64 * 1.5 / 6.5                       # ring 6.5-9.2 A: signal above the noise here
    t_align, t_eval = split_threshold(k_max)
    raw = [ds.micrograph(i) for i in range(3)]
    mics = [simulated_training_micrograph(ds, r, t_align, t_eval, k_max) for r in raw]
    return raw, mics, ds, (t_align, t_eval, k_max)


def test_tcc_prefers_the_true_triplet_and_true_tracks(simulated):
    raw, mics = simulated[:2]
    data = [m.eval_data for m in mics]
    align = make_align(mics)

    def score(triplet):
        return tcc(data, [align(i, triplet) for i in range(len(mics))])
    truth = tcc(data, [r.positions - r.centres[:, None] - m.cut_shifts for r, m in zip(raw, mics)])
    initial = tcc(data, [m.initial_tracks - m.cut_shifts for m in mics])
    good = score((0.5, 5000.0, 2.0))
    assert initial < good <= truth
    for far in [(0.05, 5000.0, 2.0), (5.0, 5000.0, 2.0), (0.5, 50.0, 2.0), (0.5, 5000.0, 0.05)]:
        assert score(far) < good, far


def test_8_bit_ring_keeps_the_tcc_differences_between_triplets(simulated):
    """The compact (8-bit) evaluation ring changes TCC differences between triplets by < 2 % of
    those differences or < 5e-5 of the TCC, against a 16-bit ring of the same micrographs."""
    raw, mics, ds, radii = simulated
    mics16 = [simulated_training_micrograph(ds, r, *radii, bits=16) for r in raw]
    align = make_align(mics)
    triplets = [(0.5, 5000.0, 2.0), (0.05, 5000.0, 2.0), (5.0, 5000.0, 2.0), (0.5, 50.0, 2.0),
                (0.5, 5000.0, 0.05), (1.0, 5000.0, 2.0)]
    tracks = [[align(i, t) for i in range(len(mics))] for t in triplets]
    t8 = np.array([tcc([m.eval_data for m in mics], tr) for tr in tracks])
    t16 = np.array([tcc([m.eval_data for m in mics16], tr) for tr in tracks])
    d8, d16 = t8[1:] - t8[0], t16[1:] - t16[0]
    assert np.all(np.abs(d16) > 0)
    np.testing.assert_allclose(d8, d16, rtol=0.02, atol=5e-5 * t16[0])
    assert sum(m.eval_data.nbytes for m in mics) < 0.6 * sum(m.eval_data.nbytes for m in mics16)
