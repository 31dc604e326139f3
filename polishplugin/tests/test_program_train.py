"""The training program end to end on a tiny simulation: parseable RELION-style opt_params, a
trace with every evaluation, per-restart subsets chosen as RELION does, bad input refused."""
import json

import numpy as np
import pytest

from polishplugin.core.motion.training import choose_subset, parse_opt_params
from polishplugin.io.star import read_star
from polishplugin.programs import simulate, train
from polishplugin.tests.mpi import needs_mpirun, run_under_mpirun


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate.main(["--out", str(out), "--micrographs", "4", "--mic-size", "320", "--frames", "8",
                   "--particles", "6", "--box", "48", "--pixel-size", "1.5", "--snr", "0.5",
                   "--no-figures", "--seed", "3"])
    return out


def _args(sim, out, *extra):
    return ["--particles", simulate.project_files(sim)["particles"],
            "--mics", simulate.project_files(sim)["mics"],
            "--postprocess", simulate.project_files(sim)["postprocess"], "--root", str(sim),
            "--out", str(out), "--min-particles", "10", "--restarts", "2", "--max-evals", "10",
            "--eval-max-res", "7"] + list(extra)


def test_train_writes_params_trace_and_report(sim, tmp_path):
    out = tmp_path / "train"
    assert train.main(_args(sim, out, "--method", "tcc")) == 0
    s_vel, s_div, s_acc = parse_opt_params((out / train.OPT_PARAMS).read_text())
    report = json.loads((out / "train.json").read_text())
    assert report["method"] == "tcc"
    # the file holds the geometric mean of the per-restart optima
    optima = np.array([r["sigmas"] for r in report["restarts"]])
    np.testing.assert_allclose([s_vel, s_div, s_acc], np.exp(np.log(optima).mean(axis=0)),
                               rtol=1e-5)
    np.testing.assert_allclose(report["spread"], optima.max(0) / optima.min(0), rtol=1e-9)
    # subsets as RELION chooses them, one seed per restart
    counts = {simulate.LAYOUT["mic_dir"] + "/sim_%04d.mrc" % i: 6 for i in range(4)}
    names = {n.split("/")[-1]: n for r in report["restarts"] for n in r["micrographs"]}
    for r, seed in zip(report["restarts"], (23, 24)):
        assert r["seed"] == seed and r["particles"] >= 10
        want = choose_subset({names.get(k.split("/")[-1], k): v for k, v in counts.items()}, 10,
                             rng=seed)
        assert r["micrographs"] == want
        assert set(r["flatness"]) == {"sigma_vel", "sigma_div", "sigma_acc"}
    trace = read_star(out / "trace.star")["evaluations"]
    assert len(trace) == report["n_evaluations"]
    kinds = np.asarray(trace["rlnPolishTrainKind"]).astype(str)
    restart = np.asarray(trace["rlnPolishTrainRestart"])
    for r, info in enumerate(report["restarts"]):
        assert np.sum((restart == r) & (kinds == "simplex")) == info["n_evals"]
        assert np.sum((restart == r) & (kinds == "flatness")) == 12
        best = np.max(np.asarray(trace["rlnPolishTrainTcc"])[(restart == r) & (kinds == "simplex")])
        assert best == pytest.approx(info["tcc"])
    assert report["memory"]["peak_held_bytes"] > 0
    assert (out / "logfile.pdf").stat().st_size > 1000


def test_no_fit_acc_writes_disabled_acceleration(sim, tmp_path):
    out = tmp_path / "train2"
    assert train.main(_args(sim, out, "--method", "tcc", "--no-fit-acc", "--restarts", "1",
                            "--no-figures")) == 0
    s_vel, s_div, s_acc = parse_opt_params((out / train.OPT_PARAMS).read_text())
    assert s_vel > 0 and s_div > 0 and s_acc == -1.0
    report = json.loads((out / "train.json").read_text())
    assert set(report["restarts"][0]["flatness"]) == {"sigma_vel", "sigma_div"}


