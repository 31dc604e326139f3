"""CPU time per call of the RED denoisers (identity, TV, U-Net with the shipped weights: the plain
network and its default 8-flip test-time average) on a noisy pseudo-protein at a few box sizes,
torch and numpy on --threads threads.

    python benchmarks/denoiser_speed.py --boxes 64 96 --repeats 3 --threads 1
"""
import argparse
import time

import numpy as np

from polishplugin.core.refine.denoisers import get_denoiser
from polishplugin.core.simulate.volumes import pseudo_protein


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--boxes", type=int, nargs="+", default=[64, 96])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print("| box | denoiser | CPU s per call (min of %d) | wall s |" % args.repeats)
    print("|---|---|---|---|")
    for n in args.boxes:
        x = pseudo_protein(n, 1.5, rng).astype(np.float64)
        x += rng.normal(0, x.std(), x.shape)
        for name, tta in (("identity", None), ("tv", None), ("unet", 1), ("unet", 8)):
            f = get_denoiser(name, tta=tta)
            name = name if tta is None else "%s, TTA %d" % (name, tta)
            f(x[:16, :16, :16])  # warm-up (weights, kernels)
            cpu, wall = [], []
            for _ in range(args.repeats):
                c, w = time.process_time(), time.perf_counter()
                f(x)
                cpu.append(time.process_time() - c)
                wall.append(time.perf_counter() - w)
            print("| %d | %s | %.3f | %.3f |" % (n, name, min(cpu), min(wall)))


if __name__ == "__main__":
    main()
