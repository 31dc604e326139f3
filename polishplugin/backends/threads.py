"""A backend's per-particle kernels of polishing run over blocks of particles in threads.

The numpy and numba backends' ``cc_windows``, ``power_sums`` and ``fcc_pixel_sums`` loop over
particles with numpy (matrix products and element-wise work that release the GIL; numba's FCC
sums are a serial kernel without the GIL); each particle
is independent (CC windows) or adds to a sum over particles (power, FCC numerator), so blocks of
particles in ``workers`` threads give the same numbers (sums in another order: equal to
rounding).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class ParticleThreads:
    """``backend`` with its per-particle polishing kernels split over ``workers`` threads; every
    other attribute is the backend's."""

    def __init__(self, backend, workers):
        self._be = backend
        self.workers = int(workers)
        self.NAME = backend.NAME

    def __getattr__(self, name):
        return getattr(self._be, name)

    def _map(self, func, P):
        edges = np.linspace(0, P, min(self.workers, P) + 1).astype(int)
        blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
        if len(blocks) < 2:
            return [func(slice(0, P))]
        with ThreadPoolExecutor(len(blocks)) as ex:
            return list(ex.map(func, blocks))

    def cc_windows(self, spectra, weights, damage, ey, ex):
        parts = self._map(lambda s: self._be.cc_windows(spectra[s], weights[s], damage, ey, ex),
                          len(weights))
        return np.concatenate(parts, axis=0)

    def power_sums(self, spectra):
        return sum(self._map(lambda s: self._be.power_sums(spectra[s]), spectra.shape[0]))

    def fcc_pixel_sums(self, spectra, predictions, ey, ex):
        return sum(self._map(lambda s: self._be.fcc_pixel_sums(spectra[s], predictions[s], ey[s],
                                                               ex[s]), spectra.shape[0]))


def particle_threads(backend, workers):
    """``backend`` itself for one worker or a device backend (OpenCL), else a
    :class:`ParticleThreads` of it."""
    if workers is None or workers <= 1 or backend.NAME not in ("numpy", "numba"):
        return backend
    return ParticleThreads(backend, workers)
