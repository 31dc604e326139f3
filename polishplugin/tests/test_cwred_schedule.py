"""CW-RED's lambda schedule derived from a denoiser's single-pass gain (core/refine/confidence.py,
derive_thresholds; Kimanius et al. 2021 §4.3), and the U-Net's defaults being the derived ones."""
import json
import os

import numpy as np
import pytest

from polishplugin.core.refine import confidence
from polishplugin.core.refine.confidence import (EDGES_A, LOW_A, HIGH_A, OPTIMISM_BOUND,
                                                 THRESHOLDS, derive_thresholds, gain_curve,
                                                 thresholds_for)

CURVE = os.path.join(os.path.dirname(confidence.__file__), "weights", "unet_schedule.json")


#: bins for the synthetic curves: 1 A from 4 to 12 A, 2 A coarser
E = tuple(np.r_[np.arange(4.0, 12.0, 1.0), np.arange(12.0, 32.0, 2.0)].tolist())


def _units(groups):
    """(resolutions, gains, optimism) from {bin's fine edge: [(gain, optimism)]}, units spread
    inside each bin of E."""
    edges = list(E)
    res, gain, opt = [], [], []
    for edge, units in groups.items():
        width = edges[edges.index(edge) + 1] - edge
        res += list(edge + width * np.linspace(0.1, 0.9, len(units)))
        gain += [u[0] for u in units]
        opt += [u[1] for u in units]
    return np.array(res), np.array(gain), np.array(opt)


def test_curve_bins_means_and_errors():
    res, gain, _ = _units({5: [(0.1, 0), (0.2, 0), (0.3, 0), (0.4, 0)],
                           14: [(0.5, 0), (-0.1, 0), (0.2, 0), (0.2, 0)], 9: [(0.1, 0)]})
    curve = gain_curve(res, gain, E, min_n=4)
    assert [(c["high_A"], c["low_A"], c["n"]) for c in curve] == [(5, 6, 4), (14, 16, 4)]
    assert curve[0]["mean"] == pytest.approx(0.25)
    assert curve[0]["se"] == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 2)
    assert curve[1]["min"] == pytest.approx(-0.1) and curve[1]["positive"] == 3
    assert curve[1]["max"] == pytest.approx(0.5)
    assert gain_curve([40.0, 41.0], [1.0, 1.0], E, 1) == []      # outside the edges


GOOD, SAFE = 0.05, 0.1          # a unit that gains, one shell of optimism would be 1.0


def test_thresholds_from_gain_and_optimism():
    """7-12 A: every unit gains, no optimism; 12-14 A: the mean gain reliably positive, one unit
    loses; 14-16 A: gains, but the denoiser makes the halves 2 shells optimistic: lambda 0 at 14 A,
    1 at 12 A."""
    ok = [(GOOD, SAFE), (GOOD + 0.01, 0.0), (GOOD - 0.01, -SAFE), (GOOD, SAFE)]
    groups = {7: ok, 8: ok, 9: ok, 10: ok, 11: ok,
              12: [(0.06, 0), (0.07, 0), (-0.01, 0), (0.06, 0), (0.07, 0), (0.06, 0)],
              14: [(0.1, 2.0), (0.1, 2.2), (0.1, 1.8), (0.1, 2.1)], 16: ok}
    res, gain, opt = _units(groups)
    assert derive_thresholds(res, gain, opt, E) == (14.0, 12.0)
    # without the optimism the run reaches 16-18 A: the gain alone would switch lambda on there
    opt14 = (res >= 14) & (res < 16)
    assert derive_thresholds(res, gain, np.where(opt14, 0.0, opt), E) == (18.0, 12.0)
    # the bound is a setting: 2.5 shells admits 14-16 A
    assert derive_thresholds(res, gain, opt, E, bound=2.5) == (18.0, 12.0)
    # the losing unit at 12-14 A made to gain: lambda 1 would reach 18 A, so one bin apart
    gain[np.argmin(gain)] = 0.06
    assert derive_thresholds(res, gain, np.where(opt14, 0.0, opt), E) == (18.0, 16.0)
    assert derive_thresholds(res, gain, opt, E) == (14.0, 12.0)


