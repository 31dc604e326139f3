"""Fault injection on a tiny simulated project (issue 10): bad input, sabotaged output folders,
other settings on resume, a second writer, NaN in columns and pixels, a Python without Tk,
swapped particle rows, MPI ranks failing. Each case must end in a clear refusal before any work,
a micrograph listed in failed.txt with its reason, or the right answer; never in lost data, a
hang or a silent wrong answer. The README's error-handling table lists the cases."""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from polishplugin.core.fourier import resolution_at
from polishplugin.io.star import read_star, read_tracks_star, write_star
from polishplugin.programs import bfactors, polish, reconstruct, simulate, train
from polishplugin.programs.cli import PARTIAL
from polishplugin.tests.killed import kill_after_first
from polishplugin.tests.mpi import needs_mpirun, run_under_mpirun

LAYOUT = simulate.LAYOUT
MIC1 = os.path.join(LAYOUT["mic_dir"], "sim_0001")  # rank 1's micrograph under 2 ranks


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The issue's project (3 micrographs of 8 frames, 6 particles each), polished (P) and
    recombined (B) once."""
    d = tmp_path_factory.mktemp("faults")
    sim = d / "sim"
    simulate.main(["--out", str(sim), "--micrographs", "3", "--mic-size", "256", "--frames", "8",
                   "--particles", "6", "--box", "48", "--no-figures", "--seed", "3"])
    assert polish.main(_pol(sim, d / "P")) == 0
    assert bfactors.main(_bf(sim, d / "P", d / "B")) == 0
    return d


def _inputs(sim):
    f = simulate.project_files(sim)
    return ["--particles", f["particles"], "--mics", f["mics"],
            "--postprocess", f["postprocess"], "--root", str(sim), "--no-figures"]


def _pol(sim, out, *extra):
    return _inputs(sim) + ["--out", str(out)] + list(extra)


def _bf(sim, pol, out, *extra):
    return _inputs(sim) + ["--polish", str(pol), "--out", str(out)] + list(extra)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _tracks(out):
    return {p.relative_to(out): read_tracks_star(p)
            for p in sorted((out / "tracks").rglob("*_tracks.star"))}


def _sabotage_diag(pol, stem=MIC1):
    """Un-finish one micrograph and put a folder where its diag JSON goes (an OSError when the
    job writes it, like a full disk or a permission)."""
    os.remove(pol / "tracks" / (stem + "_tracks.star"))
    diag = pol / "diag" / (stem + ".json")
    os.remove(diag)
    diag.mkdir()


# ------------------------------------------------------------------ 1. errors on one micrograph
def test_write_error_fails_only_its_micrograph(project, tmp_path):
    pol = _copy(project / "P", tmp_path / "P")
    _sabotage_diag(pol)
    assert polish.main(_pol(project / "sim", pol)) == PARTIAL
    failed = (pol / "failed.txt").read_text()
    assert "sim_0001" in failed and "IsADirectoryError" in failed
    assert len(read_star(pol / "particles.star")["particles"]) == 12
    assert polish.main(_pol(project / "sim", pol, "--allow-partial")) == 0


def test_folder_in_place_of_a_result_is_not_taken_for_a_done_micrograph(project, tmp_path):
    pol = _copy(project / "P", tmp_path / "P")
    tracks = pol / "tracks" / (MIC1 + "_tracks.star")
    os.remove(tracks)
    tracks.mkdir()
    assert polish.main(_pol(project / "sim", pol)) == PARTIAL
    assert "sim_0001.mrc\tIsADirectoryError" in (pol / "failed.txt").read_text()
    assert len(read_star(pol / "particles.star")["particles"]) == 12


def test_job_where_every_micrograph_failed_is_an_error(project, tmp_path):
    pol = _copy(project / "P", tmp_path / "P")
    for i in range(3):
        _sabotage_diag(pol, os.path.join(LAYOUT["mic_dir"], "sim_%04d" % i))
    assert polish.main(_pol(project / "sim", pol, "--allow-partial")) == 1
    assert len((pol / "failed.txt").read_text().splitlines()) == 3


@needs_mpirun
def test_mpi_write_error_fails_only_its_micrograph(project, tmp_path):
    pol = _copy(project / "P", tmp_path / "P")
    _sabotage_diag(pol)
    res = run_under_mpirun("polish", _pol(project / "sim", pol), timeout=180)
    assert res.returncode == PARTIAL, res.stderr[-2000:]
    assert "IsADirectoryError" in (pol / "failed.txt").read_text()


@needs_mpirun
def test_mpi_error_outside_the_micrograph_handler_aborts_every_rank(project, tmp_path):
    pol = _copy(project / "P", tmp_path / "P")
    os.remove(pol / "tracks" / LAYOUT["mic_dir"] / "sim_0000_tracks.star")  # rank 0's
    _sabotage_diag(pol)                                                      # rank 1's
    (pol / "failed").write_text("a file where the failure records go\n")
    res = run_under_mpirun("polish", _pol(project / "sim", pol), timeout=180)  # no hang
    assert res.returncode != 0
    assert "[rank 1]" in res.stderr and "aborting all 2 ranks" in res.stderr, res.stderr[-3000:]


def test_kill_9_then_rerun_gives_the_uninterrupted_tracks(project, tmp_path):
    """kill -9 once the first micrograph is done (lock held, files half written), then a re-run:
    the lock died with the process and the tracks are those of an uninterrupted run."""
    pol = tmp_path / "P"
    kill_after_first("polish", _pol(project / "sim", pol), pol / "tracks")
    assert polish.main(_pol(project / "sim", pol)) == 0
    ours, theirs = _tracks(pol), _tracks(project / "P")
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-12)


@needs_mpirun
def test_mpi_bfactors_write_error_fails_only_its_micrograph(project, tmp_path):
    out = _copy(project / "B", tmp_path / "B")
    stack = out / "Shiny" / (MIC1 + "_shiny.mrcs")
    os.remove(stack)
    stack.mkdir()
    res = run_under_mpirun("bfactors", _bf(project / "sim", project / "P", out), timeout=180)
    assert res.returncode == PARTIAL, res.stderr[-2000:]
    assert "sim_0001" in (out / "failed.txt").read_text()
    assert len(read_star(out / "particles.star")["particles"]) == 12


# ------------------------------------------------------------------ 2. outputs over inputs
def test_output_folder_holding_the_inputs_is_refused(project, tmp_path, caplog):
    sim = _copy(project / "sim", tmp_path / "sim")
    before = _digest(sim / LAYOUT["particles"])
    assert polish.main(_pol(sim, sim)) == 2
    assert "holds the input" in caplog.text
    assert os.path.basename(LAYOUT["particles"]) in caplog.text
    assert bfactors.main(_bf(sim, project / "P", sim)) == 2
    assert _digest(sim / LAYOUT["particles"]) == before
    assert not (sim / "tracks").exists() and not (sim / "Shiny").exists()
    pol = _copy(project / "P", tmp_path / "P")
    before = _digest(pol / "particles.star")
    assert bfactors.main(_bf(project / "sim", pol, pol)) == 2  # --out = --polish
    assert _digest(pol / "particles.star") == before


# ------------------------------------------------------------------ 3, 4. settings and writers
def test_resume_with_other_settings_is_refused_or_started_afresh(project, tmp_path, caplog):
    pol = _copy(project / "P", tmp_path / "P")
    os.remove(pol / "tracks" / (MIC1 + "_tracks.star"))  # as after a kill
    old = _tracks(pol)
    other = ("--sigma-vel", "1.0", "--first-frame", "3")
    assert polish.main(_pol(project / "sim", pol, *other)) == 2
    assert "other settings" in caplog.text and "first_frame 1 -> 3" in caplog.text
    assert "sigmas auto -> [1.0, 5000.0, 2.0]" in caplog.text    # the default: auto
    assert _tracks(pol).keys() == old.keys()
    assert polish.main(_pol(project / "sim", pol, *other, "--fresh")) == 0
    tracks = _tracks(pol)
    assert len(tracks) == 3 and {t.shape[1] for t in tracks.values()} == {6}
    frames = read_star(pol / "tracks_all.star")["tracks"]["rlnMicrographFrameNumber"]
    assert set(frames) == set(range(3, 9))


def test_results_without_a_settings_record_are_not_mixed(project, tmp_path, caplog):
    pol = _copy(project / "P", tmp_path / "P")
    os.remove(pol / "settings.json")
    assert polish.main(_pol(project / "sim", pol)) == 2
    assert "no settings record" in caplog.text


def test_second_writer_is_refused(project, tmp_path, caplog):
    pol = _copy(project / "P", tmp_path / "P")
    with open(pol / ".lock", "a") as fh:  # a run in progress holds the lock
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert polish.main(_pol(project / "sim", pol)) == 2
        assert bfactors.main(_bf(project / "sim", project / "P", pol)) == 2
    assert "another run" in caplog.text
    assert polish.main(_pol(project / "sim", pol)) == 0  # lock released: the folder is usable


def test_train_claims_its_folder_like_polish(project, tmp_path, caplog):
    sim = _copy(project / "sim", tmp_path / "sim")
    assert train.main(_pol(sim, sim, "--restarts", "1")) == 2
    assert "holds the input" in caplog.text
    out = tmp_path / "T"
    out.mkdir()
    with open(out / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert train.main(_pol(sim, out, "--restarts", "1")) == 2
    assert "another run" in caplog.text and not (out / "settings.json").exists()


def test_train_with_a_broken_movie_skips_it_and_says_so(project, tmp_path):
    sim = _copy(project / "sim", tmp_path / "sim")
    with mrcfile.open(sim / LAYOUT["movies"] / "sim_0001.mrcs", "r+") as m:
        data = m.data.copy()
        data[3] = np.inf
        m.set_data(data)
    args = _pol(sim, tmp_path / "T", "--restarts", "1", "--min-particles", "18",
                "--max-evals", "8")
    assert train.main(args) == PARTIAL
    report = json.loads((tmp_path / "T" / "train.json").read_text())
    assert list(report["failed"]) == [MIC1 + ".mrc"]
    assert "NaN or infinite" in report["failed"][MIC1 + ".mrc"]
    assert train.main(args + ["--allow-partial"]) == 0


def test_killed_run_leaves_no_part_files_after_the_next(project, tmp_path):
    pol = _copy(project / "P", tmp_path / "P")
    part = pol / "tracks" / LAYOUT["mic_dir"] / ".sim_0001_tracks.star.x1y2.part"
    part.write_text("half a file")
    assert polish.main(_pol(project / "sim", pol)) == 0
    assert not part.exists()


def test_bfactors_resume_with_another_scale_never_mixes_sizes(project, tmp_path, caplog):
    out = _copy(project / "B", tmp_path / "B")
    os.remove(sorted((out / "Shiny").rglob("*.mrcs"))[1])
    assert bfactors.main(_bf(project / "sim", project / "P", out, "--scale", "32")) == 2
    assert "scale -1 -> 32" in caplog.text
    assert bfactors.main(_bf(project / "sim", project / "P", out, "--scale", "32",
                             "--fresh")) == 0
    sizes = {mrcfile.open(p).data.shape[-1] for p in (out / "Shiny").rglob("*.mrcs")}
    assert sizes == {32}
    optics = read_star(out / "particles.star")["optics"]
    assert set(optics["rlnImageSize"]) == {32}


# ------------------------------------------------------------------ 5. NaN in used columns
@pytest.mark.parametrize("block,label", [("particles", "rlnDefocusAngle"),
                                         ("particles", "rlnPhaseShift"),
                                         ("particles", "rlnAngleTilt"),
                                         ("optics", "rlnSphericalAberration"),
                                         ("optics", "rlnAmplitudeContrast")])
def test_nan_in_a_used_column_is_refused_before_work(project, tmp_path, caplog, block, label):
    sim = _copy(project / "sim", tmp_path / "sim")
    blocks = read_star(sim / LAYOUT["particles"])
    table = blocks[block]
    if label not in table:
        table[label] = np.zeros(len(table))
    values = np.asarray(table[label], dtype=float).copy()
    values[-1] = np.nan
    table[label] = values
    write_star(sim / LAYOUT["particles"], blocks)
    out = tmp_path / "P"
    assert polish.main(_pol(sim, out)) == 2
    assert "column %s has NaN" % label in caplog.text
    assert not out.exists()


def test_nan_dose_in_the_metadata_is_refused(project, tmp_path, caplog):
    sim = _copy(project / "sim", tmp_path / "sim")
    meta = sim / (MIC1 + ".star")
    text = meta.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("_rlnMicrographDoseRate"))
    meta.write_text(text.replace(line, "_rlnMicrographDoseRate nan"))
    assert polish.main(_pol(sim, tmp_path / "P")) == 2
    assert "rlnMicrographDoseRate" in caplog.text


def _drop_mic_row(sim):
    path = sim / LAYOUT["mics"]
    row = LAYOUT["mic_dir"] + "/sim_0002.mrc"
    assert row in path.read_text()
    path.write_text("\n".join(ln for ln in path.read_text().splitlines()
                              if not ln.startswith(row)) + "\n")


def _no_particles(sim):
    blocks = read_star(sim / LAYOUT["particles"])
    blocks["particles"] = blocks["particles"].take(np.arange(0))
    write_star(sim / LAYOUT["particles"], blocks)


def _small_half_map(sim):
    with mrcfile.new(sim / LAYOUT["half2"], overwrite=True) as m:
        m.set_data(np.zeros((32, 32, 32), dtype=np.float32))
        m.voxel_size = 1.2


def _small_gain(sim):
    with mrcfile.new(sim / LAYOUT["gain"], overwrite=True) as m:
        m.set_data(np.ones((100, 100), dtype=np.float32))


def _no_movie(sim):
    os.remove(sim / LAYOUT["movies"] / "sim_0001.mrcs")


@pytest.mark.parametrize("break_it,message", [
    (_drop_mic_row, "not listed in"), (_no_particles, "no particles"),
    (_small_half_map, "half map shape"), (_small_gain, "gain reference is 100x100"),
    (_no_movie, "sim_0001.mrcs: no such file")])
def test_inconsistent_project_is_refused_before_work(project, tmp_path, caplog, break_it,
                                                     message):
    """Some of the campaign's cases that were already handled well, kept from coming back."""
    sim = _copy(project / "sim", tmp_path / "sim")
    break_it(sim)
    out = tmp_path / "P"
    assert polish.main(_pol(sim, out)) == 2
    assert message in caplog.text
    assert not out.exists()


