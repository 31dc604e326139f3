"""Subset choice, the sigma optimiser (§2.2 of Zivanov 2019), restarts and opt_params strings."""
import math

import numpy as np
import pytest

from polishplugin.core.motion import training
from polishplugin.core.motion.training import (choose_subset, flatness, format_opt_params,
                                               parse_opt_params, train_sigmas,
                                               train_with_restarts)

WIDTHS = np.array([0.6, 1.2, 0.9])   # log-space widths of the synthetic TCC bump


def bump(optimum, widths=WIDTHS, noise=0.0, seed=0, cross=0.3):
    """Smooth TCC-like bump in log-sigma space with its maximum 0.05 at ``optimum``."""
    rng = np.random.default_rng(seed)
    uo = np.log(optimum)

    def f(t):
        d = (np.log(np.asarray(t[:len(uo)], dtype=np.float64)) - uo) / widths[:len(uo)]
        q = d @ d + cross * d[0] * d[1]
        return 0.05 * math.exp(-0.5 * q) * (1.0 + noise * rng.normal())
    return f


def _rel_err(a, b):
    return np.max(np.abs(np.asarray(a, dtype=float) / np.asarray(b, dtype=float) - 1.0))


def test_choose_subset_is_random_reproducible_and_respects_min_particles():
    counts = {"mic%02d" % i: (i % 7) for i in range(40)}
    chosen = choose_subset(counts, 30, rng=23)
    assert sum(counts[m] for m in chosen) >= 30
    assert all(counts[m] >= 2 for m in chosen)
    assert sum(counts[m] for m in chosen[:-1]) < 30          # stops as soon as it has enough
    reordered = dict(reversed(list(counts.items())))
    assert choose_subset(reordered, 30, rng=23) == chosen
    assert choose_subset(counts, 30, rng=24) != chosen
    budget = choose_subset(counts, 30, rng=23, max_bytes=20 * 100, bytes_per_particle=100)
    assert sum(counts[m] for m in budget) <= 20
    everything = choose_subset(counts, 10 ** 6, rng=1)
    assert sorted(everything) == sorted(m for m, c in counts.items() if c >= 2)


@pytest.mark.parametrize("kwargs", [{}, {"quadratic_step": False, "xatol": 0.02}])
def test_train_sigmas_finds_known_optimum(kwargs):
    optimum = (0.35, 2500.0, 1.4)
    calls = []
    noisy = bump(optimum, noise=1e-5)

    def objective(t):
        calls.append(tuple(t))
        return noisy(t)
    res = train_sigmas(objective, **kwargs)
    assert _rel_err(res.sigmas, optimum) < 0.05
    assert res.converged
    assert len(calls) == res.n_evals == len(res.trace) == len(set(calls))   # cache works
    assert res.tcc == max(v for _, v in res.trace)


def test_two_parameter_mode_keeps_acceleration_fixed_or_disabled():
    optimum = (1.1, 20000.0)
    for acc in (-1.0, 2.0):
        seen = set()

        def objective(t):
            seen.add(t[2])
            return bump(optimum)(t)
        res = train_sigmas(objective, x0=(0.6, 10000.0, acc), fit_acc=False)
        assert seen == {acc}
        assert res.sigmas[2] == acc
        assert _rel_err(res.sigmas[:2], optimum) < 0.05


def test_max_evals_caps_distinct_evaluations():
    res = train_sigmas(bump((0.35, 2500.0, 1.4)), max_evals=12)
    assert res.n_evals == 12 and not res.converged


def test_quadratic_step_recovers_exact_maximum_of_a_quadratic():
    rng = np.random.default_rng(5)
    u_opt = np.array([0.2, 8.0, -0.3])
    hess = -np.array([[2.0, 0.4, 0.0], [0.4, 1.0, 0.2], [0.0, 0.2, 3.0]])
    trace = []
    for _ in range(25):
        u = u_opt + rng.uniform(-0.2, 0.2, 3)
        trace.append((tuple(np.exp(u)), 1.0 + 0.5 * (u - u_opt) @ hess @ (u - u_opt)))
    u = training._quadratic_maximum(trace, 3)
    np.testing.assert_allclose(u, u_opt, atol=1e-8)


def test_flatness_matches_closed_form():
    optimum = (0.5, 4000.0, 2.0)
    drops = flatness(bump(optimum, cross=0.0), optimum)
    for i, name in enumerate(("sigma_vel", "sigma_div", "sigma_acc")):
        expected = [1 - math.exp(-0.5 * (math.log(f) / WIDTHS[i]) ** 2)
                    for f in training.FLATNESS_FACTORS]
        np.testing.assert_allclose(drops[name], expected, rtol=1e-9)


def test_restarts_report_per_restart_optima_and_spread():
    optima = {11: (0.3, 2000.0, 1.0), 12: (0.6, 4000.0, 1.5), 13: (0.45, 8000.0, 3.0)}
    summary = train_with_restarts(lambda seed: bump(optima[seed], cross=0.0), [11, 12, 13])
    found = np.array([r.sigmas for r in summary.results])
    for row, seed in zip(found, optima):
        assert _rel_err(row, optima[seed]) < 0.05
    np.testing.assert_allclose(summary.geo_mean, np.exp(np.log(found).mean(0)))
    np.testing.assert_allclose(summary.spread, found.max(0) / found.min(0))
    np.testing.assert_allclose(summary.spread, [2.0, 4.0, 3.0], rtol=0.1)
    for r in summary.results:                   # drops of a Gaussian bump: 1 - exp(-ln(f)^2/2w^2)
        expected = 1 - np.exp(-0.5 * (np.log(training.FLATNESS_FACTORS) / WIDTHS[0]) ** 2)
        np.testing.assert_allclose(r.flatness["sigma_vel"], expected, atol=0.01)
    assert "max/min" in summary.report()


def test_opt_params_round_trip_like_relion():
    assert format_opt_params((0.4035, 11865.0, 3.59)) == "0.4035 11865 3.59\n"
    assert format_opt_params((0.6, 5000.0, 0.0)) == "0.6 5000 -1\n"
    assert parse_opt_params("0.4035 11865 3.59\n") == (0.4035, 11865.0, 3.59)
    assert parse_opt_params("\n1.17 28650 -1\n") == (1.17, 28650.0, -1.0)
    t = (0.123456, 3210.5, 1.25)
    assert parse_opt_params(format_opt_params(t)) == t
    with pytest.raises(ValueError):
        parse_opt_params("0.5 5000")
