"""The polishing program on RELION files: resumable, MPI-split, failed micrographs reported,
bad input refused before any work with the file and the problem named."""
import os
import shutil

import mrcfile
import numpy as np
import pytest

from polishplugin.io.star import read_star, read_tracks_star, write_star
from polishplugin.programs import polish, simulate
from polishplugin.programs.cli import PARTIAL
from polishplugin.tests.mpi import needs_mpirun, run_under_mpirun


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate.main(["--out", str(out), "--micrographs", "3", "--mic-size", "320", "--frames", "6",
                   "--particles", "4", "--box", "48", "--pixel-size", "1.5", "--snr", "0.1",
                   "--no-figures", "--seed", "3"])
    return out


def _args(sim, out, *extra):
    f = simulate.project_files(sim)
    return ["--particles", f["particles"], "--mics", f["mics"],
            "--postprocess", f["postprocess"], "--root", str(sim),
            "--out", str(out), "--no-figures"] + list(extra)


def _copy(sim, tmp_path):
    dst = tmp_path / "sim"
    shutil.copytree(sim, dst)
    return dst


def test_resume_redoes_only_missing_micrographs(sim, tmp_path, caplog):
    out = tmp_path / "pol"
    assert polish.main(_args(sim, out)) == 0
    done = sorted((out / "tracks").rglob("*_tracks.star"))
    assert len(done) == 3
    first = read_tracks_star(done[0])
    stamp = {p: p.stat().st_mtime_ns for p in done}
    os.remove(done[1])
    caplog.clear()
    with caplog.at_level("INFO"):
        assert polish.main(_args(sim, out)) == 0
    assert "3 micrographs, 1 to do (2 already done)" in caplog.text
    assert done[0].stat().st_mtime_ns == stamp[done[0]] and done[1].exists()
    assert np.array_equal(read_tracks_star(done[0]), first)
    table = read_star(out / "tracks_all.star")["tracks"]
    assert len(table) == 12 * 6
    assert np.all(np.isfinite(table["rlnOriginXAngst"]))


def test_failed_micrograph_is_reported_not_zeroed(sim, tmp_path):
    s = _copy(sim, tmp_path)
    movie = s / "Movies" / "sim_0001.mrcs"
    with mrcfile.open(movie, "r+") as m:
        data = m.data.copy()
        data[2, :, :] = np.nan
        m.set_data(data)
    out = tmp_path / "pol"
    assert polish.main(_args(s, out)) == PARTIAL  # some micrographs failed: not a success
    assert polish.main(_args(s, out, "--allow-partial")) == 0
    assert not (out / "tracks" / simulate.LAYOUT["mic_dir"] / "sim_0001_tracks.star").exists()
    failed = (out / "failed.txt").read_text()
    assert "sim_0001" in failed and "NaN" in failed
    parts = read_star(out / "particles.star")["particles"]
    assert len(parts) == 8
    assert not any("sim_0001" in str(n) for n in parts["rlnMicrographName"])


@needs_mpirun
def test_mpi_split_gives_the_same_tracks(sim, tmp_path):
    serial, par = tmp_path / "serial", tmp_path / "mpi"
    assert polish.main(_args(sim, serial)) == 0
    res = run_under_mpirun("polish", _args(sim, par))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 rank(s)" in res.stderr
    a = read_star(serial / "tracks_all.star")["tracks"]
    b = read_star(par / "tracks_all.star")["tracks"]
    # the same micrographs fitted by other processes: equal up to float32 FFT rounding, which
    # L-BFGS can carry to ~1e-4 A
    np.testing.assert_allclose(a["rlnOriginXAngst"], b["rlnOriginXAngst"], atol=1e-3)
    np.testing.assert_allclose(a["rlnOriginYAngst"], b["rlnOriginYAngst"], atol=1e-3)


def _expect_bad_input(args, capsys_or_caplog, *words):
    assert polish.main(args) == 2
    text = capsys_or_caplog.text
    for w in words:
        assert w in text, text