# ------------------------------------------------------------------ 6. NaN pixels
def test_nan_region_in_a_frame_is_filled_and_counted(project, tmp_path):
    sim = _copy(project / "sim", tmp_path / "sim")
    with mrcfile.open(sim / LAYOUT["movies"] / "sim_0001.mrcs", "r+") as m:
        data = m.data.copy()
        data[2, 100:120, 100:120] = np.nan
        m.set_data(data)
    pol, out = tmp_path / "P", tmp_path / "B"
    assert polish.main(_pol(sim, pol)) == 0
    diag = json.loads((pol / "diag" / (MIC1 + ".json")).read_text())
    assert diag["nonfinite_pixels"] == 400
    assert all(np.all(np.isfinite(t)) for t in _tracks(pol).values())
    assert bfactors.main(_bf(sim, pol, out)) == 0
    for stack in (out / "Shiny").rglob("*.mrcs"):
        assert np.all(np.isfinite(mrcfile.open(stack).data)), stack


def _rename_images(src, dst, root, rename):
    """Copy the particles STAR ``src`` to ``dst`` with each image's stack (resolved against the
    project folder ``root``; it must be in the bfactors run's folder ``project / "B"``) renamed
    to ``rename(its path in that folder)``."""
    blocks = read_star(src)
    names = []
    for name in blocks["particles"]["rlnImageName"]:
        i, path = str(name).split("@")
        path = os.path.relpath(os.path.join(root, path), root.parent / "B")
        assert not path.startswith(os.pardir), name
        names.append("%s@%s" % (i, rename(path)))
    blocks["particles"]["rlnImageName"] = np.asarray(names, dtype=object)
    write_star(dst, blocks)


