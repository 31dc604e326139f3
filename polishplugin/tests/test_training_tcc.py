"""Frequency split, compact evaluation-ring storage and the TCC of eq. 19 (Zivanov 2019)."""
import numpy as np
import pytest

from polishplugin.core import fourier
from polishplugin.backends import numpy_backend
from polishplugin.core.motion.compact import quantise
from polishplugin.core.motion.tcc import (EvalRingData, alignment_circle_mask, bytes_per_particle,
                                          estimate_memory, evaluation_ring_mask, split_threshold,
                                          tcc, tcc_from_sums, tcc_sums)


def _smooth_images(rng, shape, n, sigma_k=0.25):
    """Random real images with a Gaussian spectral envelope (signal up to ~ sigma_k cycles/px)."""
    ky, kx = fourier.freq_grid(n, n)
    env = np.exp(-(kx ** 2 + ky ** 2) / (2 * sigma_k ** 2))
    return np.fft.ifft2(np.fft.fft2(rng.normal(size=shape + (n, n))) * env).real


def _brute_tcc(obs_f, pred_f, tracks, t_eval, k_max, frame_weights=None):
    """Eq. 19 by loops over the full fft2 grid, shifting V with core.fourier.shift_phase."""
    n = obs_f.shape[-1]
    ring = evaluation_ring_mask(n, t_eval, k_max)
    num = x2 = v2 = 0.0
    for p in range(obs_f.shape[0]):
        for f in range(obs_f.shape[1]):
            w = 1.0 if frame_weights is None else frame_weights[f]
            vs = pred_f[p] * fourier.shift_phase(n, n, tracks[p, f, 0], tracks[p, f, 1])
            num += np.sum((w * (obs_f[p, f] * np.conj(vs)).real)[ring])
            x2 += np.sum((w * np.abs(obs_f[p, f]) ** 2)[ring])
            v2 += np.sum((w * np.abs(vs) ** 2)[ring])
    return num / np.sqrt(x2 * v2)


def test_split_threshold_follows_relion_area_fractions():
    t_align, t_eval = split_threshold(40.0)
    assert t_align == pytest.approx(40 / np.sqrt(2)) and t_eval == pytest.approx(t_align)
    t_align, t_eval = split_threshold(40.0, align_frac=0.3, eval_frac=0.5)
    assert t_align == pytest.approx(40 * np.sqrt(0.3))
    assert t_eval == pytest.approx(40 * np.sqrt(0.5))
    n = 128
    circle = alignment_circle_mask(n, t_align)
    ring = evaluation_ring_mask(n, t_eval, 40.0)
    disc = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n)) <= 40.0
    assert not np.any(circle & ring)
    assert np.all(disc[circle | ring])
    assert circle.sum() / disc.sum() == pytest.approx(0.3, abs=0.01)
    assert ring.sum() / disc.sum() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError):
        split_threshold(40.0, align_frac=0.6, eval_frac=0.6)


def test_ring_storage_keeps_one_pixel_per_friedel_pair():
    n = 16
    rng = np.random.default_rng(0)
    obs = np.fft.fft2(rng.normal(size=(1, 2, n, n)))
    pred = np.fft.fft2(rng.normal(size=(1, n, n)))
    for k_max in (5.0, 8.0):                  # 8 = n/2 reaches the self-conjugate Nyquist pixels
        d = EvalRingData.from_fourier(obs, pred, 3.0, k_max)
        ring = evaluation_ring_mask(n, 3.0, k_max)
        assert d.x2 == pytest.approx(np.sum(np.abs(obs[:, :, ring]) ** 2), rel=1e-12)
        assert d.v2 == pytest.approx(2 * np.sum(np.abs(pred[:, ring]) ** 2), rel=1e-12)
        pairs = {(int(y) % n, int(x) % n) for y, x in zip(d.ky, d.kx)}
        partners = {((-y) % n, (-x) % n) for y, x in pairs}
        assert len(pairs) == d.n_pixels
        assert pairs | partners == set(zip(*np.nonzero(ring)))
        assert d.blocks.q.dtype == np.int8 and d.blocks.q.shape == (1, 2, d.n_pixels, 2)


