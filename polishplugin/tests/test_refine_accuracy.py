"""RELION's expected angular accuracy (core/refine/accuracy.py) against a brute-force sum of
the log-likelihood drop, and the sampling rule it drives in the refinement loop."""
import numpy as np
import pytest

from polishplugin.core.refine import accuracy, loop
from polishplugin.core.refine.sampling import angular_step
from polishplugin.tests.refine_case import loop_particles, tiny_case


def test_trial_angles_follow_relions_steps():
    a = accuracy.trial_angles()
    assert np.allclose(a[:5], [0.05, 0.1, 0.15, 0.2, 0.3])
    assert np.allclose(np.diff(a[(a > 1) & (a <= 2)]), 0.2)
    assert np.allclose(np.diff(a[(a >= 10) & (a <= 20)]), 2.0)
    assert a[-2] == 30.0 and a[-1] == 35.0          # the first value past 30 deg ends the search
    assert np.all(np.diff(a) > 0)


def _brute_force(case, pose, which, ctf, inv_s2):
    """The first trial angle whose noiseless log-likelihood drop, sum over the full grid of
    sigma^-2/2 |c (P_g - P_ga)|^2 written out per pixel, exceeds ln 100."""
    p0 = case.proj.project(*pose)
    for a in accuracy.trial_angles():
        turned = np.array(pose, float)
        turned[which] += np.deg2rad(a)
        d = ctf * (p0 - case.proj.project(*turned))
        if np.sum(inv_s2 * np.abs(d) ** 2) > np.log(100.0):
            return a
    return accuracy.trial_angles()[-1]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_angular_error_equals_the_brute_force_drop(which):
    case = tiny_case(4, 3, [[0.0, 0.0]], 1)
    n = case.proj.n
    ring = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")) * n
    inv_s2 = np.where((ring >= 1) & (ring < n // 2), 0.5 / 2e-3, 0.0)
    pose = case.angles[0]
    got = accuracy.angular_error_of(case.proj, pose, which, case.ctfs[0], inv_s2,
                                    accuracy.trial_angles())
    # the same sum on numpy's fft grid of uncentred projections (the centring phase drops out)
    want = _brute_force(case, pose, which, case.ctfs[0], inv_s2)
    assert got == want
    assert 0.05 < got < 35.0                        # neither the first nor the "cannot align" value


def test_accuracy_follows_the_noise_and_saturates_without_signal():
    case = tiny_case(5, 6, [[0.0, 0.0]], 6)
    n = case.proj.n
    ring = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")) * n
    use = (ring >= 1) & (ring < n // 2)
    which = [accuracy.turned_angle(i) for i in range(6)]
    poses = case.angles[case.true_o]
    acc = [accuracy.expected_accuracy(case.proj, poses, case.ctfs, np.where(use, s, 0.0),
                                      which) for s in (0.1, 1.0, 10.0)]
    assert acc[0] > acc[1] > acc[2]                 # less noise: finer poses are resolved
    # small angles: the drop grows as a^2, so 100 x less noise resolves ~10 x smaller angles
    assert 0.05 < acc[2] / acc[0] < 0.2
    none = accuracy.expected_accuracy(case.proj, poses, case.ctfs, np.zeros((n, n)), which)
    assert none == 35.0


def test_sampling_gets_no_finer_than_the_expected_accuracy(case_stalled, monkeypatch):
    """With RELION's stop (accuracy_stop 0.75) a stalled run goes to the next order unless the
    step it searches is already below 0.75 x the expected accuracy; then it stays and, stalled
    at that order, converges. Without it (the default) the order goes up either way."""
    truth, parts, st, state = case_stalled
    step = loop.searched_step(state.order, st)
    monkeypatch.setattr(loop, "_expected_accuracy", lambda *a, **k: 1e3)
    default, rec = loop.iterate(state, parts, st)         # off by default: the order goes up
    assert default.order == state.order + 1 and rec["accuracy_rot_deg"] == 1e3
    st = loop.Settings(**dict(st.record(), accuracy_stop=0.75))
    monkeypatch.setattr(loop, "_expected_accuracy", lambda *a, **k: step / 0.75 + 0.1)
    kept, rec = loop.iterate(state, parts, st)
    assert kept.order == state.order and rec["converged"]
    assert rec["accuracy_rot_deg"] == pytest.approx(step / 0.75 + 0.1)
    monkeypatch.setattr(loop, "_expected_accuracy", lambda *a, **k: step / 0.75 - 0.1)
    finer, rec = loop.iterate(state, parts, st)
    assert finer.order == state.order + 1 and not rec["converged"]


def test_searched_step_is_the_oversampled_one_in_global_searches():
    st = loop.Settings(local_order=3)
    assert loop.searched_step(2, st) == angular_step(3)
    assert loop.searched_step(3, st) == angular_step(3)
    assert loop.searched_step(2, loop.Settings(local_order=3, oversample=False)) == angular_step(2)


@pytest.fixture(scope="module")
def case_stalled():
    truth, ps, parts = loop_particles(0, 60, 1.0)
    st = loop.Settings(healpix_order=1, local_order=1, max_order=3, ini_high=15.0)
    state = loop.initial_state(parts, truth, st, angles=ps.angles,
                               shifts=-ps.origins_A / parts.pixel_size)
    state.iteration, state.stall, state.best_resolution = 3, 2, 1e-3    # nothing can improve
    return truth, parts, st, state


def test_orders_beyond_free_order_wait_for_the_accuracy(case_stalled, monkeypatch):
    """By default (accuracy_stop off) RELION's rule holds only for the orders beyond
    free_order: a stalled run at free_order stays there while its searched step is below 0.75 x
    the expected accuracy, and goes finer once the accuracy allows it."""
    truth, parts, st, state = case_stalled
    st = loop.Settings(**dict(st.record(), free_order=state.order))
    step = loop.searched_step(state.order, st)
    monkeypatch.setattr(loop, "_expected_accuracy", lambda *a, **k: step / 0.75 + 0.1)
    kept, rec = loop.iterate(state, parts, st)
    assert kept.order == state.order and rec["converged"]
    monkeypatch.setattr(loop, "_expected_accuracy", lambda *a, **k: step / 0.75 - 0.1)
    finer, _ = loop.iterate(state, parts, st)
    assert finer.order == state.order + 1
    # below free_order the same accuracy does not hold it (the order as the resolution asks)
    st = loop.Settings(**dict(st.record(), free_order=state.order + 1))
    monkeypatch.setattr(loop, "_expected_accuracy", lambda *a, **k: 1e3)
    free, _ = loop.iterate(state, parts, st)
    assert free.order == state.order + 1
