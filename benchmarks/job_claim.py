"""Cost of claiming an output folder (programs/jobdir.py) at the paper's sizes: the content
digests of two half maps and a mask of --box^3 voxels and of a particles STAR of --particles
rows, the lock and the settings record. Paid once per run, before any movie is read.

    python benchmarks/job_claim.py [--box 360] [--particles 25000]
"""
import argparse
import os
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from polishplugin.io.star import StarTable, write_particles_star
from polishplugin.programs.jobdir import claim_output, input_digests
from polishplugin.programs.parallel import _Serial


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--box", type=int, default=360)
    p.add_argument("--particles", type=int, default=25000)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    maps = [rng.standard_normal((a.box,) * 3).astype(np.float32) for _ in range(3)]
    with tempfile.TemporaryDirectory() as d:
        star = os.path.join(d, "particles.star")
        n = a.particles
        write_particles_star(star, StarTable({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
                             StarTable({"rlnCoordinateX": rng.random(n) * 4000,
                                        "rlnCoordinateY": rng.random(n) * 4000,
                                        "rlnAngleRot": rng.random(n) * 360,
                                        "rlnOpticsGroup": np.ones(n, dtype=int)}))
        args = SimpleNamespace(particles=star, mics=None)
        inputs = SimpleNamespace(half1=maps[0], half2=maps[1], mask=maps[2], resolution=3.0)
        t0 = time.perf_counter()
        settings = {"inputs": input_digests(args, inputs)}
        t1 = time.perf_counter()
        with claim_output(_Serial(), os.path.join(d, "out"), "bench", settings, [star], ()):
            t2 = time.perf_counter()
    print("| box | particles | digests (s) | lock + record (s) |")
    print("|---|---|---|---|")
    print("| %d | %d | %.2f | %.3f |" % (a.box, n, t1 - t0, t2 - t1))


if __name__ == "__main__":
    main()
