"""Accuracy of Bayesian polishing tracks on simulated movies with known motion.

Prints a markdown table of the RMS track error (A) over all particles and frames, in full and
after removing each particle's mean offset over the frames ("shape"), for: no correction, the
simulated earlier global track, unregularised per-particle tracking, GP MAP with the true sigmas
and GP MAP with RELION's GUI defaults (0.2 / 5000 / 2), at a realistic SNR and a 5x higher one.

    python benchmarks/polish_accuracy.py [--micrographs 4] [--size 1024] [--frames 24]
        [--particles 30] [--box 96] [--snr 0.01 0.05] [--seed 1] [--cc-scale likelihood|relion]
"""
import argparse
import logging
import time

import numpy as np

from _common import add_movie_options, movie_config, rms_errors, track_errors
from polishplugin.constants import DEFAULT_SIGMA_ACC, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_VEL
from polishplugin.core.motion.micrograph import polish_simulated_micrograph
from polishplugin.core.simulate.dataset import simulate_dataset

METHODS = ("no correction", "global track only", "per-particle, no prior", "GP MAP, true sigmas",
           "GP MAP, defaults 0.2/5000/2")


def _tracks(ds, mic, method, cc_scale):
    P, F = mic.positions.shape[:2]
    if method == METHODS[0]:
        return np.zeros((P, F, 2))
    if method == METHODS[1]:
        return np.repeat(mic.global_track[None], P, axis=0)
    kw = dict(init="global", cc_scale=cc_scale)
    if method == METHODS[2]:
        return polish_simulated_micrograph(ds, mic, mode="none", **kw).tracks
    if method == METHODS[3]:
        return polish_simulated_micrograph(ds, mic, mode="gp", **kw).tracks
    defaults = (DEFAULT_SIGMA_VEL, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_ACC)
    return polish_simulated_micrograph(ds, mic, mode="gp", sigmas=defaults, **kw).tracks


def run_set(cfg, cc_scale):
    """{method: (RMS, shape RMS)} in A over all particles and frames."""
    ds = simulate_dataset(cfg)
    errors = {m: [] for m in METHODS}
    for mic in ds:
        for m in METHODS:
            errors[m].append(track_errors(mic, _tracks(ds, mic, m, cc_scale), cfg.pixel_size))
    return {m: rms_errors(e) for m, e in errors.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_movie_options(ap)
    ap.add_argument("--cc-scale", default="likelihood", choices=("relion", "likelihood"))
    ap.add_argument("--refined-fixed", action="store_true",
                    help="refined centres = truth + 0.5 px noise per axis, instead of found by "
                         "correlating the data with the reference (error set by the SNR)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING)
    t0 = time.time()
    results = {}
    for snr in a.snr:
        cfg = movie_config(a, snr, dark_particles=True, refined_from_data=not a.refined_fixed)
        results[snr] = run_set(cfg, a.cc_scale)
    c = cfg
    print("Polishing track accuracy: %d micrographs %dx%d, %d frames, %d particles, box %d, "
          "%.2f A/px, %.2f e/A^2/frame, true sigmas %g/%g/%g, seed %d, CC scale %s, refined "
          "centres %s, %.0f s"
          % (a.micrographs, a.size, a.size, a.frames, a.particles, a.box, c.pixel_size,
             c.dose_per_frame, c.sigma_vel, c.sigma_div, c.sigma_acc, a.seed, a.cc_scale,
             "truth + 0.5 px" if a.refined_fixed else "from the data", time.time() - t0))
    print()
    head = "| method | " + " | ".join("SNR %g: RMS (A) | SNR %g: shape RMS (A)" % (s, s)
                                      for s in a.snr) + " |"
    print(head)
    print("|---" * (1 + 2 * len(a.snr)) + "|")
    for m in METHODS:
        print("| %s | " % m + " | ".join("%.3f | %.3f" % results[s][m] for s in a.snr) + " |")
    print()
    for s in a.snr:
        r = results[s]
        print("SNR %g: shape error GP MAP (true sigmas) / global only = %.2f; "
              "GP MAP (defaults) / global only = %.2f"
              % (s, r[METHODS[3]][1] / r[METHODS[1]][1], r[METHODS[4]][1] / r[METHODS[1]][1]))


if __name__ == "__main__":
    main()
