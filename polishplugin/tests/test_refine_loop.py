"""The auto-refinement engine (core/refine/sampling.py, loop.py) on tiny simulated cases with
known poses: the sampling grids, pose recovery by the global and the local E-step, and the
Tikhonov loop improving the map against the truth from a 30 A low-pass."""
import numpy as np
import pytest

from polishplugin.core.fourier import fsc
from polishplugin.core.refine import loop
from polishplugin.core.refine.sampling import (angular_distance, angular_step, direction_vectors,
                                               directions, local_orientations, next_order,
                                               orientation_grid, translation_grid)
from polishplugin.core.simulate.volumes import lowpass
from polishplugin.tests.refine_case import loop_particles

N, PX = 24, 5.0


def test_healpix_grid_sizes_and_spacing():
    for order in (0, 1, 2):
        grid = orientation_grid(order)
        assert len(grid) == 12 * 4 ** order * 6 * 2 ** order
        v = direction_vectors(*directions(order))
        cos = v @ v.T
        np.fill_diagonal(cos, -1.0)
        nearest = np.rad2deg(np.arccos(cos.max(axis=1)))
        # neighbouring directions lie about one angular step apart
        assert 0.5 * angular_step(order) < np.median(nearest) < 1.5 * angular_step(order)


def test_local_orientations_stay_near_the_previous_pose():
    prev = np.array([0.7, 1.1, -2.0])
    local = local_orientations(3, prev, steps=2.0)
    dist = angular_distance(local, np.broadcast_to(prev, local.shape))
    step = angular_step(3)
    assert len(local) > 20
    assert dist.max() < 2 * 2.0 * step + 1e-6       # direction and psi each within 2 steps
    assert dist.min() < step                         # a grid pose near the previous one


def test_translation_grid_and_angular_distance():
    t = translation_grid(2.0, 1.0)
    assert len(t) == 13 and np.all(np.hypot(*t.T) <= 2.0 + 1e-9)
    a = np.array([0.3, 0.9, 1.2])
    b = a + np.array([0.0, 0.0, np.deg2rad(10.0)])   # 10 degrees of psi
    assert angular_distance(a, b) == pytest.approx(10.0, abs=1e-6)
    assert angular_distance(a, a) == pytest.approx(0.0, abs=1e-4)


def test_order_goes_up_when_stalled_or_too_coarse():
    assert next_order(1, 4, stalled=True, resolution_A=30.0, radius_A=40.0) == 2
    assert next_order(1, 4, stalled=False, resolution_A=5.0, radius_A=40.0) == 2   # 30 > 7 deg
    assert next_order(2, 4, stalled=False, resolution_A=30.0, radius_A=40.0) == 2
    assert next_order(4, 4, stalled=True, resolution_A=5.0, radius_A=40.0) == 4


@pytest.fixture(scope="module")
def case():
    return loop_particles(0, 100, 1.0, N, PX)


def _errors(state, ps):
    return angular_distance(state.angles, ps.angles)


def test_global_estep_finds_the_true_poses(case):
    """One marginalising iteration against the truth at order 2 (15 degrees): the best pose of
    most particles lies within a grid step of the truth, the offsets within a pixel."""
    truth, ps, parts = case
    st = loop.Settings(healpix_order=2, local_order=5, ini_high=10.0)
    state = loop.initial_state(parts, truth, st)
    state.iteration = 1                       # past the CC iteration: marginalise
    new, record = loop.iterate(state, parts, st)
    err = _errors(new, ps)
    assert np.median(err) < angular_step(2)
    assert np.mean(err < 2 * angular_step(2)) > 0.85
    shift_err = np.hypot(*(new.shifts + ps.origins_A / PX).T)
    assert np.median(shift_err) < 0.75
    assert record["resolution"] < 15.0


