"""Peak memory and CPU of the GP basis alone (core/motion/prior.gp_basis, eq. 3-4) for P particles
spread uniformly over a 2048 px micrograph at the issue's true sigmas (0.5 A/dose, 5000 A at 1.2
A/px and 1.25 e/A^2 per frame), all dimensions (the dense dsyevd in place) or the K leading ones
(Lanczos, --max-ed K). One process per case (ru_maxrss only grows)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/gp_basis_memory.py 2040 -1
    OPENBLAS_NUM_THREADS=1 python benchmarks/gp_basis_memory.py 2040 50
"""
import resource
import sys
import time

import numpy as np

from polishplugin.core.motion import prior


def main():
    P, K = int(sys.argv[1]), int(sys.argv[2])
    pos = np.random.default_rng(0).uniform(0, 2048, (P, 2))
    sv, sd = 0.5 * 1.25 / 1.2, 5000.0 / 1.2                    # px per frame, px
    prior.gp_basis(pos[:40], sv, sd, max_dims=3)                # imports and numba cache loaded
    prior.leading_eigenpairs(pos[:40], sv, sd, 3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.process_time()
    b, lam = prior.gp_basis(pos, sv, sd, max_dims=None if K == -1 else K)
    cpu = time.process_time() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("P %d K %d: %d dimensions, basis CPU %.2f s, peak RSS %.1f MB (%.1f MB above the "
          "start), basis %.1f MB" % (P, K, b.shape[1], cpu, peak / 1e3, (peak - before) / 1e3,
                                     b.nbytes / 1e6))


if __name__ == "__main__":
    main()
