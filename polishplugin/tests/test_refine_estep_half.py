"""The refinement engine's own E-step (core/refine/loop.py, estep_half: scores, posteriors with the
offset prior, significant poses, posterior-weighted back-projection of eq. 9) against brute force
on a tiny case: every pose's log-likelihood from a real-space prediction, the weights normalised
directly, B and K as the sum over poses of single back-projections. Global and local searches;
every backend gives the same pass."""
import numpy as np
import pytest

from polishplugin.backends import get_backend
from polishplugin.core.ctf import CtfParams, ctf_2d
from polishplugin.core.fourier import fourier_shift, ring_average, ring_index
from polishplugin.core.geometry import euler_to_matrix
from polishplugin.core.projector import Projector
from polishplugin.core.reconstruct import Backprojector, centered_fft
from polishplugin.core.refine import loop
from polishplugin.core.refine.mstep import backproject
from polishplugin.core.refine.sampling import (local_orientations, orientation_grid,
                                               translation_grid)
from polishplugin.core.simulate.volumes import pseudo_protein
from polishplugin.tests.opencl import OPENCL_REASON

N, PX, COUNT, ORDER = 16, 3.0, 6, 1
SIGMA2_OFFSET = 9.0            # A^2: a 1 px offset costs 0.5 in log prior


@pytest.fixture(scope="module")
def case():
    """Images made at poses of the order-1 grid, shifted by a start offset plus a grid
    translation, with CTF and noise; each particle's previous pose near its true one."""
    rng = np.random.default_rng(4)
    vol = pseudo_protein(N, PX, rng)
    grid, trans = orientation_grid(ORDER), translation_grid(1.0, 1.0)
    true_o = rng.integers(0, len(grid), COUNT)
    prev = rng.uniform(-1.5, 1.5, (COUNT, 2))
    true_shift = prev + trans[rng.integers(0, len(trans), COUNT)]
    ctfs = np.stack([ctf_2d(CtfParams(d, d, 0.0), N, PX) for d in rng.uniform(8e3, 2e4, COUNT)])
    proj = Projector(vol, pad=2, backend="numpy")
    clean = np.fft.ifft2(proj.project_many(grid[true_o]) * ctfs).real
    images = np.stack([fourier_shift(c, *s) for c, s in zip(clean, true_shift)])
    images += rng.normal(0, 0.5 * clean.std(), images.shape)
    parts = loop.Particles(images, ctfs, np.ones(COUNT, int), PX)
    # previous direction ~5 degrees off; previous psi a whole grid step (30 degrees) off or
    # exact, so that the local psi grid (through the previous psi) holds the true one
    angles = grid[true_o] + np.deg2rad(np.column_stack([rng.normal(0, 5.0, (COUNT, 2)),
                                                        30.0 * rng.integers(-1, 2, COUNT)]))
    return vol, parts, angles, prev, grid[true_o], true_shift


def _state(parts, angles, prev):
    return loop.State(iteration=1, refs=None, angles=angles.copy(), shifts=prev.copy(),
                      maxprob=np.zeros(COUNT), sigma2=None, order=ORDER, offset_range=1.0,
                      offset_step=1.0, current_size=N, sigma2_offset=SIGMA2_OFFSET)


