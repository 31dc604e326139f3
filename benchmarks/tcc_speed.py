"""Speed of the TCC numerator (eq. 19 of Zivanov 2019), the inner loop of motion-parameter
training, per backend, on evaluation rings of the paper's data sets (Table 1; ring as in
benchmarks/train_memory.py), 8-bit stored products, random tracks. Both backends run in this
one process, so their ratio is measured on the same machine at the same moment.

    python benchmarks/tcc_speed.py [--particles 24] [--repeats 3]
"""
import argparse
import time

import numpy as np

from polishplugin.backends import get_backend
from polishplugin.core.motion.compact import quantise
from polishplugin.core.motion.tcc import _ring_pixels, _signed_freqs, split_threshold
from train_memory import DATASETS



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    import numba
    rng = np.random.default_rng(0)
    backends = [get_backend("numpy"), get_backend("numba")]
    print("| data set | ring pixels | particle-frames | numpy (ms) | numba, %d thread(s) (ms) | "
          "numpy / numba | ns per particle-frame-pixel (numba) |" % numba.get_num_threads())
    print("|---|---|---|---|---|---|---|")
    for name, box, px, frames, _, res in DATASETS:
        k_max = min(box // 2, box * px / res)
        idx = _ring_pixels(box, split_threshold(k_max)[1], k_max)[0]
        ky, kx = (k.ravel()[idx].astype(np.int32) for k in _signed_freqs(box))
        m = idx.size
        b = quantise(rng.normal(size=(a.particles, frames, m, 2)), 8, block_ndim=2)
        tracks = rng.normal(scale=2.0, size=(a.particles, frames, 2))
        times, values = [], []
        for be in backends:
            be.ring_correlation(b.q, b.scale, b.offset, kx, ky, tracks, box)   # compile / warm
            t0 = time.perf_counter()
            for _ in range(a.repeats):
                values.append(be.ring_correlation(b.q, b.scale, b.offset, kx, ky, tracks, box))
            times.append((time.perf_counter() - t0) / a.repeats)
        assert abs(values[0] - values[-1]) <= 1e-4 * (abs(values[0]) + 1.0) * np.sqrt(m)
        pf = a.particles * frames
        print("| %s | %d | %d | %.1f | %.1f | %.1f | %.2f |" % (
            name, m, pf, 1e3 * times[0], 1e3 * times[1], times[0] / times[1],
            1e9 * times[1] / (pf * m)))


if __name__ == "__main__":
    main()