def test_optimism_on_average_or_in_one_unit():
    ok = [(GOOD, 0.0)] * 4
    # a bin whose mean optimism is within the bound but not reliably (one unit at 3 shells)
    res, gain, opt = _units({7: ok, 8: [(GOOD, 0.0), (GOOD, 0.0), (GOOD, 3.0), (GOOD, 0.0)], 9: ok})
    assert derive_thresholds(res, gain, opt, E) == (8.0, 7.0)
    # one unit at 1.5 shells in a bin that is safe on average: lambda > 0 there, not 1
    res, gain, opt = _units({7: ok, 8: [(GOOD, 0.0), (GOOD, 0.1), (GOOD, 1.5)] + [(GOOD, 0.0)] * 9,
                             9: ok})
    assert derive_thresholds(res, gain, opt, E) == (10.0, 8.0)


def test_a_gap_or_an_unsafe_finest_bin():
    ok = [(0.3, 0.0), (0.31, 0.1), (0.29, -0.1), (0.3, 0.0)]
    res, gain, opt = _units({5: ok, 7: ok})
    assert derive_thresholds(res, gain, opt, E) == (8.0, 7.0)        # no units at 6-7 A: skipped
    res, gain, opt = _units({5: ok, 6: [(0.2, 0), (-0.2, 0), (0.2, 0), (-0.2, 0)], 7: ok})
    assert derive_thresholds(res, gain, opt, E) == (6.0, 5.0)        # a populated bin that fails
    res, gain, opt = _units({5: [(0.3, 0), (-0.31, 0), (0.29, 0), (-0.3, 0)], 6: ok})
    with pytest.raises(ValueError, match="not safe to use"):
        derive_thresholds(res, gain, opt, E)
    res, gain, opt = _units({5: [(0.3, 2.0), (0.3, 2.1), (0.3, 1.9), (0.3, 2.0)], 6: ok})
    with pytest.raises(ValueError, match="not safe to use"):
        derive_thresholds(res, gain, opt, E)
    res, gain, opt = _units({5: [(0.3, 0), (0.2, 0), (-0.01, 0), (0.3, 0)], 6: ok})
    assert derive_thresholds(res, gain, opt, E) == (7.0, 5.0)    # lambda 1 only at the finest edge
    with pytest.raises(ValueError, match="one gain and one optimism"):
        derive_thresholds(res, gain, opt[:-1], E)


def test_unet_defaults_are_derived_from_the_shipped_curve():
    """The U-Net's thresholds are derive_thresholds of its calibration (the per-unit gains and
    optimism of benchmarks/unet_schedule.py, kept beside the weights) under the rule's stated
    settings, and those settings are the code's defaults."""
    with open(CURVE) as fh:
        cal = json.load(fh)
    res = [u["resolution"] for u in cal["units"]]
    gain = [u["gain"] for u in cal["units"]]
    opt = [u["optimism"] for u in cal["units"]]
    rule = cal["rule"]
    assert tuple(rule["edges"]) == EDGES_A and rule["bound"] == OPTIMISM_BOUND
    assert THRESHOLDS["unet"] == derive_thresholds(res, gain, opt, rule["edges"], rule["min_n"],
                                                   rule["z"], rule["bound"])
    assert (cal["low_A"], cal["high_A"]) == THRESHOLDS["unet"]
    assert thresholds_for("tv") == thresholds_for("identity") == (LOW_A, HIGH_A) == (10.0, 4.5)


def test_protocol_form_leaves_the_thresholds_to_the_denoiser():
    pytest.importorskip("pyworkflow")
    from polishplugin.core.refine.denoisers import DENOISERS
    from polishplugin.protocols.protocol_refine import ProtPolishRefine
    prot = ProtPolishRefine()
    prot.denoiser.set(DENOISERS.index("unet"))
    assert prot._cwThresholds() == THRESHOLDS["unet"]
    prot.denoiser.set(DENOISERS.index("tv"))
    assert prot._cwThresholds() == (10.0, 4.5)
    prot.cwLow.set(12.0)
    assert prot._cwThresholds() == (12.0, 4.5)