def test_bad_arguments_are_refused_before_work(sim, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(_args(sim, tmp_path / "x", "--min-particles", "1"))
    assert "--min-particles: '1' must be an integer >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="postprocess"):
        train.main(["--particles", simulate.project_files(sim)["particles"], "--mics", "m.star",
                    "--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists()


@needs_mpirun
def test_mpi_training_follows_the_serial_optimisation(sim, tmp_path):
    """Two ranks each hold half of the micrographs; the gathered TCC sums make every evaluation,
    and so the whole Nelder-Mead path and the optimum, those of one process."""
    serial, par = tmp_path / "serial", tmp_path / "mpi"
    extra = ("--method", "tcc", "--restarts", "1", "--no-figures")
    assert train.main(_args(sim, serial, *extra)) == 0
    res = run_under_mpirun("train", _args(sim, par, *extra))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "on 2 process(es)" in res.stderr
    a = read_star(serial / "trace.star")["evaluations"]
    b = read_star(par / "trace.star")["evaluations"]
    assert len(a) == len(b) > 10
    np.testing.assert_allclose(b["rlnPolishTrainTcc"], a["rlnPolishTrainTcc"], rtol=1e-9)
    report = json.loads((par / "train.json").read_text())
    assert report["processes"] == 2
    assert report["memory"]["peak_held_bytes"] == \
        json.loads((serial / "train.json").read_text())["memory"]["peak_held_bytes"]
    np.testing.assert_allclose(parse_opt_params((par / train.OPT_PARAMS).read_text()),
                               parse_opt_params((serial / train.OPT_PARAMS).read_text()),
                               rtol=1e-6)


def test_evidence_method_is_the_default_and_writes_params_spread_and_figure(sim, tmp_path):
    out = tmp_path / "train_ev"
    assert train.main(_args(sim, out)) == 0
    sig = np.array(parse_opt_params((out / train.OPT_PARAMS).read_text()))
    report = json.loads((out / "train.json").read_text())
    optima = np.array([r["sigmas"] for r in report["restarts"]])
    assert report["method"] == "evidence" and len(optima) == 2
    np.testing.assert_allclose(sig, np.exp(np.log(optima).mean(axis=0)), rtol=1e-5)
    np.testing.assert_allclose(report["spread"], optima.max(0) / optima.min(0), rtol=1e-9)
    for r in report["restarts"]:
        assert len(r["evidence_spread"]) == 3 and r["n_evals"] > 10
        assert all(w is None or w >= 1.0 for w in r["evidence_spread"])
    assert report["n_evaluations"] == sum(r["n_evals"] for r in report["restarts"])
    assert report["frames"] == 8 and report["processes"] == 1
    # the simulation's motion is 0.5 / 5000 / 2 (simulate's defaults): sigma_vel is found
    assert 0.2 < sig[0] < 1.5, sig
    assert not (out / "trace.star").exists()
    assert (out / "logfile.pdf").stat().st_size > 1000
    assert (out / "figures" / "train_optima.png").exists()
    assert not (out / "figures" / "train_tcc.png").exists()


def test_evidence_without_acceleration_reports_it_off(sim, tmp_path):
    out = tmp_path / "train_ev2"
    assert train.main(_args(sim, out, "--no-fit-acc", "--restarts", "1", "--no-figures")) == 0
    assert parse_opt_params((out / train.OPT_PARAMS).read_text())[2] == -1.0
    report = json.loads((out / "train.json").read_text())
    assert report["spread"][2] is None and report["restarts"][0]["evidence_spread"][2] is None


def _openblas_threads():
    """numpy's OpenBLAS thread count getter, or None without OpenBLAS."""
    import ctypes
    with open("/proc/self/maps") as fh:
        libs = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln})
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    return getattr(lib, "openblas_get_num_threads64_", None) or lib.openblas_get_num_threads


def test_each_movie_is_read_once(sim, tmp_path, monkeypatch):
    """Every frame of every movie of the subsets is read exactly once (the defect search's sum is
    taken in the same pass; a movie used by both restarts is kept, not read again), also with
    the read-ahead thread of --threads 2; numpy's BLAS is then single-threaded (the reading's
    particle blocks run in threads)."""
    import collections

    from polishplugin.io.movies import Movie
    from polishplugin.programs.parallel import set_blas_threads
    blas = _openblas_threads()
    before = blas() if blas else None
    if blas:
        set_blas_threads(2)
    reads = collections.Counter()

    def counting(method):       # a frame is read as floats (frame) or as samples (pieces)
        def counted(self, i):
            reads[(self.path, i)] += 1
            return method(self, i)
        return counted
    monkeypatch.setattr(Movie, "frame", counting(Movie.frame))
    monkeypatch.setattr(Movie, "pieces", counting(Movie.pieces))
    out = tmp_path / "train_once"
    try:
        assert train.main(_args(sim, out, "--no-figures", "--threads", "2")) == 0
        assert blas is None or blas() == 1
    finally:
        if blas:
            set_blas_threads(before)
    report = json.loads((out / "train.json").read_text())
    used = {n.split("/")[-1] for r in report["restarts"] for n in r["micrographs"]}
    assert len(used) >= 2
    per_movie = collections.Counter(p for p, _ in reads)
    assert len(per_movie) == len(used)
    assert set(per_movie.values()) == {8}           # every frame of each movie ...
    assert set(reads.values()) == {1}               # ... once