def test_nan_image_is_left_out_of_the_reconstruction(project, tmp_path):
    def run(folder, root, out):
        return reconstruct.main(["--particles", str(folder / "particles.star"), "--root",
                                 str(root), "--out", str(out), "--no-figures"])
    clean = tmp_path / "clean"
    assert run(project / "B", project / "sim", clean) == 0
    res_clean = json.loads((clean / "reconstruct.json").read_text())["resolution_0143"]
    bad = _copy(project / "B", tmp_path / "B")
    (tmp_path / "sim").mkdir()
    # the copy's images, named relative to an empty project folder (bfactors wrote them absolute:
    # its --out is outside the project)
    _rename_images(bad / "particles.star", bad / "particles.star", project / "sim",
                   lambda p: os.path.relpath(bad / p, tmp_path / "sim"))
    stack = sorted((bad / "Shiny").rglob("*.mrcs"))[0]
    with mrcfile.open(stack, "r+") as m:
        data = m.data.copy()
        data[0] = np.nan
        data[1, :5, :5] = np.inf
        m.set_data(data)
    out = tmp_path / "recon"
    assert run(bad, tmp_path / "sim", out) == 0
    rep = json.loads((out / "reconstruct.json").read_text())
    assert rep["images_left_out"] == 1 and rep["nonfinite_pixels"] == 48 * 48 + 25
    px = rep["pixel_size"]
    assert rep["resolution_0143"] > 2.5 * px  # not a false Nyquist
    assert abs(rep["resolution_0143"] - res_clean) < 0.3 * res_clean
    for h in ("half1.mrc", "half2.mrc"):
        assert np.all(np.isfinite(mrcfile.open(out / h).data))


