"""One expectation_step (E-step scores, posteriors, weighted back-projection of every significant
pose) timed in CPU seconds: box n, N images (projections of a pseudo-protein at the first N
orientations plus noise, SNR 1/9), O random orientations x 81 translations (every integer shift
within 5 px), sigma^-2 flat within n/2 - 1. Prints JSON (wall, cpu, significant poses, sum |B|).

Against the code before the refinement kernels (commit 378b3ce), same machine, one thread:

    git archive 378b3ce polishplugin | tar -x -C /tmp/old
    for pp in $PWD /tmp/old; do NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$pp \
        python benchmarks/refine_estep_pass.py 64 16 2304; done
"""
import json
import sys
import time

import numpy as np

from polishplugin.core.geometry import random_orientations
from polishplugin.core.projector import Projector
from polishplugin.core.reconstruct import Backprojector, centered_fft
from polishplugin.core.refine.iteration import expectation_step
from polishplugin.core.simulate.volumes import pseudo_protein

n, N, O = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
vol = pseudo_protein(n, 1.5, rng)
proj = Projector(vol)
angles = np.stack(random_orientations(O, rng), axis=1)
trans = np.array([(x, y) for y in range(-5, 6) for x in range(-5, 6) if x * x + y * y <= 25.0],
                 float)
clean = np.fft.ifft2(proj.project_many(angles[:N])).real
images = clean + rng.normal(0, 3 * clean.std(), clean.shape)
k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
inv_s2 = np.where(k * n <= n // 2 - 1, 1.0, 0.0) / (9 * clean.var() * n * n)
y = centered_fft(images)
bp = Backprojector(n, 2)
c0 = time.process_time(); t0 = time.perf_counter()
w, lm = expectation_step(bp, proj, y, None, inv_s2, angles, trans)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "significant": int(np.count_nonzero(w)),
                  "data_sum": float(np.abs(bp.data).sum())}))
