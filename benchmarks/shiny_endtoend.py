"""End-to-end value of polishing + B-factor weighting on simulated movies with true angles.

Runs the programs as a user would (simulate -> polish -> bfactors) and reconstructs half maps
from the TRUE angles and origins (reconstruct program) for particle images made by:
  (a) plain frame sums, no motion correction, uniform weights;
  (b) global-track alignment with dose weighting (the simulator's Extract/ stacks: what an
      earlier MotionCor2-style correction and extraction give);
  (c) shiny particles: MAP tracks + fitted per-frame B-factor weights (eq. 20-22);
and, to separate the two ingredients, (d) global track + fitted weights, (e) MAP tracks +
uniform weights, (f) TRUE tracks + fitted weights (upper bound of the tracking).
Prints a markdown table: half-map FSC = 0.143 resolution and FSC(mean map, truth) = 0.5
resolution (A), both with the simulation's mask, and the fitted B-factors.

    python benchmarks/shiny_endtoend.py --work /tmp/shiny [--micrographs 4 --size 768
        --frames 16 --particles 40 --box 64 --pixel-size 1.5 --snr 0.1 --sigma-vel 0.8
        --drift 15 --seed 1]
"""
import argparse
import json
import logging
import os
import time

import numpy as np

from polishplugin.core.dose.weights import weight_maps
from polishplugin.io.mrc import write_mrc
from polishplugin.io.polish_inputs import load_polish_inputs
from polishplugin.io.star import read_particles_star, write_particles_star
from polishplugin.programs import bfactors, polish, reconstruct, simulate


def variant_stacks(work, sim, inputs, tracks_of, weights, name):
    """Stacks of one variant made by the shiny recombination with the given tracks and weights;
    returns the particles STAR written for them."""
    out = os.path.join(work, name)
    names = [None] * len(inputs.particles)
    for mic in inputs.micrographs:
        origins = np.stack([np.asarray(inputs.particles[k], float)[mic.index] for k in
                            ("rlnOriginXAngst", "rlnOriginYAngst")], axis=1) / inputs.pixel_size
        tracks, sign = tracks_of(mic)
        imgs = bfactors.shiny_micrograph(mic, tracks, weights, 0, sign, inputs.box, inputs.box,
                                         origins, None)
        path = bfactors.shiny_path(out, mic.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_mrc(path, imgs.astype(np.float32), inputs.pixel_size, stack=True)
        for i, row in enumerate(mic.index):
            names[row] = "%06d@%s" % (i + 1, path)
    parts = inputs.particles.copy()
    parts["rlnImageName"] = np.asarray(names, dtype=object)
    star = os.path.join(out, "particles.star")
    write_particles_star(star, inputs.optics, parts)
    return star


def recon(star, root, out, sim):
    return reconstruct.run(reconstruct.build_parser().parse_args(
        ["--particles", star, "--root", root, "--out", out, "--mask",
         simulate.project_files(sim)["mask"], "--truth", os.path.join(sim, "truth", "volume.mrc"),
         "--no-figures"]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--micrographs", type=int, default=4)
    p.add_argument("--size", type=int, default=768)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--particles", type=int, default=40)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--pixel-size", type=float, default=1.5)
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--sigma-vel", type=float, default=0.8)
    p.add_argument("--drift", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()
    work = os.path.abspath(a.work)
    sim, pol, bf = (os.path.join(work, d) for d in ("sim", "pol", "bf"))
    simulate.main(["--out", sim, "--micrographs", str(a.micrographs), "--mic-size", str(a.size),
                   "--frames", str(a.frames), "--particles", str(a.particles), "--box",
                   str(a.box), "--pixel-size", str(a.pixel_size), "--snr", str(a.snr),
                   "--sigma-vel", str(a.sigma_vel), "--drift", str(a.drift), "--seed",
                   str(a.seed), "--no-figures"])
    files = simulate.project_files(sim)
    common = ["--particles", files["particles"], "--mics", files["mics"], "--postprocess",
              files["postprocess"], "--root", sim]
    t1 = time.time()
    assert polish.main(common + ["--out", pol, "--sigma-vel", str(a.sigma_vel),
                                 "--no-figures"]) == 0
    t2 = time.time()
    assert bfactors.main(common + ["--polish", pol, "--out", bf]) == 0
    t3 = time.time()

    inputs = load_polish_inputs(*common[1:6:2], root=sim)
    info = json.load(open(os.path.join(bf, "bfactors.json")))
    n, px, F = inputs.box, inputs.pixel_size, a.frames
    patch = n + 2 * max(8, n // 8)
    fitted = weight_maps(info["bfactors_A2"], info["scales"], patch, px, dtype=np.float64)
    uniform = np.full((F, patch, patch), 1.0 / F)

    def polished(mic):
        tracks, diag = bfactors.polished(pol, mic)
        return tracks, diag["sign"]

    def global_(mic):
        return mic.initial_tracks, -1

    def true_(mic):
        stem = os.path.splitext(os.path.basename(mic.name))[0]
        with np.load(os.path.join(sim, "truth", stem + ".npz")) as z:
            return z["positions"] - z["centres"][:, None], -1

    def none_(mic):
        return np.zeros((len(mic.centres), F, 2)), -1

    rows = [("(a) no alignment, plain sum", variant_stacks(work, sim, inputs, none_, uniform, "a")),
            ("(b) global track, dose-weighted (Extract/)", files["particles"]),
            ("(c) shiny: MAP tracks + fitted B weights", os.path.join(bf, "particles.star")),
            ("(d) global track + fitted B weights",
             variant_stacks(work, sim, inputs, global_, fitted, "d")),
            ("(e) MAP tracks, uniform weights",
             variant_stacks(work, sim, inputs, polished, uniform, "e")),
            ("(f) TRUE tracks + fitted B weights",
             variant_stacks(work, sim, inputs, true_, fitted, "f"))]
    print("\n| particles | half-map FSC 0.143 (A) | FSC vs truth 0.5 (A) |\n|---|---|---|")
    results = {}
    for label, star in rows:
        r = recon(star, sim, os.path.join(work, "rec_" + label[1]), sim)
        results[label] = r
        print("| %s | %.2f | %.2f |" % (label, r["resolution_0143"], r["resolution_truth_05"]))
    _, parts = read_particles_star(files["particles"])
    truth = json.load(open(os.path.join(sim, "truth", "truth.json")))
    print("\n%d micrographs x %d particles (%d), %d frames, box %d at %.2f A/px, SNR %g, "
          "sigma_vel %g, drift %g A; reference half maps FSC 0.143 at %.2f A"
          % (a.micrographs, a.particles, len(parts), F, n, px, a.snr, a.sigma_vel, a.drift,
             truth["half_map_fsc_0143_A"]))
    print("fitted B_f (A^2): %s" % np.array2string(np.asarray(info["bfactors_A2"]), precision=1))
    print("fitted C_f:       %s" % np.array2string(np.asarray(info["scales"]), precision=2))
    print("time: simulate %.0f s, polish %.0f s, bfactors %.0f s, total %.0f s"
          % (t1 - t0, t2 - t1, t3 - t2, time.time() - t0))
    c, others = rows[2][0], (rows[0][0], rows[1][0])
    for key in ("resolution_0143", "resolution_truth_05"):
        worse = [o for o in others if results[c][key] >= results[o][key]]
        print("%s: (c) %s" % (key, "beats (a) and (b)" if not worse else
                              "does NOT beat " + ", ".join(worse)))


if __name__ == "__main__":
    main()