def test_oversampled_global_search_lands_on_the_finer_grid(case):
    """Adaptive oversampling by one (RELION): the orientations of order 1 (30 degrees) that hold
    the posterior are rescored on their order-2 children, so the global search's poses are
    about twice as close to the truth as the order-1 grid's; the children lie around their
    parent, within the parent's grid cell."""
    from polishplugin.core.refine.sampling import finer_orientations
    coarse = orientation_grid(1)
    kids = finer_orientations(1, [7, 300])
    assert len(kids) == 16
    assert angular_distance(kids, np.repeat(coarse[[7, 300]], 8, axis=0)).max() < \
        0.6 * angular_step(1)
    truth, ps, parts = case
    errs = []
    for oversample in (False, True):
        st = loop.Settings(healpix_order=1, local_order=5, ini_high=10.0, oversample=oversample)
        state = loop.initial_state(parts, truth, st)
        state.iteration = 1                       # past the CC iteration: marginalise
        errs.append(np.median(_errors(loop.iterate(state, parts, st)[0], ps)))
    assert errs[1] < 0.7 * errs[0], errs
    assert errs[1] < 0.5 * angular_step(1)


def test_local_search_refines_perturbed_poses(case):
    """Local search at order 3 (7.5 degrees) around poses ~12 degrees off the truth brings them
    to about the grid step."""
    truth, ps, parts = case
    rng = np.random.default_rng(1)
    start = ps.angles + np.deg2rad(rng.normal(0.0, 8.0, ps.angles.shape))
    st = loop.Settings(healpix_order=3, local_order=3, ini_high=10.0)
    state = loop.initial_state(parts, truth, st, angles=start, shifts=-ps.origins_A / PX)
    state.iteration = 1
    new, record = loop.iterate(state, parts, st)
    assert record["local"]
    before, after = _errors(state, ps), _errors(new, ps)
    assert np.median(before) > 9.0
    assert np.median(after) < 0.6 * np.median(before)
    assert np.median(after) < angular_step(3)


def test_offset_prior_sigma_from_the_data_and_its_pull(case):
    """RELION's Gaussian offset prior: after the first (cross-correlation, hard-assignment)
    iteration sigma_o^2 is the mean |offset|^2 / 2 of the best poses (A^2). With the particles
    moved 2 px off the box centre, the next E-step under the uniform prior (sigma 0) finds them
    there, under a tiny sigma it keeps every offset at the centre."""
    truth, ps, parts = case
    moved = loop.Particles(np.roll(parts.images, 2, axis=-1), parts.ctfs, parts.half_sets, PX)
    base = dict(healpix_order=1, local_order=5, ini_high=15.0, max_iter=5)
    st = loop.Settings(**base)
    state = loop.initial_state(moved, truth, st)
    assert state.sigma2_offset == pytest.approx(100.0)          # RELION's --offset 10 A
    first, rec = loop.iterate(state, moved, st)
    expect = np.mean(np.sum((first.shifts * PX) ** 2, axis=1)) / 2
    assert expect > 0.5 * (2 * PX) ** 2 / 2
    assert first.sigma2_offset == pytest.approx(expect, rel=1e-9)
    assert rec["sigma_offset_A"] == pytest.approx(np.sqrt(expect), rel=1e-9)
    # the next (marginalising) iteration from the centre, under no and under a tiny prior
    first.shifts[:] = 0.0
    free, rec = loop.iterate(first, moved, loop.Settings(**dict(base, sigma_offset=0.0)))
    assert np.mean(np.abs(free.shifts[:, 0] - 2.0) <= 1.0) > 0.8
    assert free.sigma2_offset == 0.0 and rec["sigma_offset_A"] == 0.0
    first.sigma2_offset = 1e-6
    tight, _ = loop.iterate(first, moved, st)
    assert np.all(tight.shifts == 0.0)
    assert tight.sigma2_offset < 1e-3


def test_tikhonov_loop_improves_the_map_from_a_lowpassed_start(case):
    truth, ps, parts = case
    st = loop.Settings(max_iter=4, max_order=2, local_order=2)
    state = loop.initial_state(parts, truth, st)
    band = slice(int(N * PX / 30.0) + 1, int(N * PX / 12.0) + 1)     # 30 .. 12 A
    start = fsc(lowpass(truth, 30.0, PX), truth)[band].mean()
    final = loop.refine(parts, state, st)
    assert final.finished and len(final.history) == 4
    got = fsc(final.final_map, truth)[band].mean()
    assert got > start + 0.2, (start, got)
    assert final.history[-1]["resolution"] < 20.0
    assert all(r["cpu_s"] > 0 for r in final.history)


