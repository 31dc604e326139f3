"""Training composed as the program will (§2.2 of Zivanov 2019), on a tiny simulated problem.

Micrographs of particles whose frames are a smooth 'prediction' shifted along known tracks plus
Gaussian noise; the tracks follow the Gaussian-process prior of the paper (velocities correlated
between particles as exp(-d / sigma_div)). The aligner is a stand-in written here: per-frame
phase correlation on the alignment circle, then the MAP smoothing of those raw positions under
the GP prior with the triplet's sigmas (in px per frame / px).
"""
import numpy as np
import pytest

from polishplugin.core import fourier
from polishplugin.core.motion.tcc import (EvalRingData, alignment_circle_mask, estimate_memory,
                                          split_threshold)
from polishplugin.core.motion.training import (choose_subset, make_tcc_objective, train_sigmas)

N, F, K_MAX = 32, 12, 13.0
TRUE = (0.8, 300.0, -1.0)       # sigma_vel px/frame, sigma_div px, no acceleration term
RAW_SIGMA = 0.4                 # px, assumed error of a raw per-frame position
NOISE = 7.0                     # noise std / signal std in real space
WINDOW = 8.0                    # px, largest shift searched by the raw alignment


def _velocity_cov(pos, s_vel, s_div):
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    return s_vel ** 2 * np.exp(-d / s_div)


def _simulate(rng, n_particles):
    ky, kx = fourier.freq_grid(N, N)
    env = np.exp(-(kx ** 2 + ky ** 2) / (2 * 0.3 ** 2))
    own = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n_particles, N, N))) * env).real
    other = own + 0.3 * np.fft.ifft2(np.fft.fft2(rng.normal(size=own.shape)) * env).real
    pos = rng.uniform(0, 400, size=(n_particles, 2))
    cov = _velocity_cov(pos, TRUE[0], TRUE[1]) + 1e-9 * np.eye(n_particles)
    vel = np.linalg.cholesky(cov) @ rng.normal(size=(n_particles, (F - 1) * 2))
    vel = vel.reshape(n_particles, F - 1, 2)
    tracks = np.concatenate([np.zeros((n_particles, 1, 2)), np.cumsum(vel, axis=1)], axis=1)
    tracks += rng.uniform(-1, 1, size=(n_particles, 1, 2))
    frames = np.array([[fourier.fourier_shift(own[p], *tracks[p, f]) for f in range(F)]
                       for p in range(n_particles)])
    frames += rng.normal(scale=NOISE * own.std(), size=frames.shape)
    return dict(obs=np.fft.fft2(frames), own=np.fft.fft2(own), other=np.fft.fft2(other),
                pos=pos, tracks=tracks)


def _peak(c, centre, radius):
    """Position (x, y) of the maximum of a periodic CC map c within ``radius`` px of ``centre``,
    refined by a parabola through the neighbours along x and y."""
    y, x = np.mgrid[:N, :N]
    dy = (y - centre[1] + N / 2) % N - N / 2
    dx = (x - centre[0] + N / 2) % N - N / 2
    iy, ix = np.unravel_index(np.argmax(np.where(np.hypot(dx, dy) <= radius, c, -np.inf)), c.shape)
    sub = []
    for line, i in ((c[iy, :], ix), (c[:, ix], iy)):
        lo, mid, hi = line[(i - 1) % N], line[i], line[(i + 1) % N]
        sub.append(i + 0.5 * (lo - hi) / (lo - 2 * mid + hi))
    return (np.array(sub) + N / 2) % N - N / 2


def _raw_positions(obs, pred, t_align):
    """Per-frame phase correlation on the alignment circle: each particle's CC peak within
    WINDOW px of the origin."""
    circle = alignment_circle_mask(N, t_align)
    cc = np.fft.ifft2(obs * np.conj(pred)[:, None] * circle).real
    return np.array([[_peak(c, (0.0, 0.0), WINDOW) for c in per_particle] for per_particle in cc])


