"""Particle images for refinement tests and benchmarks: projections of a known volume at random
orientations and sub-pixel origins, with the CTF and white Gaussian noise (Kimanius et al. 2021,
§3.1: images of a map projected at uniformly random directions with additive Gaussian noise;
SNR = per-pixel variance of the noiseless images over the noise variance)."""
from dataclasses import dataclass

import numpy as np

from ..ctf import CtfParams, ctf_2d
from ..fourier import shift_phase
from ..geometry import random_orientations
from ..projector import Projector


@dataclass
class ParticleSet:
    images: np.ndarray        # (N, n, n) float32
    angles: np.ndarray        # (N, 3) RELION rot, tilt, psi in radians
    origins_A: np.ndarray     # (N, 2) rlnOriginX/YAngst: particle centre = image centre - origin
    defocus: np.ndarray       # (N,) A, defocus U = V, angle 0
    half_sets: np.ndarray     # (N,) 1 or 2
    noise_sigma: float        # per-pixel standard deviation of the added noise


def simulate_particles(volume, count, pixel_size, snr, rng, max_origin_A=2.0,
                       defocus_range=(5000.0, 20000.0), ctf=True):
    """``count`` noisy CTF-modulated projections of ``volume`` (n^3) at ``snr``."""
    n = volume.shape[0]
    angles = np.stack(random_orientations(count, rng), axis=1)
    origins = rng.uniform(-max_origin_A, max_origin_A, (count, 2))
    defocus = rng.uniform(*defocus_range, count)
    proj = Projector(volume).project_many(angles)
    clean = np.empty((count, n, n), np.float32)
    for i in range(count):
        c = ctf_2d(CtfParams(defocus[i], defocus[i], 0.0), n, pixel_size) if ctf else 1.0
        s = -origins[i] / pixel_size
        clean[i] = np.fft.ifft2(proj[i] * c * shift_phase(n, n, s[0], s[1])).real
    sigma = float(np.sqrt(clean.var(axis=(1, 2)).mean() / snr))
    images = (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)
    half_sets = 1 + np.arange(count) % 2
    return ParticleSet(images, angles, origins, defocus, half_sets, sigma)