def test_non_finite_fsc_has_no_resolution():
    with pytest.raises(ValueError, match="no resolution"):
        resolution_at(np.array([1.0, 0.9, np.nan, 0.5]), 48, 1.0)


# ------------------------------------------------------------------ 7. no GUI in programs
def test_programs_run_with_figures_on_a_python_without_tk(project, tmp_path):
    code = ("import sys; sys.modules['tkinter'] = None; sys.modules['_tkinter'] = None\n"
            "from polishplugin.programs import polish, bfactors\n"
            "a = sys.argv[1:]\n"
            "assert polish.main(a + ['--out', %r]) == 0\n"
            "assert bfactors.main(a + ['--polish', %r, '--out', %r]) == 0\n"
            "assert 'polishplugin.viewers' not in sys.modules\n"
            % (str(tmp_path / "P"), str(tmp_path / "P"), str(tmp_path / "B")))
    args = [a for a in _inputs(project / "sim") if a != "--no-figures"]
    env = dict(os.environ, DISPLAY=":99")  # a display that is not there must not matter
    env.pop("MPLBACKEND", None)
    res = subprocess.run([sys.executable, "-c", code] + args, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "P" / "logfile.pdf").exists() and (tmp_path / "B" / "logfile.pdf").exists()


# ------------------------------------------------------------------ 8. particle identities
def test_bfactors_matches_particles_by_identity_not_row(project, tmp_path):
    sim = _copy(project / "sim", tmp_path / "sim")
    blocks = read_star(sim / LAYOUT["particles"])
    parts = blocks["particles"]
    rows = np.flatnonzero([MIC1 in str(n) for n in parts["rlnMicrographName"]])
    order = np.arange(len(parts))
    order[rows[0]], order[rows[1]] = rows[1], rows[0]
    blocks["particles"] = parts.take(order)
    write_star(sim / LAYOUT["particles"], blocks)
    out = tmp_path / "B"
    assert bfactors.main(_bf(sim, project / "P", out)) == 0

    def images_by_coordinate(folder, root):
        t = read_star(folder / "particles.star")["particles"]
        result = {}
        for name, x, y in zip(t["rlnImageName"], t["rlnCoordinateX"], t["rlnCoordinateY"]):
            i, path = str(name).split("@")
            with mrcfile.open(os.path.join(root, path)) as m:
                result[(x, y)] = m.data[int(i) - 1].copy()
        return result
    ours = images_by_coordinate(out, sim)
    theirs = images_by_coordinate(project / "B", project / "sim")
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5)


