"""Whole runs on the OpenCL backend (PoCL in CI) against the numpy reference on one small
simulation: polishing (tracks within 1e-3 px), the shiny particles made from those tracks
(B-factor program) and a training run (same sigmas to 1 %), in double precision and in the
single precision of devices without fp64."""
import json

import mrcfile
import numpy as np
import pytest

from polishplugin.backends import get_backend
from polishplugin.io.star import read_tracks_star
from polishplugin.programs import bfactors, polish, simulate, train
from polishplugin.tests.opencl import needs_opencl

pytestmark = needs_opencl
PIXEL = 1.5


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate.main(["--out", str(out), "--micrographs", "3", "--mic-size", "320", "--frames", "6",
                   "--particles", "5", "--box", "48", "--pixel-size", str(PIXEL), "--snr", "0.3",
                   "--no-figures", "--seed", "5"])
    return out


def _inputs(sim):
    f = simulate.project_files(sim)
    return ["--particles", f["particles"], "--mics", f["mics"],
            "--postprocess", f["postprocess"], "--root", str(sim), "--no-figures"]


@pytest.fixture(scope="module", params=[True, False], ids=["fp64", "fp32"])
def precision(request):
    """The OpenCL backend in double, then single precision (reset afterwards)."""
    ocl = get_backend("opencl")
    if request.param and not ocl._dev().device.double_fp_config:
        pytest.skip("device without double precision")
    ocl.configure(fp64=request.param)
    yield request.param
    ocl.configure()


@pytest.fixture(scope="module")
def reference(sim, tmp_path_factory):
    """Polish + shiny particles with numpy: the output folder."""
    return _polish(sim, tmp_path_factory.mktemp("numpy"), "numpy")


@pytest.fixture(scope="module")
def polished(sim, reference, precision, tmp_path_factory):
    """{backend: output folder} of polish + shiny particles with numpy and with OpenCL."""
    return {"numpy": reference, "opencl": _polish(sim, tmp_path_factory.mktemp("ocl"), "opencl")}


def _polish(sim, d, be):
    assert polish.main(_inputs(sim) + ["--out", str(d / "pol"), "--backend", be]) == 0
    assert bfactors.main(_inputs(sim) + ["--polish", str(d / "pol"), "--out", str(d / "bf"),
                                         "--backend", be]) == 0
    return d


def test_polish_tracks_match_numpy(polished):
    files = {be: sorted((d / "pol" / "tracks").rglob("*_tracks.star"))
             for be, d in polished.items()}
    assert len(files["numpy"]) == 3 and [f.name for f in files["opencl"]] == \
        [f.name for f in files["numpy"]]
    moved = 0.0
    for a, b in zip(files["numpy"], files["opencl"]):
        ta, tb = read_tracks_star(a) / PIXEL, read_tracks_star(b) / PIXEL    # px
        np.testing.assert_allclose(tb, ta, rtol=0, atol=1e-3)
        moved = max(moved, float(np.abs(ta - ta[:, :1]).max()))
    assert moved > 0.2        # the tracks are not trivially equal (particles do move)


def test_shiny_particles_match_numpy(polished):
    stacks = {be: sorted((d / "bf" / "Shiny").rglob("*_shiny.mrcs"))
              for be, d in polished.items()}
    assert len(stacks["numpy"]) == 3
    for a, b in zip(stacks["numpy"], stacks["opencl"]):
        with mrcfile.open(a) as ma, mrcfile.open(b) as mb:
            x, y = ma.data.astype(np.float64), mb.data.astype(np.float64)
        assert x.shape == y.shape and x.shape[0] == 5
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-3 * np.abs(x).max())
    w = {be: json.loads((d / "bf" / "bfactors.json").read_text())["bfactors_A2"]
         for be, d in polished.items()}
    np.testing.assert_allclose(w["opencl"], w["numpy"], rtol=1e-3, atol=0.05)


def test_training_sigmas_match_numpy(sim, precision, tmp_path):
    got = {}
    for be in ("numpy", "opencl"):
        out = tmp_path / be
        assert train.main(_inputs(sim) + ["--out", str(out), "--min-particles", "10",
                                          "--restarts", "1", "--max-evals", "12",
                                          "--eval-max-res", "7", "--backend", be,
                                          "--method", "tcc"]) == 0
        report = json.loads((out / "train.json").read_text())
        got[be] = (report["restarts"][0]["sigmas"], report["restarts"][0]["tcc"])
    np.testing.assert_allclose(got["opencl"][0], got["numpy"][0], rtol=0.01)
    # single precision: the MAP tracks differ by up to ~5e-4 px, the TCC by ~7e-5
    assert got["opencl"][1] == pytest.approx(got["numpy"][1], rel=1e-6 if precision else 2e-4)
