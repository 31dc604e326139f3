"""Sigmas chosen from each micrograph's own data (--sigmas auto) against fixed ones, on simulated
movies with known motion: RMS and shape track errors (A) and the chosen sigmas.

    python benchmarks/polish_autosigma.py [--micrographs 4 --particles 30 --box 96 --frames 24
        --snr 0.007 0.035 --seed 1 --true 0.5 5000 2 --variants true defaults auto auto2]
"""
import argparse
import time

import numpy as np

from _common import add_development_options, development_config, rms_errors, track_errors
from polishplugin.core.motion.evidence import search_in_pixels, sigmas_in_paper_units
from polishplugin.core.motion.micrograph import polish_simulated_micrograph
from polishplugin.core.simulate.dataset import simulate_dataset

DEFAULTS = (0.2, 5000.0, 2.0)


_FSC = {}


def fsc_weight(curve, box, n, m=None):
    """Per-pixel weight (m, m) (fft2 layout of an m x m grid cut from an n x n patch, default
    m = n) that turns a half-map prediction into the expected signal: E[V_true | V_half] =
    FSC V_half, since a half map's SSNR is FSC / (1 - FSC) and the Wiener factor SSNR / (1 +
    SSNR) equals the half-map FSC (clipped to [0, 1]). ``curve``: FSC per shell of the
    box-sized half maps; ring r of the n patch is shell r box / n."""
    from polishplugin.core.fourier import ring_index
    m = n if m is None else int(m)
    c = np.clip(np.nan_to_num(np.asarray(curve, dtype=np.float64)), 0.0, 1.0)
    k = np.fft.fftfreq(m) * m / n                       # cycles per pixel
    r = np.hypot(k[:, None], k[None, :]) * box          # shell of the half maps
    w = np.interp(r, np.arange(len(c)), c, right=0.0)
    w[0, 0] = c[0] if len(c) else 1.0
    return w



def _fsc_predictions(ds, on):
    """Monkeypatch predict_particles so that own-half predictions are FSC-weighted (variant)."""
    import polishplugin.core.predict as pr
    orig = _FSC.setdefault("orig", pr.predict_particles)
    if not on:
        pr.predict_particles = orig
        return
    from polishplugin.core.fourier import fsc
    m = ds.mask if ds.mask is not None else 1.0
    curve = fsc(ds.half1 * m, ds.half2 * m)

    def weighted(projectors, angles, half_sets, ctfs, n, px, opposite=False, **kw):
        out = orig(projectors, angles, half_sets, ctfs, n, px, opposite=opposite, **kw)
        return out if opposite else out * fsc_weight(curve, ds.half1.shape[0], n,
                                                        out.shape[-1])
    pr.predict_particles = weighted


def variant(ds, mic, name):
    c = ds.config
    _fsc_predictions(ds, name.endswith("+fsc"))
    name = name.replace("+fsc", "")
    if name == "global":
        return np.repeat(mic.global_track[None], len(mic.centres), axis=0), None
    if name in ("true", "defaults"):
        sig = None if name == "true" else DEFAULTS
        return polish_simulated_micrograph(ds, mic, sigmas=sig).tracks, None
    rounds = int(name[4:] or 1)
    s = search_in_pixels(c.dose_per_frame, c.pixel_size)
    r = polish_simulated_micrograph(ds, mic, sigma_search=s, sigma_rounds=rounds)
    return r.tracks, sigmas_in_paper_units(r.sigma_choice.sigmas_px, c.dose_per_frame,
                                           c.pixel_size) + r.sigma_choice.spread()


def main():
    ap = argparse.ArgumentParser()
    add_development_options(ap)
    ap.add_argument("--variants", nargs="+", default=["global", "true", "defaults", "auto"])
    a = ap.parse_args()
    print("| SNR | variant | RMS (A) | shape (A) | chosen sigmas (geo. mean over micrographs) | "
          "spread (median) | CPU s |\n|---|---|---|---|---|---|---|")
    for snr in a.snr:
        cfg = development_config(a, snr)
        ds = simulate_dataset(cfg)
        mics = list(ds)
        for name in a.variants:
            t0 = time.process_time()
            err, sig = [], []
            for mic in mics:
                tr, s = variant(ds, mic, name)
                err.append(track_errors(mic, tr, cfg.pixel_size))
                if s is not None:
                    sig.append(s)
            rms, shape = rms_errors(err)
            gs = sp = "-"
            if sig:
                s = np.array(sig)
                gs = "%.3g/%.3g/%.3g" % tuple(np.exp(np.log(np.abs(s[:, :3])).mean(0)))
                sp = "x%.2g/x%.2g/x%.2g" % tuple(np.median(s[:, 3:], 0))
            print("| %g | %s | %.3f | %.3f | %s | %s | %.1f |" % (
                snr, name, rms, shape, gs, sp, time.process_time() - t0), flush=True)


if __name__ == "__main__":
    main()
