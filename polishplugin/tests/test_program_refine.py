"""The refine program (programs/refine.py) on a tiny simulated RELION project: its outputs, a
resumed run equal to an uninterrupted one, the denoiser's input and output maps (RED), a run
under mpirun equal to the one-process run, one-line errors on bad input, and RELION's
relion_reconstruct reading the refined particles STAR."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from polishplugin.core.fourier import fsc
from polishplugin.core.refine.sampling import angular_distance
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import lowpass, pseudo_protein
from polishplugin.io.mrc import read_mrc, write_mrc
from polishplugin.io.particle_set import write_particle_set
from polishplugin.io.star import read_particles_star, read_star, write_particles_star
from polishplugin.programs import refine
from polishplugin.tests.mpi import needs_mpirun, run_under_mpirun
from polishplugin.tests.relion import needs_relion, relion_postprocess, run_relion

N, PX, COUNT = 20, 6.0, 60
FAST = ["--max-iter", "3", "--healpix-order", "1", "--local-order", "2", "--max-order", "2"]
RED = ["--mode", "red", "--denoiser", "tv", "--lambda", "1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refine_project")
    rng = np.random.default_rng(3)
    truth = pseudo_protein(N, PX, rng)
    ps = simulate_particles(truth, COUNT, PX, 2.0, rng)
    write_particle_set(str(folder), ps, PX)
    write_mrc(str(folder / "ref.mrc"), lowpass(truth, 30.0, PX), PX)
    write_mrc(str(folder / "truth.mrc"), truth, PX)
    return folder, truth, ps


def _run(folder, out, *extra):
    old = os.getcwd()
    os.chdir(folder)
    try:
        return refine.main(["--particles", "particles.star", "--ref", "ref.mrc", "--out", out]
                           + FAST + list(extra))
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def full_run(project):
    folder, truth, ps = project
    assert _run(folder, "full") == 0
    return folder / "full"


def test_outputs(project, full_run):
    folder, truth, ps = project
    for name in refine.OUTPUTS:
        assert (full_run / name).exists(), name
    final, px = read_mrc(str(full_run / "map.mrc"))
    assert final.shape == (N, N, N) and px == pytest.approx(PX)
    band = slice(int(N * PX / 30.0) + 1, int(N * PX / 14.0) + 1)
    assert fsc(final, truth)[band].mean() > fsc(lowpass(truth, 30.0, PX), truth)[band].mean()
    blocks = read_star(str(full_run / "fsc.star"))
    assert len(blocks["fsc"]["rlnFourierShellCorrelation"]) == N // 2 + 1
    assert 2 * PX <= float(blocks["general"]["rlnFinalResolution"][0]) < 40.0
    its = read_star(str(full_run / "iterations.star"))["iterations"]
    assert list(its["rlnCurrentIteration"]) == [1, 2, 3]
    # the offset prior's sigma (A), estimated from the data after each iteration
    assert all(0 < float(v) < 10.0 for v in its["rlnSigmaOffsetsAngst"])
    summary = json.load(open(full_run / "refine.json"))
    assert summary["finished"] and len(summary["iterations"]) == 3
    assert summary["cpu_s_total"] > 0
    optics, parts = read_particles_star(str(full_run / "particles.star"))
    assert len(parts) == COUNT
    angles = np.deg2rad(np.stack([parts[k] for k in ("rlnAngleRot", "rlnAngleTilt",
                                                     "rlnAnglePsi")], axis=1))
    # the refined angles are not the input (true) ones copied, but close to most of them
    err = angular_distance(angles, ps.angles)
    assert np.median(err) > 1e-3
    assert np.median(err) < 30.0


def test_resume_continues_and_gives_the_same_result(project, full_run):
    """A run stopped after iteration 2 (its state and settings record copied) continues with
    iteration 3 and ends where the uninterrupted run ended."""
    folder, _, _ = project
    part = folder / "part"
    (part / "state").mkdir(parents=True)
    shutil.copy(full_run / "settings.json", part / "settings.json")
    shutil.copy(full_run / "state" / "iter_002.npz", part / "state" / "iter_002.npz")
    assert _run(folder, "part") == 0
    summary = json.load(open(part / "refine.json"))
    assert [r["iteration"] for r in summary["iterations"]] == [1, 2, 3]
    a, _ = read_mrc(str(full_run / "map.mrc"))
    b, _ = read_mrc(str(part / "map.mrc"))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    for h in (1, 2):      # the unregularised halves come back from the resumed state too
        a, _ = read_mrc(str(full_run / (refine.UNREGULARISED % h)))
        b, _ = read_mrc(str(part / (refine.UNREGULARISED % h)))
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    pa = read_particles_star(str(full_run / "particles.star"))[1]
    pb = read_particles_star(str(part / "particles.star"))[1]
    np.testing.assert_allclose(pb["rlnAngleRot"], pa["rlnAngleRot"], atol=1e-6)
    # other settings in the same folder are refused
    assert _run(folder, "part", "--tau2-fudge", "2") == 2


@pytest.fixture(scope="module")
def red_run(project):
    folder, _, _ = project
    assert _run(folder, "red", *RED) == 0
    return folder / "red"


def test_red_writes_the_denoisers_input_and_output(full_run, red_run):
    """half<h>_denoiser_input.mrc is x~ = B/K (eq. 17) and half<h>_denoised.mrc the TV denoiser
    applied to it (standardised, so in the same grey scale); both differ; none with tikhonov."""
    from polishplugin.core.refine.denoisers import get_denoiser
    tv = get_denoiser("tv")
    before, after = refine.RED_MAPS
    for h in (1, 2):
        x, px = read_mrc(str(red_run / (before % h)))
        f, _ = read_mrc(str(red_run / (after % h)))
        assert px == pytest.approx(PX) and x.shape == (N, N, N)
        np.testing.assert_allclose(f, tv(x), atol=1e-4 * np.abs(f).max())
        assert np.abs(f - x).max() > 0.05 * np.abs(x).max()
        # the refined half map (lambda 1) lies nearer the denoised map than x~ does
        half = read_mrc(str(red_run / ("half%d.mrc" % h)))[0]
        assert np.linalg.norm(half - f) < np.linalg.norm(x - f)
        assert not (full_run / (before % h)).exists() and not (full_run / (after % h)).exists()


@pytest.fixture(scope="module")
def masked_run(project):
    """A run with --mask (a soft mask of the truth, not symmetric under any axis swap) and its
    log."""
    from polishplugin.core.simulate.volumes import soft_mask
    folder, truth, _ = project
    mask = soft_mask(truth, 0.2 * truth.max(), 1.0, 3.0)
    write_mrc(str(folder / "mask.mrc"), mask, PX)
    handler = _Collect()
    logger = logging.getLogger("polishplugin.refine")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert _run(folder, "masked", "--mask", "mask.mrc") == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return folder / "masked", "\n".join(handler.lines)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_mask_adds_relions_masked_and_corrected_fsc(project, full_run, masked_run):
    """With --mask, fsc.star holds relion_postprocess's four curves of the last iteration's
    unregularised halves B / K (kept in the final state), the randomisation shell and the
    corrected resolution, also in the log; without, none of them."""
    from polishplugin.core.masked_fsc import masked_fsc
    folder, truth, _ = project
    out, log_text = masked_run
    blocks = read_star(str(out / "fsc.star"))
    g, t = blocks["general"], blocks["fsc"]
    state = np.load(out / "state" / "iter_003.npz")
    f = masked_fsc(state["unregularised"][0], state["unregularised"][1], read_mrc(
        str(folder / "mask.mrc"))[0], np.random.default_rng(0))
    for label, curve in (("rlnFourierShellCorrelationCorrected", f.corrected),
                         ("rlnFourierShellCorrelationUnmaskedMaps", f.unmasked),
                         ("rlnFourierShellCorrelationMaskedMaps", f.masked),
                         ("rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps",
                          f.randomised)):
        np.testing.assert_allclose(np.asarray(t[label], float), curve, atol=1e-5, err_msg=label)
    assert np.abs(f.masked - f.unmasked).max() > 0.05      # the mask did change the FSC
    assert float(g["rlnRandomiseFrom"][0]) == pytest.approx(f.randomise_from(PX), rel=1e-5)
    res = float(g["rlnPpCorrectedResolution"][0])
    assert 2 * PX <= res < 40.0 and g["rlnMaskName"][0] == "mask.mrc"
    assert "%.2f A (masked FSC 0.143, corrected" % res in log_text
    plain = read_star(str(full_run / "fsc.star"))
    assert "rlnFourierShellCorrelationCorrected" not in plain["fsc"]
    assert "rlnPpCorrectedResolution" not in plain["general"]


def test_unregularised_halves_are_the_fscs_maps(full_run, red_run):
    """half<h>_unregularised.mrc holds the final state's B / K of half h (the maps fsc.star is
    computed from) with half<h>.mrc's box, pixel size and grey scale, and is not half<h>.mrc
    (the prior, with RED the denoiser, changed that one)."""
    for run in (full_run, red_run):
        state = np.load(run / "state" / "iter_003.npz")
        regs = [read_mrc(str(run / ("half%d.mrc" % h))) for h in (1, 2)]
        unregs = [read_mrc(str(run / (refine.UNREGULARISED % h))) for h in (1, 2)]
        for h, ((u, px), (r, rpx)) in enumerate(zip(unregs, regs)):
            assert u.shape == r.shape == (N, N, N) and px == pytest.approx(rpx)
            np.testing.assert_array_equal(u, state["unregularised"][h])
            # the same grey scale: equal power in the lowest shells, where the prior does little
            low = [np.abs(np.fft.fftn(v))[:2, :2, :2].sum() for v in (u, r)]
            assert 0.7 < low[0] / low[1] < 1.4, low
            assert np.abs(u - r).max() > 0.1 * np.abs(r).max()


@needs_relion
def test_relion_postprocess_on_the_written_halves_gives_fsc_stars_curves(project, masked_run,
                                                                        tmp_path):
    """relion_postprocess 3.1.3 on the written half<h>_unregularised.mrc and the same mask (pixel
    size from their headers): its unmasked and masked FSC equal fsc.star's to its STAR's digits
    and its randomisation resolution is the same: the files are the maps fsc.star reports, in
    RELION's orientation and header conventions (the regularised or transposed halves fail)."""
    folder, _, _ = project
    out, _ = masked_run
    theirs = relion_postprocess(out / (refine.UNREGULARISED % 1), out / (refine.UNREGULARISED % 2),
                                folder / "mask.mrc", tmp_path)
    ours = read_star(str(out / "fsc.star"))
    for label in ("rlnFourierShellCorrelationUnmaskedMaps", "rlnFourierShellCorrelationMaskedMaps"):
        np.testing.assert_allclose(np.asarray(theirs["fsc"][label], float),
                                   np.asarray(ours["fsc"][label], float), rtol=0, atol=1e-5,
                                   err_msg=label)
    assert float(theirs["general"]["rlnRandomiseFrom"][0]) == pytest.approx(
        float(ours["general"]["rlnRandomiseFrom"][0]), abs=1e-5)