def _inv_s2(sigma2):
    """sigma^-2 / 2 of a flat noise power over rings 1 .. N/2 - 1 (loop.inverse_sigma2)."""
    return loop.inverse_sigma2(np.full(N // 2 + 1, sigma2), N, N)


def _engine(case, local, scale, batch=16):
    vol, parts, angles, prev, _, _ = case
    st = loop.Settings(healpix_order=ORDER, local_order=ORDER if local else ORDER + 5,
                       local_steps=1.0, batch=batch, oversample=False)   # the grid's own poses
    bp = Backprojector(N, st.pad, r_max=N // 2 - 1)
    off2, noise = np.zeros(1), np.zeros(N // 2 + 1)
    got = loop.estep_half(vol, np.arange(COUNT), parts, _state(parts, angles, prev), st,
                          _inv_s2(scale), False, bp, off2, noise)
    return got, bp, off2[0], noise


def _brute(case, local, scale):
    """Per image: log-likelihood -sum s |y - c P_o e_(prev + t)|^2 of every pose from a real-space
    shifted prediction, plus the Gaussian offset prior; weights exp(ll - max) normalised,
    pruned below 1e-8 of the largest, then the engine's significance rule (loop.significant);
    B and K summed over the kept poses one back-projection at a time; the offsets' second moment
    over the whole posterior (before the significance rule); per ring, the mean over its pixels
    (the whole plane, within the back-projector's radius N/2 - 1, which cuts the outer ring) of
    sum_g w_g |y - c P_g e_g|^2, summed over the images."""
    vol, parts, angles, prev, _, _ = case
    inv_s2 = _inv_s2(scale)
    proj = Projector(vol, pad=2, backend="numpy")
    trans = translation_grid(1.0, 1.0)
    bp = Backprojector(N, 2, r_max=N // 2 - 1)
    best_a, best_s, maxprob, off2 = [], [], [], 0.0
    rings = np.where(np.hypot(*np.meshgrid(np.fft.fftfreq(N), np.fft.fftfreq(N))) * N
                     <= N // 2 - 1, ring_index(N), N)       # N: a ring ring_average drops
    noise = np.zeros(N // 2 + 1)
    for i in range(COUNT):
        oris = local_orientations(ORDER, angles[i], 1.0) if local else orientation_grid(ORDER)
        y = centered_fft(parts.images[i])
        p = np.fft.ifft2(proj.project_many(oris) * parts.ctfs[i]).real
        total = prev[i] + trans
        r2 = np.stack([np.abs(y - centered_fft(fourier_shift(p, *s))) ** 2 for s in total],
                      axis=1)                                               # (O, T, N, N)
        ll = -np.sum(inv_s2 * r2, axis=(2, 3))
        ll -= (total ** 2).sum(1) * PX ** 2 / (2 * SIGMA2_OFFSET)
        w = np.exp(ll - ll.max()).ravel()
        w /= w.sum()
        w[w < 1e-8 * w.max()] = 0.0
        full = w / w.sum()
        w = loop.significant(full[None])[0]
        best = int(w.argmax())
        best_a.append(oris[best // len(trans)])
        best_s.append(total[best % len(trans)])
        maxprob.append(w[best])
        off2 += float(full.reshape(-1, len(trans)).sum(0) @ (total ** 2).sum(1)) * PX ** 2
        noise += ring_average(np.tensordot(w, r2.reshape(-1, N, N), axes=1), rings, N // 2 + 1)
        for g in np.flatnonzero(w):
            o, t = divmod(g, len(trans))
            backproject(bp, centered_fft(parts.images[i:i + 1], total[t:t + 1]),
                        euler_to_matrix(*oris[o:o + 1].T), parts.ctfs[i:i + 1], inv_s2, w[g:g + 1])
    noise[0] = noise[N // 2:] = 0.0          # the rings the E-step scores: 1 .. N/2 - 1
    return (np.array(best_a), np.array(best_s), np.array(maxprob)), bp, off2, noise


SHARP, FLAT = 1.0, 250.0      # noise powers sigma^2: one pose per image / several weigh


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_sharp_posteriors_give_the_true_poses_and_their_backprojection(case, local):
    _, parts, _, prev, true_a, true_s = case
    (angles, shifts, maxprob), bp, _, _ = _engine(case, local, SHARP)
    np.testing.assert_allclose(angles, true_a, atol=1e-12)
    np.testing.assert_allclose(shifts, true_s, atol=1e-12)
    assert maxprob.min() > 0.999
    known = Backprojector(N, 2, r_max=N // 2 - 1)
    backproject(known, centered_fft(parts.images, true_s), euler_to_matrix(*true_a.T),
                parts.ctfs, _inv_s2(SHARP))
    np.testing.assert_allclose(bp.data, known.data, rtol=0, atol=1e-6 * np.abs(known.data).max())
    np.testing.assert_allclose(bp.weight, known.weight, rtol=0, atol=1e-6 * known.weight.max())


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_flat_posteriors_equal_brute_force(case, local):
    """B and K over every significant pose, one slice per orientation with its translations
    summed, equal the brute force's one back-projection per pose; in the global case some
    images have more than 100 significant poses, so a cap on their number (the engine had one)
    fails it."""
    (angles, shifts, maxprob), bp, off2, noise = _engine(case, local, FLAT)
    (b_angles, b_shifts, b_maxprob), ref, b_off2, b_noise = _brute(case, local, FLAT)
    assert maxprob.max() < 0.95 and maxprob.min() > 0.05     # several poses weigh
    np.testing.assert_allclose(angles, b_angles, atol=1e-12)
    np.testing.assert_allclose(shifts, b_shifts, atol=1e-12)
    # the brute force's real-space shifts round differently: weights agree to ~2e-8
    np.testing.assert_allclose(maxprob, b_maxprob, rtol=1e-6)
    assert off2 == pytest.approx(b_off2, rel=1e-6)
    np.testing.assert_allclose(bp.data, ref.data, rtol=0, atol=1e-6 * np.abs(ref.data).max())
    np.testing.assert_allclose(bp.weight, ref.weight, rtol=0, atol=1e-6 * ref.weight.max())
    # RELION's sigma^2 M-step: the posterior mean residual power per ring
    np.testing.assert_allclose(noise, b_noise, rtol=1e-6, atol=1e-9 * b_noise.max())


def test_offset_moment_is_the_whole_posteriors():
    """Blank images: every translation is equally likely, so the posterior over the offsets is
    the Gaussian prior on the translation grid around each previous offset, and the E-step's
    sum of w |o|^2 (RELION's sigma_o^2 update) is that prior's moment. The posterior is flat
    over some 5000 poses: a sum over only the most probable of them (offsets nearest the
    centre) gives a smaller sigma_o, and each iteration would shrink it further."""
    rng = np.random.default_rng(7)
    blank = loop.Particles(np.zeros((COUNT, N, N)), None, np.ones(COUNT, int), PX)
    prev = rng.uniform(-1.5, 1.5, (COUNT, 2))
    st = loop.Settings(healpix_order=ORDER, local_order=ORDER + 5, oversample=False)
    bp = Backprojector(N, st.pad, r_max=N // 2 - 1)
    off2 = np.zeros(1)
    vol = pseudo_protein(N, PX, rng)
    loop.estep_half(vol, np.arange(COUNT), blank, _state(blank, np.zeros((COUNT, 3)), prev), st,
                    _inv_s2(FLAT), False, bp, off2)
    trans = translation_grid(1.0, 1.0)
    expect = 0.0
    for p in prev:
        o2 = ((p + trans) ** 2).sum(1) * PX ** 2
        prior = np.exp(-o2 / (2 * SIGMA2_OFFSET))
        expect += float(prior @ o2 / prior.sum())
    assert off2[0] == pytest.approx(expect, rel=1e-7)


BACKENDS = ["numba"] + ([] if OPENCL_REASON else ["opencl"])


@pytest.mark.parametrize("name", BACKENDS)
def test_backends_give_the_same_pass(case, name, monkeypatch):
    """The whole pass (projection, scores, back-projection) under POLISHPLUGIN_BACKEND=numpy and
    another backend, the second with images scored in batches of 2."""
    from polishplugin.constants import BACKEND_VAR
    res = []
    for be, batch in (("numpy", 16), (name, 2)):
        monkeypatch.setenv(BACKEND_VAR, be)
        assert get_backend().NAME == be
        (a, s, p), bp, off2, noise = _engine(case, False, FLAT, batch)
        res.append((a, s, p, off2, noise, bp.data, bp.weight))
    for got, ref in zip(res[1], res[0]):
        np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
