"""Fixed cost of one streaming step: the polish program started for a single micrograph (Python
start, imports, reading and checking the inputs, half maps and projectors, numba cache load,
writing outputs), measured on a tiny simulated micrograph whose polishing itself is negligible.
Each run is a fresh subprocess, as ProtPolishStreaming starts one per micrograph.

    python benchmarks/stream_step_overhead.py [--runs 3]

Prints wall and CPU seconds (children's user + system) per run and their medians.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from polishplugin.programs.simulate import LAYOUT


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="stream_overhead_") as tmp:
        subprocess.run([py, "-m", "polishplugin.programs.simulate", "--out", "sim",
                        "--micrographs", "1", "--mic-size", "256", "--frames", "8",
                        "--particles", "2", "--box", "48", "--pixel-size", "1.5"],
                       cwd=tmp, check=True, capture_output=True)
        walls, cpus = [], []
        for i in range(args.runs + 1):  # the first run fills numba's cache: not counted
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            subprocess.run([py, "-m", "polishplugin.programs.polish", "--particles",
                            LAYOUT["particles"], "--mics", LAYOUT["mics"],
                            "--postprocess", LAYOUT["postprocess"], "--out", "out%d" % i,
                            "--threads", "1", "--no-figures"],
                           cwd=os.path.join(tmp, "sim"), check=True, capture_output=True)
            wall = time.time() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print("run %d: wall %.2f s, CPU %.2f s%s" % (i, wall, cpu,
                                                       " (cache warm-up)" if i == 0 else ""))
            if i:
                walls.append(wall)
                cpus.append(cpu)
    walls.sort()
    cpus.sort()
    print("median: wall %.2f s, CPU %.2f s per step" % (walls[len(walls) // 2],
                                                        cpus[len(cpus) // 2]))


if __name__ == "__main__":
    main()