def test_quantised_products_are_within_their_rounding_bound():
    """8-bit products: every part within scale/2 of w X V*; on Gaussian data their rms error is
    about 1 % of the rms product (the class docstring's claim) and 16 bits are ~256x closer."""
    rng = np.random.default_rng(4)
    n, p, f = 32, 3, 4
    obs = np.fft.fft2(rng.normal(size=(p, f, n, n)))
    pred = np.fft.fft2(rng.normal(size=(p, n, n)))
    d8 = EvalRingData.from_fourier(obs, pred, 6.0, 14.0)
    d16 = EvalRingData.from_fourier(obs, pred, 6.0, 14.0, bits=16)
    idx = (d8.ky % n) * n + d8.kx % n
    mult = np.where(((-d8.ky) % n) * n + (-d8.kx) % n == idx, 1.0, 2.0)
    exact = mult * obs.reshape(p, f, -1)[:, :, idx] * np.conj(pred.reshape(p, -1)[:, None, idx])

    def stored(d):
        parts = d.blocks.values()
        return parts[..., 0] + 1j * parts[..., 1]
    for d in (d8, d16):
        err = stored(d) - exact
        half = d.blocks.scale[:, :, None] / 2 + 1e-6 * np.abs(exact)  # + float32 arithmetic
        assert np.all(np.abs(err.real) <= half) and np.all(np.abs(err.imag) <= half)
    rms = np.sqrt(np.mean(np.abs(exact) ** 2))
    e8 = np.sqrt(np.mean(np.abs(stored(d8) - exact) ** 2)) / rms
    e16 = np.sqrt(np.mean(np.abs(stored(d16) - exact) ** 2)) / rms
    assert 3e-3 < e8 < 0.02
    assert e16 < e8 / 100
    with pytest.raises(ValueError):
        EvalRingData.from_fourier(obs, pred, 6.0, 14.0, bits=4)


def test_tcc_is_one_for_exactly_shifted_noiseless_frames_and_drops_for_wrong_tracks():
    rng = np.random.default_rng(1)
    n, p, f = 32, 3, 5
    img = _smooth_images(rng, (p,), n)
    tracks = np.cumsum(rng.normal(scale=0.7, size=(p, f, 2)), axis=1)
    frames = np.stack([[fourier.fourier_shift(img[i], *tracks[i, j]) for j in range(f)]
                       for i in range(p)])
    t_eval, k_max = 6.0, 12.0
    d = EvalRingData.from_fourier(np.fft.fft2(frames), np.fft.fft2(img), t_eval, k_max, bits=16)
    assert tcc(d, tracks) == pytest.approx(1.0, abs=1e-4)
    assert tcc(d, tracks + [0.4, 0.0]) < 0.9
    assert tcc(d, -tracks) < 0.9                  # wrong sign convention would fail here
    assert tcc(d, np.zeros_like(tracks)) < tcc(d, tracks + [0.4, 0.0])


def test_tcc_matches_brute_force_with_weights_and_several_micrographs(monkeypatch):
    rng = np.random.default_rng(2)
    n, f = 12, 3
    datasets, tracks, brute_parts = [], [], []
    weights = rng.uniform(0.2, 1.0, size=(f, n, n))
    for p in (2, 3):
        obs = np.fft.fft2(rng.normal(size=(p, f, n, n)))
        pred = np.fft.fft2(rng.normal(size=(p, n, n))) + obs.mean(1)
        tr = rng.normal(scale=0.3, size=(p, f, 2))
        datasets.append(EvalRingData.from_fourier(obs, pred, 2.5, 6.0, frame_weights=weights,
                                                  bits=16))
        tracks.append(tr)
        brute_parts.append((obs, pred, tr))
    obs = np.concatenate([b[0] for b in brute_parts])
    pred = np.concatenate([b[1] for b in brute_parts])
    tr = np.concatenate([b[2] for b in brute_parts])
    expected = _brute_tcc(obs, pred, tr, 2.5, 6.0, weights)
    assert abs(expected) > 0.05
    assert tcc(datasets, tracks) == pytest.approx(expected, rel=1e-4)
    one = _brute_tcc(*brute_parts[0], 2.5, 6.0, weights)
    assert tcc(datasets[0], tracks[0]) == pytest.approx(one, rel=1e-4)
    monkeypatch.setattr(numpy_backend, "_RING_CHUNK", 1)       # one particle per chunk
    for backend in ("numpy", "numba"):
        sums = sum(tcc_sums(d, t, backend=backend) for d, t in zip(datasets, tracks))
        assert tcc_from_sums(sums) == pytest.approx(expected, rel=1e-4)
    joined = EvalRingData.concatenate(datasets)
    assert tcc(joined, np.concatenate(tracks)) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError):
        tcc_sums(datasets[0], tracks[1])


def test_memory_estimate_equals_real_bytes():
    rng = np.random.default_rng(3)
    n, p, f, window = 24, 4, 6, 10
    t_eval, k_max = split_threshold(10.0)[1], 10.0
    obs = np.fft.fft2(rng.normal(size=(p, f, n, n)))
    pred = np.fft.fft2(rng.normal(size=(p, n, n)))
    cc = quantise(rng.normal(size=(p, f, window, window)), 16, block_ndim=2)
    cc_bytes = cc.nbytes
    for bits in (8, 16):
        d = EvalRingData.from_fourier(obs, pred, t_eval, k_max, bits=bits)
        assert estimate_memory(p, f, n, t_eval, k_max, window, bits) == d.nbytes + cc_bytes
        per = bytes_per_particle(f, n, t_eval, k_max, window, bits)
        assert estimate_memory(p + 5, f, n, t_eval, k_max, window, bits) == \
            d.nbytes + cc_bytes + 5 * per
