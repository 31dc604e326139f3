"""pp_refine with one process against ``mpirun -np R`` on the same simulated project: wall time,
CPU of all processes (rusage of the children), the CPU the program records (summed over ranks),
and the largest difference between the two runs' maps (relative to the map's maximum) and angles.

    python benchmarks/refine_mpi.py --box 40 --particles 400 --ranks 2 --iters 3 --out /tmp/rmpi

Prints one JSON line per run and the comparison; the machine's load average before and after.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np

from _common import child_env, children_cpu, refine_command, write_project
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import pseudo_protein
from polishplugin.io.mrc import read_mrc
from polishplugin.io.star import read_particles_star


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--box", type=int, default=40)
    p.add_argument("--pixel", type=float, default=3.0)
    p.add_argument("--particles", type=int, default=400)
    p.add_argument("--snr", type=float, default=0.5)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--mode", default="cw-red")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rng = np.random.default_rng(5)
    truth = pseudo_protein(a.box, a.pixel, rng)
    write_project(a.out, truth, simulate_particles(truth, a.particles, a.pixel, a.snr, rng),
                  a.pixel)
    common = refine_command("--mode", a.mode, "--cw-low", "30", "--cw-high", "10", "--max-iter",
                            a.iters, "--healpix-order", "1", "--local-order", "3", "--max-order",
                            "3", "--fresh")
    env = child_env(one_thread=True, mpirun=True)
    print(json.dumps({"load_before": os.getloadavg()}))
    runs = {}
    for name, launcher in (("serial", []), ("mpi%d" % a.ranks,
                                             ["mpirun", "-np", str(a.ranks)])):
        cpu0, t0 = children_cpu(), time.perf_counter()
        subprocess.run(launcher + common + ["--out", name], cwd=a.out, env=env, check=True,
                       capture_output=True)
        wall = time.perf_counter() - t0
        cpu = children_cpu() - cpu0
        summary = json.load(open(os.path.join(a.out, name, "refine.json")))
        runs[name] = {"run": name, "wall_s": round(wall, 1), "cpu_s_children": round(cpu, 1),
                      "cpu_s_recorded": round(summary["cpu_s_total"], 1),
                      "wall_s_iterations": round(summary["wall_s_total"], 1),
                      "resolution_A": round(summary["resolution"], 2)}
        print(json.dumps(runs[name]))
    names = list(runs)
    diff = {}
    for f in ("map.mrc", "half1.mrc", "half2.mrc"):
        x, y = (read_mrc(os.path.join(a.out, k, f))[0] for k in names)
        diff[f] = float(np.abs(x - y).max() / np.abs(x).max())
    pa, pb = (read_particles_star(os.path.join(a.out, k, "particles.star"))[1] for k in names)
    diff["angles_deg"] = float(max(np.abs(np.asarray(pa[c], float) - np.asarray(pb[c], float)).max()
                                   for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")))
    print(json.dumps({"max_difference": diff, "load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
