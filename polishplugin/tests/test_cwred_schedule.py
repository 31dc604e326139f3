"""CW-RED's lambda schedule derived from a denoiser's single-pass gain (core/refine/confidence.py,
derive_thresholds; Kimanius et al. 2021 §4.3), and the U-Net's defaults being the derived ones."""
import argparse
import json
import os

import numpy as np
import pytest

from polishplugin.core.refine import confidence
from polishplugin.core.refine.confidence import (LOW_A, HIGH_A, THRESHOLDS, cw_red_lambda,
                                                 derive_thresholds, gain_curve, thresholds_for)
from polishplugin.programs.cli import add_prior_arguments, check_prior_arguments

CURVE = os.path.join(os.path.dirname(confidence.__file__), "weights", "unet_schedule.json")


def _maps(groups):
    """(resolutions, gains) from {bin's fine edge: [gains]}, maps spread inside each 1 A bin."""
    res, gain = [], []
    for edge, gs in groups.items():
        res += list(edge + np.linspace(0.1, 0.9, len(gs)))
        gain += gs
    return np.array(res), np.array(gain)


def test_curve_bins_means_and_errors():
    res, gain = _maps({5: [0.1, 0.2, 0.3, 0.4], 6: [0.5, -0.1, 0.2, 0.2], 9: [0.1]})
    curve = gain_curve(res, gain, 1.0, min_maps=4)
    assert [(c["high_A"], c["low_A"], c["n"]) for c in curve] == [(5, 6, 4), (6, 7, 4)]
    assert curve[0]["mean"] == pytest.approx(0.25)
    assert curve[0]["se"] == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 2)
    assert curve[1]["min"] == pytest.approx(-0.1) and curve[1]["positive"] == 3


def test_thresholds_from_a_curve():
    """5-7 A: every map gains; 7-8 A: the mean reliably positive, one map loses; 8-9 A: noise;
    9-10 A positive again but cut off by 8-9: lambda 0 at 8 A, 1 at 7 A."""
    res, gain = _maps({5: [0.30, 0.32, 0.28, 0.31], 6: [0.20, 0.22, 0.18, 0.21],
                       7: [0.15, 0.16, -0.01, 0.17, 0.14, 0.15],
                       8: [0.05, -0.06, 0.04, -0.05], 9: [0.2, 0.21, 0.19, 0.2]})
    assert derive_thresholds(res, gain) == (8.0, 7.0)
    # the losing map at 7-8 A made positive: lambda 1 from 8 A, so the ramp is the one bin 7-8
    gain[np.argmin(gain[:14])] = 0.16
    assert derive_thresholds(res, gain) == (8.0, 7.0)
    # the noisy bin made reliable: the run reaches 9-10 A
    gain[14:18] = [0.05, 0.06, 0.05, 0.04]
    assert derive_thresholds(res, gain) == (10.0, 9.0)


def test_a_gap_or_a_losing_finest_bin():
    res, gain = _maps({5: [0.3, 0.31, 0.29, 0.3], 7: [0.2, 0.21, 0.19, 0.2]})
    assert derive_thresholds(res, gain) == (8.0, 7.0)        # no maps at 6-7 A: skipped
    res, gain = _maps({5: [0.3, 0.31, 0.29, 0.3], 6: [0.2, -0.2, 0.2, -0.2],
                       7: [0.2, 0.21, 0.19, 0.2]})
    assert derive_thresholds(res, gain) == (6.0, 5.0)        # a populated bin that fails stops it
    res, gain = _maps({5: [0.3, -0.31, 0.29, -0.3], 6: [0.2, 0.21, 0.19, 0.2]})
    with pytest.raises(ValueError, match="not reliably positive"):
        derive_thresholds(res, gain)
    res, gain = _maps({5: [0.3, 0.2, -0.01, 0.3], 6: [0.2, 0.21, 0.19, 0.2]})
    assert derive_thresholds(res, gain) == (7.0, 5.0)         # lambda 1 only at the finest edge


def test_unet_defaults_are_derived_from_the_shipped_curve():
    """The U-Net's thresholds are derive_thresholds of its calibration curve (the per-map gains
    of benchmarks/unet_schedule.py, kept beside the weights) under the rule's stated settings."""
    with open(CURVE) as fh:
        cal = json.load(fh)
    res = [m["resolution"] for m in cal["maps"]]
    gain = [m["gain"] for m in cal["maps"]]
    rule = cal["rule"]
    assert THRESHOLDS["unet"] == derive_thresholds(res, gain, rule["bin"], rule["min_maps"],
                                                   rule["z"])
    assert thresholds_for("tv") == thresholds_for("identity") == (LOW_A, HIGH_A) == (10.0, 4.5)


def _prior(argv):
    p = argparse.ArgumentParser()
    add_prior_arguments(p)
    args = p.parse_args(argv)
    check_prior_arguments(args, "test")
    return args


def test_programs_take_the_denoisers_thresholds_unless_given():
    args = _prior(["--mode", "cw-red", "--denoiser", "unet"])
    assert (args.cw_low, args.cw_high) == THRESHOLDS["unet"]
    args = _prior(["--mode", "cw-red", "--denoiser", "tv"])
    assert (args.cw_low, args.cw_high) == (10.0, 4.5)
    args = _prior(["--mode", "cw-red", "--denoiser", "unet", "--cw-low", "10", "--cw-high", "4.5"])
    assert (args.cw_low, args.cw_high) == (10.0, 4.5)               # the paper's, selectable
    low, high = THRESHOLDS["unet"]
    assert cw_red_lambda(low, low, high) == 0.0 and cw_red_lambda(high, low, high) == 1.0


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
