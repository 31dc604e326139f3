"""One E-step pass of the refinement engine (core/refine/loop.py, estep_half: scores, posteriors,
weighted back-projection of every significant pose) timed in CPU seconds: box n, N images
(projections of a pseudo-protein at the first N orientations of the grid plus noise, SNR 1/9),
the global HEALPix grid of order k (12 * 4^k * 6 * 2^k orientations; order 3: 36864) x 81
translations (every integer shift within 5 px), sigma^-2 flat within n/2 - 1. Prints JSON (wall,
cpu, orientations, sum |B|).

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/refine_estep_pass.py 64 16 2

(BENCHMARKS.md's numbers of this script's first version timed core/refine/iteration.py's
expectation_step, a second E-step used only by tests, since removed, on 2304 random
orientations.)
"""
import json
import sys
import time

import numpy as np

from polishplugin.core.projector import Projector
from polishplugin.core.reconstruct import Backprojector
from polishplugin.core.refine.loop import Particles, Settings, State, estep_half, inverse_sigma2
from polishplugin.core.refine.sampling import orientation_grid
from polishplugin.core.simulate.volumes import pseudo_protein

n, N, order = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
vol = pseudo_protein(n, 1.5, rng)
angles = orientation_grid(order)
clean = np.fft.ifft2(Projector(vol).project_many(angles[:N])).real
images = clean + rng.normal(0, 3 * clean.std(), clean.shape)
sigma2 = np.full(n // 2 + 1, 9 * clean.var() * n * n)       # E|noise|^2 per Fourier pixel
parts = Particles(images, None, np.ones(N, int), 1.5)
settings = Settings(healpix_order=order, local_order=order + 1, sigma_offset=0.0)
state = State(iteration=1, refs=None, angles=np.zeros((N, 3)), shifts=np.zeros((N, 2)),
              maxprob=np.zeros(N), sigma2=sigma2, order=order, offset_range=5.0,
              offset_step=1.0, current_size=n)
bp = Backprojector(n, settings.pad, r_max=n // 2 - 1)
c0 = time.process_time(); t0 = time.perf_counter()
estep_half(vol, np.arange(N), parts, state, settings, inverse_sigma2(sigma2, n, n), False, bp)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "orientations": len(angles), "data_sum": float(np.abs(bp.data).sum())}))
