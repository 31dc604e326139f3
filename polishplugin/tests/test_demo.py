"""The demo end to end at --size tiny, as a person runs it (``python -m polishplugin.programs.demo``
in a subprocess, into a temporary folder): every protocol of its Scipion project finished, every
figure written and not blank, the polished tracks closer to the truth than the initial global
ones, and the refined map closer to the true map than the 30 A low-pass it started from (checked
from the files, and the numbers the demo logs checked against them)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from polishplugin.core.fourier import fsc, resolution_at, shell_band
from polishplugin.core.simulate.volumes import lowpass
from polishplugin.io.mrc import read_mrc
from polishplugin.programs.demo import BAND_A

PROTOCOLS = ["ProtPolishSimulate", "ProtPolishTrain", "ProtPolishBayesian", "ProtPolishRefine"]
#: figures every demo writes (PNG + PDF each); the denoiser's before/after only when lambda > 0
FIGURES = ["sim_0000_tracks", "sim_0000_global", "truth_slices", "half1_slices", "half_map_fsc",
           "train_optima", "polished_sim_0000_tracks", "polished_sim_0001_tracks",
           "polished_vs_truth", "fcc_fit", "bfactors", "weights", "refine_fsc", "refine_history",
           "refine_slices", "refine_angularerror"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    proc = subprocess.run([sys.executable, "-m", "polishplugin.programs.demo", "--out", out,
                           "--size", "tiny"], capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    from pyworkflow.project import Manager
    project = Manager().loadProject("polishplugin_demo")
    runs = {type(p).__name__: p for p in project.getRuns()}
    return out, log, runs


def _logged(log, pattern):
    m = re.search(pattern, log)
    assert m, "not in the demo's log: %s" % pattern
    return [float(g) for g in m.groups()]


def test_every_protocol_finished(demo):
    _, _, runs = demo
    assert sorted(runs) == sorted(PROTOCOLS)
    for name, prot in runs.items():
        assert prot.isFinished(), (name, prot.getStatusMessage())
    refine, polish = runs["ProtPolishRefine"], runs["ProtPolishBayesian"]
    # the refinement ran on the shiny particles, all of them
    assert refine.inputParticles.get().getObjId() == polish.outputParticles.getObjId()
    assert refine.outputParticles.getSize() == polish.outputParticles.getSize() > 0


def test_figures_are_written_and_not_blank(demo):
    import matplotlib.image
    out, _, _ = demo
    for name in FIGURES:
        base = os.path.join(out, "figures", name)
        assert os.path.getsize(base + ".pdf") > 5000, name
        img = matplotlib.image.imread(base + ".png")
        assert min(img.shape[:2]) > 200, name
        assert float(img[..., :3].std()) > 0.02, name


def test_polished_tracks_beat_the_initial_ones(demo):
    from polishplugin.figures import jobs
    _, log, runs = demo
    acc = jobs.polish_vs_truth(runs["ProtPolishBayesian"]._getExtraPath("polish"),
                               runs["ProtPolishSimulate"]._getExtraPath())
    assert acc["map_rms_A"] < 0.95 * acc["initial_rms_A"], acc
    polished, initial = _logged(log, r"track error vs the truth .*: polished ([\d.]+) A .*"
                                     r"initial global track ([\d.]+) A")
    assert polished == pytest.approx(acc["map_rms_A"], abs=0.006)
    assert initial == pytest.approx(acc["initial_rms_A"], abs=0.006)


def test_refined_map_beats_the_starting_map(demo):
    _, log, runs = demo
    refine = runs["ProtPolishRefine"]
    truth, px = read_mrc(os.path.join(runs["ProtPolishSimulate"]._getExtraPath(), "truth",
                                      "volume.mrc"))
    final, px_final = read_mrc(refine._getExtraPath("refine", "map.mrc"))
    assert final.shape == truth.shape and px_final == pytest.approx(px)
    n = truth.shape[0]
    shells = shell_band(n, px, *BAND_A)
    got, start = fsc(final, truth), fsc(lowpass(truth, 30.0, px), truth)
    assert got[shells].mean() > start[shells].mean() + 0.1, (got, start)
    res_got, res_start = resolution_at(got, n, px, 0.5), resolution_at(start, n, px, 0.5)
    assert res_got < res_start - 2.0, (res_got, res_start)
    # from poses found by the search, not from the start's blur (random poses: median ~126 deg)
    from polishplugin.figures import jobs
    from polishplugin.viewers import ProtPolishRefineViewer
    viewer = ProtPolishRefineViewer(project=refine.getProject(), protocol=refine)
    true_angles = viewer.trueAngles(runs["ProtPolishSimulate"].outputParticles)
    errors = jobs.refine_angular_errors(refine._getExtraPath("refine"), true_angles)
    assert len(errors) == refine.outputParticles.getSize()
    assert np.median(errors) < 45.0, np.median(errors)
    # the logged numbers are these
    r05, _, mean, s05, _, smean = _logged(
        log, r"FSC vs the truth: refined map 0.5 at ([\d.]+) A, 0.143 at ([\d.]+) A, mean "
             r"([-\d.]+) over %g-%g A; starting map .* 0.5 at ([\d.]+) A, 0.143 at ([\d.]+) A, "
             r"mean ([-\d.]+)" % BAND_A)
    assert (r05, mean, s05, smean) == pytest.approx(
        (res_got, got[shells].mean(), res_start, start[shells].mean()), abs=0.06)
    # the half-map resolution it logs is the protocol's FSC output's
    half = _logged(log, r"half-map resolution ([\d.]+) A")[0]
    assert half == pytest.approx(float(refine.outputFSC.calculateResolution()), rel=0.1)
