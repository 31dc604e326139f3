"""Observation model (eq. 12-16): CC maps against a brute-force real-space evaluation of the
squared difference of whitened images, the noise-power estimate, and the RELION scale."""
import numpy as np
import pytest

from polishplugin.core.fourier import ring_index
from polishplugin.core.motion.observation import (cc_maps_from_spectra, cc_scale_factor,
                                                  noise_power_from_spectra, patch_spectra)


def _whiten_real(img_f, noise_power, n):
    """Independent whitening on the full fft2 grid: unit-variance white noise per pixel."""
    r = ring_index(n)
    filt = np.zeros((n, n))
    ok = (r > 0) & (r <= n // 2)
    filt[ok] = np.sqrt(n * n / noise_power[r[ok]])
    return np.fft.ifft2(img_f * filt).real


@pytest.mark.parametrize("n", [24, 25])
def test_cc_is_half_the_squared_difference(n):
    rng = np.random.default_rng(n)
    P, F, R = 2, 3, 5
    patches = rng.normal(size=(P, F, n, n))
    preds = np.fft.fft2(rng.normal(size=(P, n, n)))
    damage = rng.uniform(0.2, 1.0, size=(F, n, n))
    damage = 0.5 * (damage + damage[:, (-np.arange(n)) % n][:, :, (-np.arange(n)) % n])  # Hermitian
    power = rng.uniform(0.5, 2.0, size=n) * n * n
    cc = cc_maps_from_spectra(patch_spectra(patches), preds, damage, R, power, "likelihood",
                              np.float64)
    for p in range(P):
        for f in range(F):
            xw = _whiten_real(np.fft.fft2(patches[p, f]), power, n)
            vw = _whiten_real(preds[p] * damage[f], power, n)
            for sx, sy in [(0, 0), (3, -2), (-5, 5), (1, 4)]:
                sq = np.sum((xw - np.roll(vw, (sy, sx), axis=(0, 1))) ** 2)
                k = np.sum(xw ** 2) + np.sum(vw ** 2)
                assert -2 * cc[p, f, R + sy, R + sx] == pytest.approx(sq - k, rel=1e-9, abs=1e-8)


def test_relion_scale():
    rng = np.random.default_rng(0)
    n = 32
    patches = rng.normal(size=(1, 2, n, n))
    preds = np.fft.fft2(rng.normal(size=(1, n, n)))
    spectra = patch_spectra(patches)
    power = noise_power_from_spectra(spectra)
    a = cc_maps_from_spectra(spectra, preds, None, 4, power, "likelihood", np.float64)
    b = cc_maps_from_spectra(spectra, preds, None, 4, power, "relion", np.float64)
    np.testing.assert_allclose(b, a * cc_scale_factor(n, "relion"))
    assert cc_scale_factor(n, "relion") == pytest.approx(2 * n / (np.pi * (n + 1)))


def test_noise_power_of_white_noise():
    rng = np.random.default_rng(1)
    n, sigma = 32, 1.7
    s = noise_power_from_spectra(patch_spectra(rng.normal(scale=sigma, size=(20, 10, n, n))))
    # E|fft2(noise)|^2 = N sigma^2 on every ring
    np.testing.assert_allclose(s[1:n // 2 + 1], n * n * sigma ** 2, rtol=0.1)


def test_whitened_noise_cc_has_unit_scale():
    # for pure noise and a fixed prediction, Var CC(s) = sum_j V_w(j)^2 (likelihood scale)
    rng = np.random.default_rng(2)
    n = 24
    pred = np.fft.fft2(rng.normal(size=(n, n)))
    power = np.full(n, n * n * 4.0)
    noise = rng.normal(scale=2.0, size=(400, 1, n, n))
    cc = cc_maps_from_spectra(patch_spectra(noise), np.repeat(pred[None], 400, axis=0), None, 0,
                              power, "likelihood", np.float64)
    vw = _whiten_real(pred, power, n)
    assert np.var(cc[:, 0, 0, 0]) == pytest.approx(np.sum(vw ** 2), rel=0.2)


def test_bad_shapes():
    with pytest.raises(ValueError, match="radius"):
        cc_maps_from_spectra(np.zeros((1, 1, 8, 5), complex), np.zeros((1, 8, 8), complex), None,
                             4, np.ones(6))
    with pytest.raises(ValueError, match="predictions"):
        cc_maps_from_spectra(np.zeros((1, 1, 8, 5), complex), np.zeros((2, 8, 8), complex), None,
                             2, np.ones(6))
