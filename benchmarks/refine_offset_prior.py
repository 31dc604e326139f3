"""pp_refine with RELION's Gaussian offset prior (--sigma-offset 10, RELION's default) against the
uniform prior (--sigma-offset 0) on the same simulated project: half-map resolution, mean FSC of
the final map against the truth over 30-8 A, median angular and offset error against the true
poses, the final sigma of the prior, CPU.

    python benchmarks/refine_offset_prior.py --box 40 --particles 400 --snr 0.1 --iters 5 --out /tmp/rprior
"""
import argparse
import json
import os
import subprocess

import numpy as np

from _common import child_env, refine_command, refined_angles, write_project
from polishplugin.core.fourier import fsc
from polishplugin.core.refine.sampling import angular_distance
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import pseudo_protein
from polishplugin.io.mrc import read_mrc


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--box", type=int, default=40)
    p.add_argument("--pixel", type=float, default=3.0)
    p.add_argument("--particles", type=int, default=400)
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--max-origin", type=float, default=4.0, help="A, uniform true offsets")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rng = np.random.default_rng(8)
    truth = pseudo_protein(a.box, a.pixel, rng)
    ps = simulate_particles(truth, a.particles, a.pixel, a.snr, rng, max_origin_A=a.max_origin)
    write_project(a.out, truth, ps, a.pixel)
    env = child_env(one_thread=True)
    band = slice(int(a.box * a.pixel / 30.0) + 1, int(a.box * a.pixel / 8.0) + 1)
    print(json.dumps({"load_before": os.getloadavg()}))
    for sigma in ("10", "0"):
        name = "sigma%s" % sigma
        subprocess.run(refine_command("--mode", "tikhonov", "--max-iter", a.iters,
                                      "--healpix-order", "1", "--local-order", "3",
                                      "--max-order", "3", "--sigma-offset", sigma, "--fresh",
                                      "--out", name),
                       cwd=a.out, env=env, check=True, capture_output=True)
        summary = json.load(open(os.path.join(a.out, name, "refine.json")))
        final = read_mrc(os.path.join(a.out, name, "map.mrc"))[0]
        angles, parts = refined_angles(os.path.join(a.out, name, "particles.star"))
        origin = np.stack([np.asarray(parts[k], float) for k in
                           ("rlnOriginXAngst", "rlnOriginYAngst")], axis=1)
        print(json.dumps({
            "sigma_offset": float(sigma), "iterations": len(summary["iterations"]),
            "resolution_A": round(summary["resolution"], 2),
            "fsc_truth_30_8A": round(float(fsc(final, truth)[band].mean()), 3),
            "median_angular_error_deg": round(float(np.median(angular_distance(angles,
                                                                               ps.angles))), 2),
            "median_offset_error_A": round(float(np.median(np.hypot(*(origin
                                                                      - ps.origins_A).T))), 2),
            "final_sigma_offset_A": [round(r.get("sigma_offset_A", 0.0), 2)
                                     for r in summary["iterations"]][-1],
            "cpu_s": round(summary["cpu_s_total"], 1)}))
    print(json.dumps({"load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
