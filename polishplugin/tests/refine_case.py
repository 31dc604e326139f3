"""The tiny refinement case of the E-step and EM-pass tests: a 16^3 pseudo-protein at 3 A/px,
its projector, a few random orientations and translations, and images made at known poses."""
from types import SimpleNamespace

import numpy as np

from polishplugin.core.ctf import CtfParams, ctf_2d
from polishplugin.core.fourier import fourier_shift
from polishplugin.core.geometry import random_orientations
from polishplugin.core.projector import Projector
from polishplugin.core.simulate.volumes import pseudo_protein

N, PX = 16, 3.0


def tiny_case(seed, orientations, trans, poses, defoci=None, noise=0.02):
    """``orientations`` random orientations, translations ``trans`` (T, 2) px, and one image per
    pose: ``poses`` (orientation, translation) index pairs (orientation -1: pure noise of SD 1)
    or a number of random poses; image i is the projection at its pose times its CTF (defocus
    ``defoci[i]`` A, default uniform 8000-20000 A), shifted, plus Gaussian noise of SD
    ``noise``. Returns proj (numpy backend), angles (O, 3), trans, true_o, true_t, ctfs,
    images (n, N, N) and k (|k| of the fft2 grid, cycles per px)."""
    rng = np.random.default_rng(seed)
    proj = Projector(pseudo_protein(N, PX, rng), backend="numpy")
    angles = np.stack(random_orientations(orientations, rng), axis=1)
    trans = np.asarray(trans, dtype=np.float64)
    if np.ndim(poses) == 0:
        true_o = rng.integers(0, len(angles), poses)
        true_t = rng.integers(0, len(trans), poses)
    else:
        true_o, true_t = np.asarray(poses).T
    count = len(true_o)
    if defoci is None:
        defoci = rng.uniform(8e3, 2e4, count)
    ctfs = np.stack([ctf_2d(CtfParams(d, d, 0.0), N, PX) for d in defoci])
    images = np.empty((count, N, N))
    for i, (o, t) in enumerate(zip(true_o, true_t)):
        if o < 0:
            images[i] = rng.normal(0, 1.0, (N, N))
            continue
        clean = np.fft.ifft2(proj.project_many(angles[o:o + 1])[0] * ctfs[i]).real
        images[i] = fourier_shift(clean, *trans[t]) + rng.normal(0, noise, (N, N))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(N), np.fft.fftfreq(N), indexing="ij"))
    return SimpleNamespace(proj=proj, angles=angles, trans=trans, true_o=true_o, true_t=true_t,
                           ctfs=ctfs, images=images, k=k)


def loop_particles(seed, count, snr, n=24, px=5.0):
    """The refinement loop's tiny data set: an n^3 pseudo-protein at ``px`` A/px (generator
    ``seed``) and ``count`` particles simulated from it at ``snr``, with the CTFs of their
    defoci. Returns (truth, the simulation with its true poses, loop.Particles)."""
    from polishplugin.core.refine.loop import Particles
    from polishplugin.core.simulate.particles import simulate_particles
    rng = np.random.default_rng(seed)
    truth = pseudo_protein(n, px, rng)
    ps = simulate_particles(truth, count, px, snr, rng)
    ctfs = np.stack([ctf_2d(CtfParams(d, d, 0.0), n, px) for d in ps.defocus]).astype(np.float32)
    return truth, ps, Particles(ps.images, ctfs, ps.half_sets, px)