def test_cw_red_lambda_follows_the_resolution_and_changes_the_map(case):
    """One M-step under CW-RED (TV denoiser) with thresholds around the current resolution:
    lambda is the schedule's value at the recorded resolution, and the map differs from the
    Tikhonov map of the same iteration."""
    from polishplugin.core.refine.confidence import cw_red_lambda
    from polishplugin.core.refine.denoisers import get_denoiser
    truth, ps, parts = case
    base = dict(healpix_order=0, local_order=5, ini_high=15.0)
    tik = loop.Settings(**base)
    state = loop.initial_state(parts, truth, tik)
    cw = loop.Settings(mode="cw-red", denoiser=get_denoiser("tv"), cw_low=40.0, cw_high=8.0,
                       **base)
    a, rec_a = loop.iterate(state, parts, tik)
    b, rec_b = loop.iterate(state, parts, cw)
    assert rec_a["lambda"] == 0.0
    assert rec_b["resolution"] == pytest.approx(rec_a["resolution"])   # same E-step
    assert 0.0 < rec_b["lambda"] <= 1.0
    assert rec_b["lambda"] == pytest.approx(cw_red_lambda(rec_b["resolution"], 40.0, 8.0))
    diff = np.linalg.norm(b.refs - a.refs) / np.linalg.norm(a.refs)
    assert diff > 1e-3