@needs_mpirun
@pytest.mark.parametrize("ranks", [2, 3])
def test_mpi_equals_one_process(project, red_run, ranks):
    """mpirun -np 2 (one half-set per rank) and -np 3 (particles of both half-sets on every rank),
    the two halves' updates on ranks 0 and 1: the maps, the denoiser's maps, the poses and the
    noise of the one-process run, to rounding."""
    folder, _, _ = project
    out = folder / ("mpi%d" % ranks)
    res = run_under_mpirun("refine", ["--particles", str(folder / "particles.star"),
                                      "--ref", str(folder / "ref.mrc"), "--root", str(folder),
                                      "--out", str(out)] + FAST + RED, ranks=ranks, timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "%d process(es)" % ranks in res.stderr + res.stdout
    for name in ("map.mrc", "half1.mrc", "half2.mrc", "half1_unregularised.mrc",
                 "half2_unregularised.mrc", "half1_denoiser_input.mrc", "half2_denoised.mrc"):
        a, b = read_mrc(str(red_run / name))[0], read_mrc(str(out / name))[0]
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max(), err_msg=name)
    pa = read_particles_star(str(red_run / "particles.star"))[1]
    pb = read_particles_star(str(out / "particles.star"))[1]
    for k in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
              "rlnOriginYAngst", "rlnMaxValueProbDistribution"):
        np.testing.assert_allclose(np.asarray(pb[k], float), np.asarray(pa[k], float),
                                   atol=1e-6, err_msg=k)
    sa = np.load(red_run / "state" / "iter_003.npz")
    sb = np.load(out / "state" / "iter_003.npz")
    # the oversampled global search picks the coarse orientations holding 99.9 % of the batch-
    # scored posterior: BLAS rounding of other batch sizes reaches sigma^2 at ~2e-9
    np.testing.assert_allclose(sb["sigma2"], sa["sigma2"], rtol=1e-7)