def test_bfactors_refuses_particles_the_polishing_did_not_track(project, tmp_path, caplog):
    sim = _copy(project / "sim", tmp_path / "sim")
    blocks = read_star(sim / LAYOUT["particles"])
    parts = blocks["particles"]
    x = np.asarray(parts["rlnCoordinateX"], dtype=float).copy()
    names = [str(n) for n in parts["rlnImageName"]]
    names[0] = "000099@Extract/other.mrcs"
    x[0] += 3
    parts["rlnImageName"] = np.asarray(names, dtype=object)
    parts["rlnCoordinateX"] = x
    write_star(sim / LAYOUT["particles"], blocks)
    assert bfactors.main(_bf(sim, project / "P", tmp_path / "B")) == 2
    assert "not tracked by the polishing run" in caplog.text


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("option,value", [
    ("--sigma-vel", "0"), ("--sigma-vel", "-1"), ("--sigma-vel", "nan"), ("--sigma-div", "inf"),
    ("--sigma-acc", "nan"), ("--window", "-1"), ("--patch", "-2"), ("--first-frame", "0"),
    ("--last-frame", "1.5"), ("--backend", "cuda"),
    ("--threads", "0")])
def test_bad_option_is_refused_by_the_parser(project, tmp_path, capsys, option, value):
    out = tmp_path / "P"
    with pytest.raises(SystemExit) as exc:
        polish.main(_pol(project / "sim", out, option, value))
    assert exc.value.code == 2
    assert "argument %s" % option in capsys.readouterr().err
    assert not out.exists()


