"""Observation model of seed zivanov2019 §2.1.3 (eq. 12-16) on arrays: noise whitening and CC maps.

Inputs per micrograph: particle patches per frame X (P, F, n, n) real, cut around each particle
(with padding for its motion); predictions V (P, n, n) complex, numpy ``fft2`` layout and scale of
an image in the same intensity units as the patches (projection x CTF, made elsewhere); per-frame
damage filters D (F, n, n) real in the same layout (Grant & Grigorieff amplitude attenuation,
applied to V). The noise power spectrum S(ring) is the ring average of |fft2(X)|^2 over all
particles and frames of the micrograph (the signal is weak in single frames), as in RELION.

CC_{p,f}(s) = scale * Re sum_k X^(k) conj(D_f(k) V^_p(k)) exp(2 pi i k.s) with X^ = X / sqrt(S),
V^ = V / sqrt(S), DC and frequencies beyond Nyquist (ring > n//2) zeroed; see
:mod:`.energy` for the scale (``cc_scale``) and why it makes -2 CC the doubled negative
log-likelihood. The CC at integer shifts comes from one inverse FFT per (particle, frame) and is
kept on the window |sx|, |sy| <= R (W = 2R + 1, zero shift at index R).
"""
import numpy as np

CC_SCALES = ("relion", "likelihood")


def _rfft_rings(n):
    """Ring index round(|k| n) and Hermitian multiplicity of every pixel of the rfft2 half-plane."""
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    rings = np.rint(np.hypot(ky, kx) * n).astype(np.int64)
    mult = np.full(rings.shape, 2.0)
    mult[:, 0] = 1.0
    if n % 2 == 0:
        mult[:, -1] = 1.0
    return rings, mult


def estimate_noise_power(patches):
    """Ring-averaged power S(r) = <|fft2(X)(k)|^2> over all patches and frames (full-plane average,
    from the rfft2 half-plane with Hermitian multiplicities). Returns (nrings,) float64."""
    patches = np.asarray(patches)
    n = patches.shape[-1]
    rings, mult = _rfft_rings(n)
    nr = int(rings.max()) + 1
    total = np.zeros(nr)
    for p in range(patches.shape[0]):
        power = np.abs(np.fft.rfft2(patches[p].astype(np.float64))) ** 2
        total += np.bincount(rings.ravel(), (power.sum(axis=0) * mult).ravel(), minlength=nr)
    count = np.bincount(rings.ravel(), mult.ravel(), minlength=nr) * patches.shape[0] * patches.shape[1]
    return total / np.maximum(count, 1)


def whitening_filter(n, noise_power):
    """1 / sqrt(S(ring)) on the rfft2 half-plane (n, n//2+1); zero at DC, beyond Nyquist and where
    S is not positive."""
    rings, _ = _rfft_rings(n)
    s = np.zeros(rings.max() + 1)
    s[:len(noise_power)] = np.asarray(noise_power, dtype=np.float64)[:rings.max() + 1]
    filt = np.zeros(s.shape)
    ok = s > 0
    filt[ok] = 1.0 / np.sqrt(s[ok])
    filt[0] = 0.0
    filt[n // 2 + 1:] = 0.0
    return filt[rings]


def cc_scale_factor(n, cc_scale="likelihood"):
    """Factor on the likelihood-scale CC: 1 for "likelihood", N / (2 A) for "relion" (N = n^2,
    A = pi/4 n w with w = 2 (n//2 + 1) - 1, RELION's MotionHelper::noiseNormalize area)."""
    if cc_scale == "likelihood":
        return 1.0
    if cc_scale == "relion":
        w = 2 * (n // 2 + 1) - 1
        return n * n / (2.0 * 0.25 * np.pi * w * n)
    raise ValueError("cc_scale must be one of %s, got %r" % (CC_SCALES, cc_scale))


def compute_cc_maps(patches, predictions, damage, radius, noise_power=None,
                    cc_scale="likelihood", dtype=np.float32):
    """CC maps (P, F, W, W), W = 2 radius + 1, of eq. 15-16 for all particles and frames.

    ``noise_power`` (nrings,) overrides the estimate from the patches; ``damage`` may be None
    (no damage weighting). Returns (cc_maps, noise_power).
    """
    patches = np.asarray(patches)
    P, F, n, n2 = patches.shape
    if n != n2:
        raise ValueError("patches must be square, got %s" % (patches.shape,))
    if predictions.shape != (P, n, n):
        raise ValueError("predictions %s do not match patches %s" % (predictions.shape, patches.shape))
    if damage is not None and damage.shape != (F, n, n):
        raise ValueError("damage filters %s do not match (%d, %d, %d)" % (damage.shape, F, n, n))
    if radius < 0 or 2 * radius + 1 > n:
        raise ValueError("CC window radius %d does not fit in a %d px box" % (radius, n))
    if noise_power is None:
        noise_power = estimate_noise_power(patches)
    nh = n // 2 + 1
    filt2 = whitening_filter(n, noise_power) ** 2 * n * n * cc_scale_factor(n, cc_scale)
    dmg = np.ones((F, n, nh)) if damage is None else np.asarray(damage)[..., :nh]
    idx = np.arange(-radius, radius + 1) % n
    out = np.empty((P, F, 2 * radius + 1, 2 * radius + 1), dtype=dtype)
    for p in range(P):
        x = np.fft.rfft2(patches[p].astype(np.float64))
        prod = x * np.conj(predictions[p, :, :nh])[None] * dmg * filt2[None]
        cc = np.fft.irfft2(prod, s=(n, n))
        out[p] = cc[:, idx][:, :, idx]
    return out, noise_power
