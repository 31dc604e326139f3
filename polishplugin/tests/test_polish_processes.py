"""polish --threads >= 2: worker processes forked after the projector setup take the
micrographs one at a time; same tracks and FCC sums as one thread, a failing micrograph recorded
while the others finish, a killed worker's micrograph recorded, a killed job resumable."""
import argparse
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from polishplugin.io.star import read_tracks_star
from polishplugin.programs import parallel, polish, simulate
from polishplugin.programs.cli import PARTIAL
from polishplugin.tests.killed import kill_after_first


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("procs")
    simulate.main(["--out", str(d / "sim"), "--micrographs", "3", "--mic-size", "256",
                   "--frames", "8", "--particles", "6", "--box", "48", "--no-figures",
                   "--seed", "3"])
    return d / "sim"


def _args(sim, out, *extra):
    f = simulate.project_files(sim)
    return ["--particles", f["particles"], "--mics", f["mics"], "--postprocess",
            f["postprocess"], "--root", str(sim), "--no-figures", "--out", str(out)] + list(extra)


def _run(sim, out, *extra):
    """The program in a fresh interpreter (numba's threads not started: workers can fork)."""
    cmd = [sys.executable, "-m", "polishplugin.programs.polish"] + _args(sim, out, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _results(out):
    """Tracks STAR files (bytes) and FCC sums (MRC data: the header holds a time stamp)."""
    import mrcfile
    files = sorted(p for d in ("tracks", "fcc") for p in (out / d).rglob("*")
                   if p.is_file())
    return {p.relative_to(out): p.read_bytes() if p.suffix == ".star" else
            mrcfile.read(p).tobytes() for p in files}


@pytest.fixture(scope="module")
def serial(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "P"
    res = _run(sim, out, "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "worker processes" not in res.stderr
    return out


def test_workers_give_the_bits_of_one_thread(sim, serial, tmp_path):
    out = tmp_path / "P"
    res = _run(sim, out, "--threads", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 worker processes of 1 thread(s)" in res.stderr
    pids = {line.split("pid ")[1].split("]")[0] for line in res.stderr.splitlines()
            if "particles," in line and "pid " in line}
    assert len(pids) == 2                       # both processes polished micrographs
    ours, theirs = _results(out), _results(serial)
    assert len(ours) == 3 * 4 and ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == theirs[k], k           # the same bytes


def test_a_failing_micrograph_is_recorded_while_the_others_finish(sim, serial, tmp_path):
    import shutil
    out = tmp_path / "P"
    shutil.copytree(serial, out)
    stem = os.path.join(simulate.LAYOUT["mic_dir"], "sim_0001")
    for p in out.rglob("*_tracks.star"):
        p.unlink()
    (out / "diag" / (stem + ".json")).unlink()
    (out / "diag" / (stem + ".json")).mkdir()     # its diag cannot be written
    res = _run(sim, out, "--threads", "2")
    assert res.returncode == PARTIAL, res.stderr[-2000:]
    failed = (out / "failed.txt").read_text().splitlines()
    assert len(failed) == 1 and "sim_0001" in failed[0] and "IsADirectoryError" in failed[0]
    done = sorted(p.name for p in out.rglob("*_tracks.star"))
    assert done == ["sim_0000_tracks.star", "sim_0002_tracks.star"]


def test_killed_job_with_workers_resumes_to_the_same_tracks(sim, serial, tmp_path):
    """kill -9 of the job once a micrograph is done: its workers die with it (the re-run gets
    the folder's lock at once) and the re-run gives the uninterrupted tracks."""
    out = tmp_path / "P"
    kill_after_first("polish", _args(sim, out, "--threads", "2"), out)
    res = _run(sim, out, "--threads", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    ours, theirs = _results(out), _results(serial)
    assert ours.keys() == theirs.keys()
    for k in ours:
        if k.parts[0] == "tracks":
            np.testing.assert_array_equal(read_tracks_star(out / k), read_tracks_star(serial / k))


def _work(folder, die):
    def work(i):
        if i == die:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(os.path.join(folder, "%d.%d" % (i, os.getpid())), "w"):
            pass
        time.sleep(0.05)
    return work


def test_each_item_once_and_a_killed_workers_item_reported(tmp_path):
    """6 items over 3 processes: every item done exactly once; the item whose process was killed
    is returned with the signal (this process's own item raises instead)."""
    lost = parallel.for_each_in_processes(6, _work(str(tmp_path), -1), 3)
    names = os.listdir(tmp_path)
    assert lost == {} and sorted(int(n.split(".")[0]) for n in names) == list(range(6))
    assert len({n.split(".")[1] for n in names}) > 1            # shared out
    for n in names:
        os.remove(tmp_path / n)

    def wait():                  # this process starts once the children did 3 items (and 2)
        t0 = time.time()
        while len(os.listdir(tmp_path)) < 3 and time.time() - t0 < 60:
            time.sleep(0.01)
    lost = parallel.for_each_in_processes(6, _work(str(tmp_path), 2), 3, before_work=wait)
    assert lost == {2: "its worker process was killed by signal 9"}
    assert sorted(int(n.split(".")[0]) for n in os.listdir(tmp_path)) == [0, 1, 3, 4, 5]

    def bad(i):
        if i == 1:
            raise ValueError("item %d" % i)
    with pytest.raises(ValueError, match="item 1"):      # this process's own error is raised
        parallel.for_each_in_processes(3, bad, 1)


def test_a_lost_micrograph_is_listed_with_its_reason(sim, tmp_path, monkeypatch):
    """polish_all records what for_each_in_processes reports lost (here stood in for: this
    process does the work, micrograph 1 is 'killed')."""
    def fake(count, work, processes, after_fork=None, before_work=None):
        assert processes == 2
        before_work()
        for i in range(count):
            if i != 1:
                work(i)
        return {1: "its worker process was killed by signal 9"}
    monkeypatch.setattr(polish, "for_each_in_processes", fake)
    monkeypatch.setattr(polish, "numba_threads_started", lambda: False)
    out = tmp_path / "P"
    assert polish.main(_args(sim, out, "--threads", "2")) == PARTIAL
    failed = (out / "failed.txt").read_text().splitlines()
    assert len(failed) == 1
    assert "sim_0001.mrc\tRuntimeError: its worker process was killed by signal 9" in failed[0]
    assert len(list(out.rglob("*_tracks.star"))) == 2


def test_worker_count(monkeypatch):
    class Comm:
        size = 1
    started = [False]
    monkeypatch.setattr(polish, "numba_threads_started", lambda: started[0])
    a = argparse.Namespace(processes=0, threads=4, backend="numba")
    assert polish.worker_processes(a, Comm, 5) == 2          # auto: 2
    assert polish.worker_processes(a, Comm, 1) == 1          # one micrograph to do
    a.processes = 3
    assert polish.worker_processes(a, Comm, 5) == 3
    a.threads = 1
    assert polish.worker_processes(a, Comm, 5) == 1          # at most --threads
    a.threads, a.backend = 4, "opencl"
    assert polish.worker_processes(a, Comm, 5) == 1          # its context is not forked
    a.backend = "numba"
    Comm.size = 2
    assert polish.worker_processes(a, Comm, 5) == 1          # MPI: the ranks are the processes
    Comm.size = 1
    started[0] = True
    assert polish.worker_processes(a, Comm, 5) == 1          # a fork would kill the workers


def _serial_workers(count, work, processes, after_fork=None, before_work=None):
    """for_each_in_processes done by this process (the fork of the workers stood in for)."""
    before_work()
    for i in range(count):
        work(i)
    return {}


def test_workers_start_only_on_whole_projectors(sim, serial, tmp_path, monkeypatch):
    """With workers, the projectors' transforms are built by a forked process into shared memory
    while this one preloads; the work starts only once that process has ended: a build that
    leaves the transforms unwritten (zeros) for a second still gives the tracks of one thread;
    a build that fails stops the job before any micrograph (never a half-built projector)."""
    import shutil
    from polishplugin.core import predict
    real = predict.make_projectors

    def slow(*args, **kw):
        time.sleep(1.0 if kw.get("out") is not None else 0.0)
        return real(*args, **kw)
    monkeypatch.setattr(predict, "make_projectors", slow)
    monkeypatch.setattr(polish, "for_each_in_processes", _serial_workers)
    monkeypatch.setattr(polish, "numba_threads_started", lambda: False)
    out = tmp_path / "P"
    assert polish.main(_args(sim, out, "--threads", "2")) == 0
    ours, theirs = _results(out), _results(serial)
    assert len(ours) == 3 * 4 and ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == theirs[k], k

    def broken(*args, **kw):
        if kw.get("out") is not None:
            kw["out"][1][:2] = 1.0          # half written, then the build fails
            raise MemoryError("stood in for")
        return real(*args, **kw)
    monkeypatch.setattr(predict, "make_projectors", broken)
    shutil.rmtree(out)
    with pytest.raises(RuntimeError, match="filling shared arrays .* exit status 1"):
        polish.main(_args(sim, out, "--threads", "2"))
    assert not list(out.rglob("*_tracks.star"))