def test_bad_backend_from_the_environment_is_refused(project, tmp_path, monkeypatch):
    monkeypatch.setenv("POLISHPLUGIN_BACKEND", "cuda")
    with pytest.raises(SystemExit, match="POLISHPLUGIN_BACKEND: unknown backend 'cuda'"):
        polish.main(_pol(project / "sim", tmp_path / "P"))
    assert not (tmp_path / "P").exists()


@pytest.mark.parametrize("extra,message", [
    (("--window", "100000"), "--window 100000 does not fit"),
    (("--patch", "47"), "--patch must be 0"),
    (("--patch", "100000"), "--patch must be 0"),
    (("--first-frame", "8"), "frames 8--1 asked of movies of 8 frames"),
    (("--last-frame", "20"), "asked of movies of 8 frames"),
    (("--sigma-vel", "1e300"), "sigma_vel 1e\\+300 is .* outside the 1e-06-1e\\+06"),
    (("--sigma-acc", "1e300"), "sigma_acc 1e\\+300"),
    (("--sigma-vel", "1e-300"), "sigma_vel 1e-300"),
    (("--sigma-acc", "1e-150"), "sigma_acc 1e-150")])
def test_bad_size_is_refused_before_any_movie_is_read(project, tmp_path, extra, message):
    out = tmp_path / "P"
    with pytest.raises(SystemExit, match=message):
        polish.main(_pol(project / "sim", out, *extra))
    assert not out.exists()


@pytest.mark.parametrize("content", ["nan 5000 2", "0.2 inf 2", "0 5000 2", "0.2"])
def test_bad_params_file_is_refused(project, tmp_path, caplog, content):
    params = tmp_path / "opt_params.txt"
    params.write_text(content + "\n")
    out = tmp_path / "P"
    assert polish.main(_pol(project / "sim", out, "--params-file", str(params))) == 2
    assert str(params) in caplog.text
    assert not out.exists()


def test_bad_bfactors_options(project, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bfactors.main(_bf(project / "sim", project / "P", tmp_path / "B", "--bfac-maxres", "nan"))
    assert "argument --bfac-maxres" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="-1 \\(auto\\) or a resolution > 0"):
        bfactors.main(_bf(project / "sim", project / "P", tmp_path / "B", "--bfac-maxres", "0"))


def test_missing_file_message_names_the_folder_tried(project, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in _pol(project / "sim", tmp_path / "P")]
    i = args.index("--root")
    del args[i:i + 2]
    assert polish.main(args) == 2
    assert "relative to the current directory %s (no --root)" % tmp_path in caplog.text
    caplog.clear()
    star = tmp_path / "particles.star"  # the shiny particles named relative to the project
    _rename_images(project / "B" / "particles.star", star, project / "sim",
                   lambda p: os.path.relpath(project / "B" / p, project / "sim"))
    assert reconstruct.main(["--particles", str(star),
                             "--out", str(tmp_path / "R"), "--no-figures"]) == 2
    assert "relative to the current directory %s (no --root)" % tmp_path in caplog.text
