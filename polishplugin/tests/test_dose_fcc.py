"""FCC accumulator, eq. 20 of Zivanov et al. (2019)."""
import numpy as np
import pytest

from polishplugin.core.dose.fcc import FccAccumulator
from polishplugin.core.fourier import shift_phase


def _random_fft(rng, *shape):
    return np.fft.fft2(rng.normal(size=shape))


def test_noiseless_fcc_is_one():
    rng = np.random.default_rng(0)
    p, f, n = 3, 4, 16
    pred = _random_fft(rng, p, n, n)
    shifts = rng.uniform(-3, 3, (p, f, 2))
    obs = np.stack([2.5 * pred * shift_phase(n, n, shifts[:, i, 0], shifts[:, i, 1])
                    for i in range(f)], axis=1)
    acc = FccAccumulator(f, n)
    acc.add(obs, pred, shifts)
    np.testing.assert_allclose(acc.fcc(), 1.0, atol=1e-12)
    # a per-frame prediction and a wrong track give a lower FCC
    acc2 = FccAccumulator(f, n)
    acc2.add(obs, np.repeat(pred[:, None], f, axis=1), shifts + 0.5)
    assert np.all(acc2.fcc()[:, 3:] < 0.99)


def test_fcc_matches_brute_force_with_integer_shifts():
    rng = np.random.default_rng(1)
    p, f, n = 2, 3, 12
    obs_real = rng.normal(size=(p, f, n, n))
    pred_real = rng.normal(size=(p, n, n))
    shifts = rng.integers(-3, 4, (p, f, 2)).astype(float)
    acc = FccAccumulator(f, n)
    acc.add(np.fft.fft2(obs_real), np.fft.fft2(pred_real), shifts)
    num = np.zeros((f, n // 2 + 1))
    wx, wv = np.zeros_like(num), np.zeros_like(num)
    freqs = np.fft.fftfreq(n) * n
    for pi in range(p):
        for fi in range(f):
            sx, sy = shifts[pi, fi].astype(int)
            x = np.fft.fft2(obs_real[pi, fi])
            v = np.fft.fft2(np.roll(pred_real[pi], (sy, sx), axis=(0, 1)))
            for iy in range(n):
                for ix in range(n):
                    r = np.hypot(freqs[iy], freqs[ix])
                    for kappa in range(n // 2 + 1):
                        if abs(r - kappa) < 0.5:
                            num[fi, kappa] += (x[iy, ix] * np.conj(v[iy, ix])).real
                            wx[fi, kappa] += abs(x[iy, ix]) ** 2
                            wv[fi, kappa] += abs(v[iy, ix]) ** 2
    np.testing.assert_allclose(acc.num, num, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(acc.wobs, wx, rtol=1e-10)
    np.testing.assert_allclose(acc.wpred, wv, rtol=1e-10)
    np.testing.assert_allclose(acc.fcc(), num / np.sqrt(wx * wv), rtol=1e-10, atol=1e-12)


def test_merge_equals_single_pass_and_from_sums():
    rng = np.random.default_rng(2)
    p, f, n = 4, 3, 10
    obs = _random_fft(rng, p, f, n, n)
    pred = _random_fft(rng, p, n, n)
    shifts = rng.normal(size=(p, f, 2))
    whole = FccAccumulator(f, n)
    whole.add(obs, pred, shifts)
    a, b = FccAccumulator(f, n), FccAccumulator(f, n)
    a.add(obs[:1], pred[:1], shifts[:1])
    b.add(obs[1:], pred[1:], shifts[1:])
    a.merge(b)
    np.testing.assert_allclose(a.fcc(), whole.fcc(), rtol=1e-12)
    c = FccAccumulator.from_sums(whole.num, whole.wobs, whole.wpred)
    assert (c.nframes, c.box) == (f, n)
    np.testing.assert_array_equal(c.fcc(), whole.fcc())
    with pytest.raises(ValueError):
        a.merge(FccAccumulator(f, n + 2))
    with pytest.raises(ValueError):
        whole.add(obs, pred, shifts[:, :2])