def test_bad_inputs_are_refused_before_work(sim, tmp_path, caplog):
    out = tmp_path / "pol"
    # missing half map
    s = _copy(sim, tmp_path)
    os.remove(simulate.project_files(s)["half2"])
    _expect_bad_input(_args(s, out), caplog, "run_half2_class001_unfil.mrc")
    assert not (out / "tracks").exists()
    # truncated movie
    s2 = tmp_path / "s2"
    shutil.copytree(sim, s2)
    mv = s2 / "Movies" / "sim_0000.mrcs"
    mv.write_bytes(mv.read_bytes()[:5000])
    caplog.clear()
    _expect_bad_input(_args(s2, out), caplog, "sim_0000.mrcs", "truncated")
    # frame count disagreeing with the metadata
    s3 = tmp_path / "s3"
    shutil.copytree(sim, s3)
    meta = s3 / simulate.LAYOUT["mic_dir"] / "sim_0002.star"
    blocks = read_star(meta)
    blocks["general"]["rlnImageSizeZ"] = [7]
    write_star(meta, blocks)
    caplog.clear()
    _expect_bad_input(_args(s3, out), caplog, "sim_0002", "6 frames", "says 7")
    # particle outside its micrograph, and NaN angles
    s4 = tmp_path / "s4"
    shutil.copytree(sim, s4)
    star4 = simulate.project_files(s4)["particles"]
    blocks = read_star(star4)
    blocks["particles"]["rlnCoordinateX"][0] = 5000.0
    write_star(star4, blocks)
    caplog.clear()
    _expect_bad_input(_args(s4, out), caplog, "run_data.star", "outside")
    assert polish.main(_args(s4, tmp_path / "skip", "--skip-outside")) == 0
    blocks["particles"]["rlnCoordinateX"][0] = 100.0
    blocks["particles"]["rlnAngleTilt"][1] = np.nan
    write_star(star4, blocks)
    caplog.clear()
    _expect_bad_input(_args(s4, out), caplog, "rlnAngleTilt", "NaN")
    # pixel size of the reference disagreeing with the particles
    s5 = tmp_path / "s5"
    shutil.copytree(sim, s5)
    for h in ("half1", "half2"):
        with mrcfile.open(simulate.project_files(s5)[h], "r+") as m:
            m.voxel_size = 2.0
    caplog.clear()
    _expect_bad_input(_args(s5, out), caplog, "pixel size", "2.0000", "1.5000")


def test_defect_map_of_the_wrong_size_is_refused(sim, tmp_path, caplog):
    from polishplugin.io.movies import write_gain
    bad = tmp_path / "defects.mrc"
    write_gain(bad, np.zeros((10, 10), dtype=np.float32))
    _expect_bad_input(_args(sim, tmp_path / "pol", "--defect-map", str(bad)), caplog,
                      "defects.mrc", "10x10", "320x320")
    good = tmp_path / "defects_ok.mrc"
    mask = np.zeros((320, 320), dtype=np.float32)
    mask[:, 7] = 1
    write_gain(good, mask)
    out = tmp_path / "pol_ok"
    assert polish.main(_args(sim, out, "--defect-map", str(good))) == 0
    import json
    diag = json.loads(next((out / "diag").rglob("*.json")).read_text())
    assert diag["defect_pixels"] >= 320


def test_auto_sigmas_recorded_and_fixed_modes_kept(sim, tmp_path):
    import json
    out = tmp_path / "auto"
    assert polish.main(_args(sim, out)) == 0                    # default: --sigmas auto
    summary = json.loads((out / "sigmas.json").read_text())
    per = summary["micrographs"]
    assert len(per) == 3
    chosen = np.array([c["sigmas"] for c in per.values()])
    np.testing.assert_allclose(summary["geometric_mean"], np.exp(np.log(chosen).mean(0)),
                               rtol=1e-9)
    mean = [float(v) for v in (out / "opt_params_all_groups.txt").read_text().split()]
    np.testing.assert_allclose(mean, summary["geometric_mean"], rtol=1e-5)
    for d in (out / "diag").rglob("*.json"):
        diag = json.loads(d.read_text())
        assert diag["sigma_choice"]["sigmas"] == diag["sigmas"]
        assert len(diag["sigma_choice"]["spread"]) == 3
    assert not np.allclose(chosen, (0.2, 5000.0, 2.0))         # chosen, not the defaults
    fixed = tmp_path / "fixed"
    assert polish.main(_args(sim, fixed, "--sigmas", "relion-defaults")) == 0
    assert not (fixed / "sigmas.json").exists()
    for d in (fixed / "diag").rglob("*.json"):
        diag = json.loads(d.read_text())
        assert diag["sigmas"] == [0.2, 5000.0, 2.0] and diag["sigma_choice"] is None
