"""Rendering particle movies: Fourier-space patches, CTF, dose damage, motion blur, counting noise.

Image model of one frame f (expected electron counts per pixel):
    lambda_f(x) = dose_px * (1 + contrast * sum_p s_{p,f}(x)),
    s_{p,f} = IFT[ P_p(k) CTF_p(k) D_f(k) MTF(k) (1/S) sum_j exp(-2 pi i <k, x_{p,f,j} - c_p>) ],
with P_p the Fourier slice of the truth (core/projector.py), D_f the per-frame damage filter, x_{p,f,j}
the S sub-step positions of particle p within frame f (motion blur) and c_p the integer centre of its
padded patch. Each particle is rendered in its own (m, m) patch and added into the frame: no FFT of a
whole micrograph. The detector MTF (if any) acts on the signal only (counting noise stays white).
Raw counts are Poisson(lambda * sensitivity); the gain reference is 1/sensitivity (0 on dead pixels).
"""
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..damage import bfactor_filter, exposure_filter, frame_doses
from ..fourier import radius_grid


def frame_filters(m, pixel_size, nframes, dose_per_frame, pre_exposure=0.0, voltage=300.0,
                  bfactors=None, scales=None):
    """Per-frame amplitude damage filters (F, m, m): the Grant & Grigorieff exposure filter at
    mid-frame exposure (core/damage.py), or exp(C_f) exp(B_f k^2 / 4) when ``bfactors`` is given."""
    k = radius_grid(m, m, pixel_size)
    if bfactors is not None:
        if len(bfactors) != nframes:
            raise ValueError("%d B-factors for %d frames" % (len(bfactors), nframes))
        return bfactor_filter(k, bfactors, scales)
    return exposure_filter(k, frame_doses(nframes, dose_per_frame, pre_exposure), voltage)


def detector_mtf(m, kind):
    """Detector MTF on an (m, m) fft2 grid: None, or 'sinc' (ideal square pixel aperture,
    sinc(kx) sinc(ky) with k in cycles/px: 0.64 at Nyquist)."""
    if kind in (None, "none"):
        return None
    if kind != "sinc":
        raise ValueError("unknown detector MTF %r" % kind)
    f = np.sinc(np.fft.fftfreq(m))
    return f[:, None] * f[None, :]


def render_particle(fproj, ctf, filters, offsets, mtf=None):
    """Frames (F, m, m) float32 of one particle in its patch.

    fproj: (m, m) Fourier slice centred at m//2; ctf: (m, m); filters: (F, m, m);
    offsets: (F, S, 2) sub-step positions (x, y) px relative to the patch centre (m//2, m//2).
    """
    m = fproj.shape[-1]
    k = np.fft.fftfreq(m)
    nsub = offsets.shape[1]
    ex = np.exp(-2j * np.pi * offsets[..., 0, None] * k)          # (F, S, m) along x
    ey = np.exp(-2j * np.pi * offsets[..., 1, None] * k)          # (F, S, m) along y
    blur = np.matmul(ey.transpose(0, 2, 1), ex) / nsub          # (F, m, m) = sum_s ey[s, y] ex[s, x]
    base = fproj * ctf
    if mtf is not None:
        base = base * mtf
    spec = (base[None] * filters * blur).astype(np.complex64)
    return scipy.fft.ifft2(spec, axes=(-2, -1)).real


def add_patch(frames, patch, corner):
    """Add patch (F, m, m) into frames (F, ny, nx) with its pixel (0, 0) at corner (y0, x0); the
    parts outside the frame are dropped."""
    y0, x0 = corner
    m = patch.shape[-1]
    ny, nx = frames.shape[-2:]
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + m, ny), min(x0 + m, nx)
    if ya < yb and xa < xb:
        frames[:, ya:yb, xa:xb] += patch[:, ya - y0:yb - y0, xa - x0:xb - x0]


def place_particles(shape, nparticles, min_distance, margin, rng, max_tries=20000):
    """Random (x, y) px positions at least ``min_distance`` apart and ``margin`` from the edges."""
    ny, nx = shape
    if nx - 2 * margin <= 0 or ny - 2 * margin <= 0:
        raise ValueError("margin %g leaves no room in a %dx%d micrograph" % (margin, nx, ny))
    out = []
    for _ in range(max_tries):
        if len(out) == nparticles:
            break
        p = rng.uniform([margin, margin], [nx - margin, ny - margin])
        if all(np.hypot(*(p - q)) >= min_distance for q in out):
            out.append(p)
    if len(out) < nparticles:
        raise ValueError("could not place %d particles %g px apart in %dx%d" % (
            nparticles, min_distance, nx, ny))
    return np.array(out).reshape(-1, 2)


def contrast_for_snr(snr, dose_px_per_frame, nframes, signal_variance):
    """Contrast c such that the full-dose SNR is ``snr``: SNR = var over the box of the expected
    full-dose signal counts, (F dose_px c)^2 var(s), over the variance of the full-dose counting noise,
    F dose_px (Poisson); hence c = sqrt(snr / (F dose_px var(s)))."""
    return float(np.sqrt(snr / (nframes * dose_px_per_frame * signal_variance)))


@dataclass
class Detector:
    sensitivity: np.ndarray   # (ny, nx) relative pixel gain, 0 on dead pixels; None = ideal
    gain: np.ndarray          # (ny, nx) float32 gain reference = 1/sensitivity (0 where dead); None
    defect_mask: np.ndarray   # (ny, nx) bool, dead pixels (what a facility's defect file lists)
    hot_pixels: np.ndarray    # (K, 2) int (x, y) pixels that count ``hot_level`` x dose every frame
    hot_level: float


def make_detector(shape, rng, gain_sigma=0.1, n_dead_columns=2, n_hot=5, hot_level=50.0,
                  with_gain=True):
    """A counting detector: pixel sensitivity ~ 1 + gain_sigma N(0, 1) (clipped to [0.5, 1.5]),
    ``n_dead_columns`` dead columns, ``n_hot`` hot pixels. Without gain the sensitivity is 1."""
    ny, nx = shape
    dead = np.zeros(shape, dtype=bool)
    if with_gain:
        sens = np.clip(1.0 + gain_sigma * rng.standard_normal(shape), 0.5, 1.5).astype(np.float32)
        dead[:, rng.choice(nx, n_dead_columns, replace=False)] = True
        sens[dead] = 0.0
        gain = np.zeros(shape, dtype=np.float32)
        gain[~dead] = 1.0 / sens[~dead]
    else:
        sens, gain = None, None
    alive = np.flatnonzero(~dead.ravel())
    flat = rng.choice(alive, n_hot, replace=False)
    hot = np.stack([flat % nx, flat // nx], axis=1)
    return Detector(sens, gain, dead, hot, float(hot_level))


def count_frames(expected, detector, dose_px_per_frame, rng):
    """Raw counts (F, ny, nx) uint16: Poisson(expected * sensitivity), hot pixels at
    Poisson(hot_level * dose_px) in every frame."""
    raw = np.empty(expected.shape, dtype=np.uint16)
    top = np.iinfo(np.uint16).max
    for f in range(expected.shape[0]):            # frame by frame: no (F, ny, nx) int64 temporary
        lam = np.clip(expected[f], 0.0, None)
        if detector.sensitivity is not None:
            lam = lam * detector.sensitivity
        raw[f] = np.minimum(rng.poisson(lam), top)
    if len(detector.hot_pixels):
        x, y = detector.hot_pixels.T
        hot = rng.poisson(detector.hot_level * dose_px_per_frame, (raw.shape[0], len(x)))
        raw[:, y, x] = np.minimum(hot, top)
    return raw