def _map_tracks(raw, pos, triplet, iterations=8):
    """MAP tracks under the GP prior given raw positions with Gaussian errors RAW_SIGMA,
    made robust to wrong CC peaks by iterative reweighting (Huber, 2 RAW_SIGMA):
    argmin sum w |s - raw|^2 / RAW_SIGMA^2 + sum_f v_f^T K^-1 v_f (+ |a_f|^2 / s_acc^2)."""
    s_vel, s_div, s_acc = triplet
    p_ = raw.shape[0]
    kinv = np.linalg.inv(_velocity_cov(pos, s_vel, s_div) + 1e-9 * np.eye(p_))
    d1 = np.diff(np.eye(F), axis=0)
    prec = np.kron(d1.T @ d1, kinv)                  # frame-major ordering: index f * P + p
    if s_acc > 0:
        d2 = np.diff(np.eye(F), n=2, axis=0)
        prec += np.kron(d2.T @ d2, np.eye(p_)) / s_acc ** 2
    r = raw.transpose(1, 0, 2).reshape(F * p_, 2)
    w = np.ones(F * p_)
    for _ in range(iterations):
        s = np.linalg.solve(prec + np.diag(w) / RAW_SIGMA ** 2, w[:, None] * r / RAW_SIGMA ** 2)
        res = np.linalg.norm(s - r, axis=1)
        w = np.minimum(1.0, 2.0 * RAW_SIGMA / np.maximum(res, 1e-12))
    return s.reshape(F, p_, 2).transpose(1, 0, 2)


def _build(seed):
    rng = np.random.default_rng(seed)
    counts = {"m0": 10, "m1": 1, "m2": 10, "m3": 9, "m4": 10}
    chosen = choose_subset(counts, 25, rng=23)
    sims = [_simulate(rng, counts[m]) for m in chosen]
    t_align, t_eval = split_threshold(K_MAX)
    raws = [_raw_positions(s["obs"], s["own"], t_align) for s in sims]
    data = [EvalRingData.from_fourier(s["obs"], s["other"], t_eval, K_MAX) for s in sims]

    def align(m, triplet):
        return _map_tracks(raws[m], sims[m]["pos"], triplet)
    return dict(chosen=chosen, counts=counts, sims=sims, data=data, align=align, raws=raws,
                objective=make_tcc_objective(align, data))


@pytest.fixture(scope="module")
def problem():
    return _build(7)


def test_subset_and_memory(problem):
    assert "m1" not in problem["chosen"]
    n_p = sum(problem["counts"][m] for m in problem["chosen"])
    assert n_p >= 25
    t_eval = split_threshold(K_MAX)[1]
    ring_bytes = sum(d.nbytes for d in problem["data"])
    shared = 8 * problem["data"][0].n_pixels              # kx, ky of each micrograph
    cc_bytes = n_p * F * (2 * 9 * 9 + 8)                # 16-bit maps, scale and offset
    assert estimate_memory(n_p, F, N, t_eval, K_MAX, 9) == \
        ring_bytes - (len(problem["data"]) - 1) * shared + cc_bytes


def test_true_triplet_beats_far_triplets(problem):
    objective = problem["objective"]
    good = objective(TRUE)
    errs = [np.abs(problem["align"](m, TRUE) - s["tracks"]).mean()
            for m, s in enumerate(problem["sims"])]
    raw_errs = [np.abs(r - s["tracks"]).mean() for r, s in zip(problem["raws"], problem["sims"])]
    assert np.mean(errs) < np.mean(raw_errs)          # the prior helps the aligner
    for far in [(0.02, 300.0, -1.0), (50.0, 300.0, -1.0), (0.8, 1.0, -1.0), (0.8, 300.0, 0.01)]:
        assert objective(far) < good, far


def test_training_recovers_a_triplet_at_least_as_good_as_truth(problem):
    res = train_sigmas(problem["objective"], x0=(0.3, 100.0, -1.0), fit_acc=False, max_evals=40)
    assert res.tcc >= problem["objective"](TRUE) - 1e-4
    assert 0.8 / 3 < res.sigmas[0] < 0.8 * 3
