"""What a better data term can give the track shape (issue 14): the same simulated micrographs
polished with the true sigmas, the data term changed one thing at a time. RMS and shape track
errors (A, shape = each particle's mean error removed).

    python benchmarks/polish_data_term.py [--micrographs 4 --snr 0.007 0.035 --seed 1
        --variants half half@res truth truth@res ref0.5 half+blur truth+blur]

Variants (a name, then optional suffixes):
  half       own-half-map predictions (what polishing gets), CC up to Nyquist (the dev set of
             benchmarks/polish_autosigma.py)
  truth      predictions from the noise-free true map (upper bound of a better reference)
  ref<a>     half maps with a x their noise power: truth + sqrt(a) (half - truth), the same noise
             realisation (a = 0.5: about twice the particles behind each half map)
  @res       CC only up to the half maps' FSC = 0.143 resolution (the polish program's default,
             --data-resolution 0); @<A> up to <A> Angstrom
  +blur      oracle within-frame blur: each particle-frame's prediction multiplied by the true
             blur of the simulation (mean over its sub-steps of exp(-2 pi i k.d), d the sub-step
             offsets from the frame's mean position; real, since they are symmetric)
  +vblur     blur from the tracks of a first fit (sinc(k.v), v the fitted central velocity), then
             a refit: what a program could do
  +fsc       predictions times the half maps' FSC (polish_autosigma's variant)
"""
import argparse
import dataclasses
import re

import numpy as np

import polishplugin.core.motion.micrograph as mg
from _common import add_development_options, development_config, rms_errors, track_errors
from polish_autosigma import _fsc_predictions
from polishplugin.core.fourier import fsc, resolution_at
from polishplugin.core.motion.observation import (crop_plane, cc_scale_factor, whitening_filter,
                                                   _window_dft)
from polishplugin.core.simulate.dataset import simulate_dataset

_ORIG = {"align": mg.align_micrograph, "cc": mg.cc_maps_from_spectra}
_STATE = {}


def blur_cc_maps(spectra, predictions, damage, radius, noise_power, cc_scale="likelihood",
                 dtype=np.float32, backend=None, n=None, max_ring=None, out=None):
    """cc_maps_from_spectra with a per particle-frame real blur factor _STATE["blur"] (P, F, m,
    m) on the predictions (numpy only, in-memory spectra)."""
    blur = _STATE["blur"]
    x = spectra.array if hasattr(spectra, "array") else np.asarray(spectra)
    P, F, m = x.shape[:3]
    n = m if n is None else n
    mh = m // 2 + 1
    pred = crop_plane(np.asarray(predictions), m)
    filt2 = whitening_filter(n, noise_power, max_ring, m) ** 2 * n * n * \
        cc_scale_factor(n, cc_scale)
    dmg = np.ones((F, m, m)) if damage is None else crop_plane(np.asarray(damage), m)
    ey, ex = _window_dft(m, radius, x.dtype, n)
    W = 2 * radius + 1
    if out is None:
        out = np.empty((P, F, W, W), dtype=dtype)
    for p in range(P):
        b = crop_plane(blur[p], m)
        wts = (np.conj(pred[p]) * dmg * b)[..., :mh] * filt2
        prod = x[p] * wts.astype(x.dtype)
        out[p:p + 1] = np.matmul(np.matmul(ey, prod), ex).real[None]
    return out


def sub_step_blur(substeps, positions, n):
    """Real blur factors (P, F, n, n) on the fft2 grid of n px patches: mean over sub-steps j of
    cos(2 pi k.(x_j - x_mean)) (the offsets are symmetric in time, so the sine part cancels)."""
    k = np.fft.fftfreq(n)
    d = substeps - positions[:, :, None, :]                 # (P, F, S, 2)
    cx = np.cos(2 * np.pi * d[..., 0, None] * k)             # (P, F, S, n)
    cy = np.cos(2 * np.pi * d[..., 1, None] * k)
    sx = np.sin(2 * np.pi * d[..., 0, None] * k)
    sy = np.sin(2 * np.pi * d[..., 1, None] * k)
    # cos(a + b) = cos a cos b - sin a sin b, averaged over sub-steps
    return (np.einsum("pfsy,pfsx->pfyx", cy, cx) - np.einsum("pfsy,pfsx->pfyx", sy, sx)) / \
        d.shape[2]


def velocity_blur(tracks, n):
    """Blur factors (P, F, n, n) of uniform motion over each frame at the tracks' central
    velocity v (np.gradient over frames): sinc(k.v)."""
    v = np.gradient(tracks, axis=1)
    k = np.fft.fftfreq(n)
    return np.sinc(v[..., 1, None, None] * k[:, None] + v[..., 0, None, None] * k[None, :])


def run_variant(ds, mic, name, res143):
    _fsc_predictions(ds, "+fsc" in name)
    base = re.match(r"(half|truth|ref[0-9.]+)", name).group(1)
    if base == "truth":
        ds = dataclasses.replace(ds, half1=ds.volume, half2=ds.volume)
    elif base.startswith("ref"):
        a = np.sqrt(float(base[3:]))
        ds = dataclasses.replace(ds, half1=ds.volume + a * (ds.half1 - ds.volume),
                                 half2=ds.volume + a * (ds.half2 - ds.volume))
    m = re.search(r"@([0-9.]*)", name)
    res = None if m is None else (float(m.group(1)) if m.group(1) else res143)
    mode = "true" if "+blur" in name else "vel" if "+vblur" in name else None

    def align(frames, centres, predictions, damage, sig, initial, **kw):
        n = predictions.shape[-1]
        if res is not None:
            kw["max_ring"] = int(np.ceil(n * ds.config.pixel_size / res - 1e-9))
        if mode is None:
            return _ORIG["align"](frames, centres, predictions, damage, sig, initial, **kw)
        frames = list(frames)
        if mode == "true":
            _STATE["blur"] = sub_step_blur(mic.substeps, mic.positions, n)
        else:
            first = _ORIG["align"](iter(frames), centres, predictions, damage, sig, initial,
                                   **kw)
            _STATE["blur"] = velocity_blur(first.tracks, n)
        mg.cc_maps_from_spectra = blur_cc_maps
        try:
            return _ORIG["align"](iter(frames), centres, predictions, damage, sig, initial,
                                  **kw)
        finally:
            mg.cc_maps_from_spectra = _ORIG["cc"]

    mg.align_micrograph = align
    try:
        return mg.polish_simulated_micrograph(ds, mic).tracks
    finally:
        mg.align_micrograph = _ORIG["align"]


def main():
    ap = argparse.ArgumentParser()
    add_development_options(ap)
    ap.add_argument("--variants", nargs="+", default=["half", "half@res", "truth", "truth@res"])
    a = ap.parse_args()
    print("| SNR | variant | RMS (A) | shape (A) |\n|---|---|---|---|")
    for snr in a.snr:
        cfg = development_config(a, snr)
        ds = simulate_dataset(cfg)
        msk = ds.mask if ds.mask is not None else 1.0
        res143 = resolution_at(fsc(ds.half1 * msk, ds.half2 * msk), ds.half1.shape[0],
                               cfg.pixel_size)
        mics = list(ds)
        for name in a.variants:
            err = [track_errors(mic, run_variant(ds, mic, name, res143), cfg.pixel_size)
                   for mic in mics]
            rms, shape = rms_errors(err)
            print("| %g | %s | %.3f | %.3f |" % (snr, name, rms, shape), flush=True)


if __name__ == "__main__":
    main()
