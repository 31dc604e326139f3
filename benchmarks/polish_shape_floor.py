"""How close the MAP tracks are to the best any estimator can do with our data term: the
posterior standard deviation of the track shape (each particle's mean removed) under the true
prior and the data term's expected (Fisher) curvature (core/motion/evidence.py), against the
shape error of the true-sigma MAP on the same simulated micrographs.

    python benchmarks/polish_shape_floor.py [--seed 1 --micrographs 4 --snr 0.007 0.035
        --reference half|truth --size 1024 --min-distance 0 --box 96 --patch 0]

--reference truth: predictions (and so the curvature) from the noise-free true map instead of
the own half maps, whose noise beyond their resolution inflates |V|^2 in the curvature.
--size 2048 --min-distance 210: the same 30 particles per micrograph so far apart that no
neighbour's signal reaches a particle's patch (how much the neighbours cost).
--seed 11 --box 128: the truth of benchmarks/vs_relion.py's seed-11 projects (same
SimulationConfig), where RELION's shape errors were measured.
--patch 192: patches of that size (px) instead of the polishing's (at most 1.4 x the box): the
information of the CTF-delocalised signal the default patch leaves out.
"""
import argparse
import dataclasses

import numpy as np

import polishplugin.core.motion.evidence as ev
from _common import add_development_options, development_config
from polishplugin.core.motion.micrograph import polish_simulated_micrograph
from polishplugin.core.simulate.dataset import simulate_dataset


def main():
    ap = argparse.ArgumentParser()
    add_development_options(ap)
    ap.add_argument("--reference", choices=("half", "truth"), default="half")
    ap.add_argument("--min-distance", type=float, default=0.0,
                    help="px between particles (0: the simulation's 0.75 box)")
    ap.add_argument("--patch", type=int, default=0, help="patch px (0: the polishing's)")
    a = ap.parse_args()
    seen = {}
    orig = ev.Evidence

    class Spy(orig):                      # keeps the pseudo-observations' precision
        def __init__(self, pos, y, prec, kernel="exp"):
            seen["a"] = prec
            super().__init__(pos, y, prec, kernel)
    ev.Evidence = Spy
    for snr in a.snr:
        c = development_config(a, snr, min_distance=a.min_distance or None)
        ds = simulate_dataset(c)
        if a.reference == "truth":
            ds = dataclasses.replace(ds, half1=ds.volume, half2=ds.volume)
        sv, sd, sa = ds.motion_params.to_pixels(c.dose_per_frame, c.pixel_size)
        var, err = [], []
        for mic in ds:
            polish_simulated_micrograph(ds, mic, sigma_search=ev.search_in_pixels(
                c.dose_per_frame, c.pixel_size), n=a.patch or None)
            prec = seen["a"]
            P, F = prec.shape
            e = orig(mic.centres[:P], np.zeros((P, F, 2)), prec)
            kappa, w = e._kernel_eig(sd)
            h = np.kron(e.tf, (w / (sv ** 2 * kappa)) @ w.T) + \
                np.kron(e.t2 / sa ** 2, np.eye(P)) + np.diag(prec.T.ravel())
            m = np.kron(np.eye(F) - 1.0 / F, np.eye(P))      # removes each particle's mean
            var.append(2 * np.trace(m @ np.linalg.inv(h) @ m.T) / (P * F))
            tracks = polish_simulated_micrograph(ds, mic, n=a.patch or None).tracks
            d = mic.centres[:, None, :] + tracks - mic.positions
            err.append(np.mean(np.sum((d - d.mean(1, keepdims=True)) ** 2, -1)))
        print("SNR %g: posterior SD of the shape %.3f A, true-sigma MAP shape error %.3f A"
              % (snr, np.sqrt(np.mean(var)) * c.pixel_size, np.sqrt(np.mean(err)) * c.pixel_size),
              flush=True)


if __name__ == "__main__":
    main()