def _error(monkeypatch, tmp_path, folder, *extra, out="bad"):
    err = tmp_path / "error.txt"
    monkeypatch.setenv("POLISHPLUGIN_ERROR_FILE", str(err))
    status = _run(folder, str(tmp_path / out), *extra)
    return status, err.read_text() if err.exists() else ""


def test_bad_inputs_are_refused_with_a_reason(project, tmp_path, monkeypatch):
    folder, truth, ps = project
    write_mrc(str(tmp_path / "small.mrc"), truth[:16, :16, :16], PX)
    status, msg = _error(monkeypatch, tmp_path, folder, "--ref", str(tmp_path / "small.mrc"))
    assert status == 2 and "box is 20" in msg
    write_mrc(str(tmp_path / "px.mrc"), truth, 2 * PX)
    status, msg = _error(monkeypatch, tmp_path, folder, "--ref", str(tmp_path / "px.mrc"))
    assert status == 2 and "pixel size" in msg
    write_mrc(str(tmp_path / "mask.mrc"), 2.0 * np.ones((N,) * 3, np.float32), PX)
    status, msg = _error(monkeypatch, tmp_path, folder, "--mask", str(tmp_path / "mask.mrc"))
    assert status == 2 and "[0, 1]" in msg
    with pytest.raises(SystemExit):
        _error(monkeypatch, tmp_path, folder, "--mode", "red", "--lambda", "2")
    with pytest.raises(SystemExit, match="--unet-weights is for --denoiser unet"):
        _error(monkeypatch, tmp_path, folder, "--mode", "red", "--denoiser", "tv",
               "--unet-weights", "ref.mrc")
    status, msg = _error(monkeypatch, tmp_path, folder, "--mode", "red", "--denoiser", "unet",
                         "--unet-weights", "none.npz")
    assert status == 2 and "no such U-Net weights file" in msg


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_nan_images_and_an_empty_half_set_are_refused(project, tmp_path, monkeypatch):
    folder, truth, ps = project
    bad = tmp_path / "nan"
    bad.mkdir()
    images = ps.images.copy()
    images[7, 3, 4] = np.nan
    write_mrc(str(bad / "stack.mrcs"), images, PX)
    shutil.copy(folder / "particles.star", bad / "particles.star")
    shutil.copy(folder / "ref.mrc", bad / "ref.mrc")
    status, msg = _error(monkeypatch, tmp_path, bad)
    assert status == 2 and "NaN" in msg and "particle 8" in msg
    optics, parts = read_particles_star(str(folder / "particles.star"))
    parts["rlnRandomSubset"] = np.ones(len(parts), int)
    one = tmp_path / "one"
    one.mkdir()
    write_particles_star(str(one / "particles.star"), optics, parts)
    shutil.copy(folder / "stack.mrcs", one / "stack.mrcs")
    shutil.copy(folder / "ref.mrc", one / "ref.mrc")
    status, msg = _error(monkeypatch, tmp_path, one)
    assert status == 2 and "half-set 2 is empty" in msg


@needs_relion
def test_relion_reconstruct_reads_the_refined_particles(project, full_run):
    folder, truth, _ = project
    run_relion("relion_reconstruct", ["--i", "full/particles.star", "--o", "full/relion.mrc",
                                      "--ctf"], cwd=str(folder))
    theirs, _ = read_mrc(str(folder / "full" / "relion.mrc"))
    ours, _ = read_mrc(str(full_run / "map.mrc"))
    assert theirs.shape == ours.shape
    band = slice(1, int(N * PX / 20.0) + 1)
    # RELION's reconstruction from our angles and origins agrees with our map and the truth
    assert fsc(theirs, ours)[band].mean() > 0.8
    assert fsc(theirs, truth)[band].mean() > 0.6


def test_unet_denoiser_runs_on_at_most_threads_torch_threads():
    """--threads caps torch's threads for the U-Net (torch's default is every core)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        args = refine.build_parser().parse_args(
            ["--particles", "p.star", "--ref", "r.mrc", "--out", "o", "--mode", "cw-red",
             "--denoiser", "unet", "--threads", "1"])
        refine.settings_of(args, 400, 2.0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
