"""Memory per particle of motion-parameter training at the sizes of the paper's data sets
(Table 1 of Zivanov 2019), against RELION's > 60 GB for 25 000 particles (2.4 MB each).

What training keeps per particle (core/motion/tcc.py, train_data.py, compact.py): the
alignment-circle CC maps (F maps of W x W, 16-bit block floating point) and the evaluation ring,
T < |k| <= k_max, as the products w X V* in 8-bit block floating point (2 bytes per ring pixel
and frame). W = 2 w + 1 with w the training program's default CC radius (programs/cli.py
auto_window at the RELION start sigma_vel 0.6), or --window. For comparison, the float layout
(complex64 frames and prediction: 8 bytes per ring pixel and frame plus 8 per ring pixel;
float32 CC maps). The estimate equals the bytes of real arrays (tests/test_training_tcc.py);
one ribosome-sized particle is also built here and measured.

    python benchmarks/train_memory.py [--window 0]
"""
import argparse

import numpy as np

from polishplugin.core.motion.compact import block_bytes, quantise
from polishplugin.core.motion.tcc import (EvalRingData, bytes_per_particle, ring_pixel_count,
                                          split_threshold)
from polishplugin.core.motion.training import RELION_START
from polishplugin.core.motion.units import MotionParams
from polishplugin.programs.cli import auto_window

#: name, box (px), pixel size (A), frames, dose per frame (e/A^2), k_out (A): Table 1 of the
#: paper, k_out as RELION's default (the FSC 0.143 resolution of the refinement).
DATASETS = (("ribosome", 360, 1.34, 16, 1.0, 3.2),
            ("beta-galactosidase", 384, 0.637, 38, 1.18, 3.0),
            ("gamma-secretase", 180, 1.40, 20, 2.0, 4.2))
RELION_BYTES = 60e9 / 25000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--window", type=int, default=0, help="CC radius (px); 0: the program's")
    args = p.parse_args(argv)
    print("| data set | box | frames | ring pixels | CC radius (px) | float layout (MB) | "
          "compact (MB) | compact / RELION's 2.4 MB | ring share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, box, px, frames, dose, res in DATASETS:
        sv_px = MotionParams(*RELION_START).to_pixels(dose, px)[0]
        radius = args.window or auto_window(sv_px, frames, box)
        w = 2 * radius + 1
        k_max = min(box // 2, box * px / res)
        t_eval = split_threshold(k_max)[1]
        m = ring_pixel_count(box, t_eval, k_max)
        old = 8 * m * (frames + 1) + 4 * frames * w * w
        new = bytes_per_particle(frames, box, t_eval, k_max, w)
        ring = frames * block_bytes(2 * m, 8)
        print("| %s | %d | %d | %d | %d | %.2f | %.2f | %.3f | %.2f |" % (
            name, box, frames, m, radius, old / 1e6, new / 1e6, new / RELION_BYTES, ring / new))
    name, box, px, frames, dose, res = DATASETS[0]
    k_max = box * px / res
    t_eval = split_threshold(k_max)[1]
    radius = args.window or auto_window(MotionParams(*RELION_START).to_pixels(dose, px)[0],
                                        frames, box)
    w = 2 * radius + 1
    rng = np.random.default_rng(0)
    obs = np.fft.fft2(rng.normal(size=(1, frames, box, box)).astype(np.float32))
    pred = np.fft.fft2(rng.normal(size=(1, box, box)).astype(np.float32))
    d = EvalRingData.from_fourier(obs, pred, t_eval, k_max)
    cc = quantise(rng.normal(size=(1, frames, w, w)), 16, block_ndim=2)
    measured = d.nbytes - d.kx.nbytes - d.ky.nbytes + cc.nbytes
    print("\nmeasured, one %s particle: %.3f MB (estimate %.3f MB)"
          % (name, measured / 1e6, bytes_per_particle(frames, box, t_eval, k_max, w) / 1e6))


if __name__ == "__main__":
    main()