def test_estep_back_projection_equals_the_shifted_images_at_the_chosen_poses(case):
    """The E-step's sums B and K (eq. 9) equal those of the images moved by their chosen offsets
    and back-projected at their chosen orientations (the CC iteration: one pose per image, weight
    1), with the CTF and sigma^-2; the images start off-centre so the shift ramps matter."""
    from polishplugin.core.geometry import euler_to_matrix
    from polishplugin.core.reconstruct import Backprojector, centered_fft
    from polishplugin.core.refine.mstep import backproject
    truth, ps, parts = case
    rng = np.random.default_rng(2)
    st = loop.Settings(healpix_order=0, ini_high=15.0)
    state = loop.initial_state(parts, truth, st, shifts=rng.uniform(-1.5, 1.5, (100, 2)))
    idx = np.flatnonzero(parts.half_sets == 1)
    n, m = N, state.current_size
    inv_s2 = loop.inverse_sigma2(state.sigma2, n, m)
    got = Backprojector(n, st.pad, r_max=min(n // 2 - 1, m // 2))
    angles, shifts, _ = loop.estep_half(truth, idx, parts, state, st, inv_s2, True, got)
    assert np.abs(shifts - state.shifts[idx]).max() > 0.5       # moved by the search too
    want = Backprojector(n, st.pad, r_max=min(n // 2 - 1, m // 2))
    backproject(want, centered_fft(parts.images[idx].astype(np.float64), shifts),
                euler_to_matrix(*angles.T), parts.ctfs[idx], inv_s2)
    scale = np.abs(want.data).max()
    assert scale > 0
    assert np.abs(got.data - want.data).max() < 1e-9 * scale
    assert np.abs(got.weight - want.weight).max() < 1e-9 * want.weight.max()


def test_global_searches_go_on_while_they_still_move_particles(case):
    """The step to local searches waits until the global search has settled: with many
    particles still jumping further than the first local search reaches (start far from the
    truth), the order stays global even though the resolution asks for finer sampling, and the
    run is not converged; once the jumps no longer fall (no fewer than 0.9 x the fewest so far at
    this order) the order goes up and the searches turn local."""
    truth, ps, parts = case
    rng = np.random.default_rng(3)
    st = loop.Settings(healpix_order=1, local_order=2, max_order=3, ini_high=15.0)
    start = ps.angles + np.deg2rad(rng.normal(0.0, 40.0, ps.angles.shape))
    state = loop.initial_state(parts, truth, st, angles=start, shifts=-ps.origins_A / PX)
    state.iteration, state.stall, state.best_resolution = 3, 2, 1e-3    # stalled: order up
    held, rec = loop.iterate(state, parts, st)
    reach = st.local_steps * angular_step(st.local_order)
    assert rec["jumps"] == int((angular_distance(start, held.angles) > reach).sum()) > 20
    assert held.order == 1 and not rec["converged"] and not held.final_pass
    assert held.fewest_jumps == rec["jumps"]
    state.fewest_jumps = 0.5 * rec["jumps"]       # fewer jumps before: settled, go local
    local, rec2 = loop.iterate(state, parts, st)
    assert rec2["jumps"] == rec["jumps"] and local.order == 2
    assert local.fewest_jumps == np.inf            # counted afresh at the new order


def test_convergence_adds_one_last_pass_at_the_full_size(case):
    """Converged (no progress for 2 iterations at the finest order): not finished yet, the next
    iteration runs at the full box with the same sampling and ends with a final map that holds
    the shells beyond the size refinement had reached."""
    truth, ps, parts = case
    st = loop.Settings(healpix_order=1, local_order=1, max_order=1, ini_high=15.0)
    state = loop.initial_state(parts, truth, st, angles=ps.angles, shifts=-ps.origins_A / PX)
    state.iteration, state.stall, state.best_resolution = 3, 2, 1e-3    # nothing can improve
    small = state.current_size = 12
    conv, rec = loop.iterate(state, parts, st)
    assert rec["converged"] and not conv.finished and conv.final_pass
    assert conv.current_size == N and conv.order == state.order
    assert conv.offset_step == state.offset_step
    last, rec2 = loop.iterate(conv, parts, st)
    assert last.finished and rec2["final_pass"] and rec2["converged"] and rec2["current_size"] == N
    c = fsc(last.final_map, truth)
    assert c[small // 2 + 1:small // 2 + 4].mean() > 0.4     # 0 without the full-size pass


def test_cw_shells_final_changes_only_the_final_map(case):
    """--cw-shells final: the references of the iteration are those of plain CW-RED and only the
    final map differs; --cw-shells all changes the references too."""
    from polishplugin.core.refine.denoisers import get_denoiser
    truth, ps, parts = case
    base = dict(mode="cw-red", denoiser=get_denoiser("tv"), cw_low=40.0, cw_high=8.0,
                healpix_order=0, local_order=5, ini_high=15.0, max_iter=1)
    state = loop.initial_state(parts, truth, loop.Settings(**base))
    plain, _ = loop.iterate(state, parts, loop.Settings(**base))
    final, rec = loop.iterate(state, parts, loop.Settings(cw_shells="final", **base))
    every, _ = loop.iterate(state, parts, loop.Settings(cw_shells="all", **base))
    assert rec["lambda"] > 0 and plain.finished and final.finished
    np.testing.assert_array_equal(final.refs, plain.refs)
    assert not np.allclose(final.final_map, plain.final_map)
    assert not np.allclose(every.refs, plain.refs)


def test_where_the_prior_mean_is_weighted_per_shell():
    """none: nowhere (eq. 17); all: every update; final: the joined map only; a misspelt
    setting is refused, not read as none."""
    from polishplugin.core.refine.confidence import weights_shells
    assert [weights_shells(w, j) for w in ("none", "all", "final") for j in (False, True)] == \
        [False, False, True, True, False, True]
    with pytest.raises(ValueError, match="not one of none, all, final"):
        weights_shells("", True)


def test_joined_map_tau2_from_relions_whole_set_fsc():
    """RELION's BackProjector::reconstruct for the map of both halves: the half-map FSC clamped
    at 0.001, then sqrt(2 FSC / (1 + FSC))."""
    from polishplugin.core.refine.mstep import joined_fsc
    got = joined_fsc(np.array([-0.3, 0.0, 0.5, 1.0]))
    np.testing.assert_allclose(got, [np.sqrt(0.002 / 1.001), np.sqrt(0.002 / 1.001),
                                     np.sqrt(2.0 / 3.0), 1.0], rtol=1e-12)


def test_joined_map_keeps_the_shells_beyond_the_half_map_resolution():
    """At low SNR the half-map FSC falls to ~0 while the truth still holds signal; the final
    (joined) map's tau^2 from RELION's whole-set FSC keeps it: truth FSC beyond the half maps'
    0.143 shell 0.05 (with the SSNR doubling 2 FSC / (1 + FSC) it was 0.02)."""
    truth, ps, parts = loop_particles(0, 100, 0.05, N, PX)
    st = loop.Settings(healpix_order=1, local_order=1, max_order=1, ini_high=15.0)
    state = loop.initial_state(parts, truth, st, angles=ps.angles, shifts=-ps.origins_A / PX)
    state.iteration, state.final_pass, state.current_size = 3, True, N
    last, _ = loop.iterate(state, parts, st)
    beyond = np.flatnonzero((np.arange(N // 2 + 1) > 2) & (last.fsc < 0.143))
    assert len(beyond) >= 3
    assert fsc(last.final_map, truth)[beyond].mean() > 0.035