def _halves(rng, n=24, shared=0.0):
    """A smooth truth and two halves of it with independent white noise, plus ``shared`` x one
    common smooth map the truth does not have (false features in both halves)."""
    def smooth(v, width=1.5):
        k = np.fft.fftfreq(n)
        g = np.exp(-2 * (np.pi * width) ** 2 * (k[:, None, None] ** 2 + k[None, :, None] ** 2
                                                  + k[None, None, :] ** 2))
        return np.fft.ifftn(np.fft.fftn(v) * g).real
    truth = smooth(rng.standard_normal((n, n, n)))
    truth /= truth.std()
    fake = smooth(rng.standard_normal((n, n, n)), 0.8)
    fake /= fake.std()
    return truth, [truth + shared * fake + 0.7 * rng.standard_normal(truth.shape)
                   for _ in range(2)]


def test_optimism_zero_for_independent_halves_positive_for_shared_features():
    from polishplugin.core.refine.loop import sphere_mask
    from polishplugin.core.refine.unet_pairs import half_map_optimism
    rng = np.random.default_rng(5)
    mask = sphere_mask(24, 10)
    truth, (h1, h2) = _halves(rng)
    honest = half_map_optimism(h1, h2, truth, mask)
    truth, (s1, s2) = _halves(rng, shared=1.0)
    biased = half_map_optimism(s1, s2, truth, mask)
    assert abs(honest) < 0.6 and biased > honest + 1.5


def test_distance_ratio_at_the_references_scale():
    from polishplugin.core.refine.unet_pairs import distance_ratio
    rng = np.random.default_rng(6)
    truth = rng.standard_normal((8, 8, 8))
    mask = np.ones_like(truth)
    noisy = 3.0 * (truth + 0.5 * rng.standard_normal(truth.shape))   # another grey scale
    closer = 3.0 * (truth + 0.2 * rng.standard_normal(truth.shape))
    r2, r1 = distance_ratio([closer, noisy], noisy, truth, mask, 2), \
        distance_ratio([closer], noisy, truth, mask, 1)
    assert r2[1] == pytest.approx(1.0) and r2[0] < 0.6 and r1[0] < 0.6
    # the one scale is the reference's: a map at another grey scale is not rescaled for free
    assert distance_ratio([closer / 3.0], noisy, truth, mask)[0] > 1.0


def test_blend_and_optimism_stop_at_the_iterations_image_size():
    """As the loop's update (zero beyond current_size / 2) and FSC (cut there): f's content
    beyond the band is not part of the update, and the masked FSC there (the mask's correlation
    with itself) does not count as agreement."""
    from polishplugin.core.refine.loop import sphere_mask
    from polishplugin.core.refine.unet_pairs import half_map_optimism, red_blend
    rng = np.random.default_rng(7)
    n, size = 24, 12
    x, f = rng.standard_normal((n, n, n)), rng.standard_normal((n, n, n))
    curve = np.full(n // 2 + 1, 0.5)
    full, cut = red_blend(x, f, curve), red_blend(x, f, curve, 1.0, size)
    k = np.fft.fftfreq(n)
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) * n
    ff, fc = np.fft.fftn(full), np.fft.fftn(cut)
    assert np.allclose(fc[r < size / 2.0], ff[r < size / 2.0])
    assert np.abs(fc[r >= size / 2.0]).max() < 1e-9 < np.abs(ff[r >= size / 2.0]).max()
    truth, (h1, h2) = _halves(rng)
    shared = rng.standard_normal((n, n, n))          # the same content beyond the band in both
    high = np.fft.ifftn(np.where(r >= size / 2.0, np.fft.fftn(shared), 0)).real
    mask = sphere_mask(n, 10)
    assert half_map_optimism(h1 + high, h2 + high, truth, mask) > 2.0
    assert abs(half_map_optimism(h1 + high, h2 + high, truth, mask, current_size=size)) < 1.0
