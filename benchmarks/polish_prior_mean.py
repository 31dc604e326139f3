"""Where should the GP prior be centred? Zero (the paper) or the initial (MotionCorr) track.

    python benchmarks/polish_prior_mean.py DRIFT_A SNR

Simulates 4 micrographs (1024^2, 24 frames, 30 particles, box 96, true sigmas 0.5/5000/2, dark
particles, seed 1) with the given stage drift and SNR, and prints RMS track errors (A, full and
"shape" = each particle's mean offset removed) for the global track and for GP MAP with the true
sigmas and with RELION's defaults (0.2/5000/2), for each prior mean.
"""
import logging
import sys

import numpy as np

from polishplugin.core.motion.micrograph import polish_simulated_micrograph
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset


def main(drift, snr):
    logging.disable(logging.WARNING)
    cfg = SimulationConfig(seed=1, n_micrographs=4, particles_per_micrograph=30, box=96, snr=snr,
                           drift_A=drift, dark_particles=True)
    ds = simulate_dataset(cfg)
    res = {}
    for i in range(len(ds)):
        mic = ds.micrograph(i)
        P = mic.positions.shape[0]

        def err(tracks):
            return mic.centres[:, None, :] + tracks - mic.positions
        res.setdefault("global track", []).append(err(np.repeat(mic.global_track[None], P, 0)))
        for pm in ("zero", "initial"):
            for sig, lab in ((None, "true sigmas"), ((0.2, 5000, 2), "defaults")):
                r = polish_simulated_micrograph(ds, mic, sigmas=sig, prior_mean=pm)
                res.setdefault("GP, prior mean %s, %s" % (pm, lab), []).append(err(r.tracks))
    for k, v in res.items():
        e = np.concatenate(v) * cfg.pixel_size
        sh = e - e.mean(1, keepdims=True)
        print("| %g | %g | %s | %.3f | %.3f |" % (drift, snr, k, np.sqrt((e ** 2).sum(-1).mean()),
                                                   np.sqrt((sh ** 2).sum(-1).mean())))


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]))
