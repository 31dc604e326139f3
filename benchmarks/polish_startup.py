"""Start-up of the polish program: what it spends before its first micrograph (with worker
processes: before it forks them) and after its last one (issue 14, wt-fork). For each round,
checkout (--codes, each put first on PYTHONPATH) and --threads value, the program runs in a fresh
interpreter through this script, which reports:

- setup: wall seconds from the process start to the first micrograph or the fork of the workers,
  and CPU seconds until then (this process and the processes it waited for: the projector
  process of --threads >= 2), and the seconds and number of the cyclic GC's collections in it
  (gc.callbacks); the program is stopped there (os._exit) unless --full;
- with --full the whole job runs, and "exit" is the wall time from main() returning to the end of
  the process (the interpreter's clean-up), measured from this script's parent.

The --out folder is deleted before each run. Run from a project folder (benchmarks/vs_relion.py
--speed makes one), e.g.

    python benchmarks/polish_startup.py --codes /tmp/base . --threads 1 2 --rounds 5 -- \
        --particles Refine3D/job010/run_data.star \
        --mics MotionCorr/job002/corrected_micrographs.star \
        --postprocess PostProcess/job012/postprocess.star --no-figures \
        --sigma-vel 0.5 --sigma-div 5000 --sigma-acc 2 --out Polish/startup
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def _process_start():
    """Wall-clock time at which this process started (from /proc)."""
    with open("/proc/self/stat") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as fh:
        up = float(fh.read().split()[0])
    return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))


def child(argv, full):
    """Run polish with argv in this process, print one JSON line of the measures."""
    import gc
    t_start = _process_start()
    spent = {"n": 0, "s": 0.0}
    began = []

    def timer(phase, info):
        if phase == "start":
            began.append(time.perf_counter())
        elif began:
            spent["n"] += 1
            spent["s"] += time.perf_counter() - began.pop()
    gc.callbacks.append(timer)
    from polishplugin.programs import polish
    report = {}

    def setup_done():
        if report:
            return
        t = os.times()
        report.update(setup_wall=time.time() - t_start,
                      setup_cpu=t.user + t.system + t.children_user + t.children_system,
                      gc_collections=spent["n"], gc_s=spent["s"])
        if not full:
            print(json.dumps(report), flush=True)
            os._exit(0)

    for name in ("for_each_in_processes", "for_each_micrograph"):
        real = getattr(polish, name)

        def stop(*a, _real=real, **k):
            setup_done()
            return _real(*a, **k)
        setattr(polish, name, stop)
    status = polish.main(argv)
    report["returned"] = time.time()
    print(json.dumps(report), flush=True)
    return status


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes", nargs="+", default=["."], help="checkouts to measure")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--full", action="store_true", help="run the whole job (exit time)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("polish_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = [x for x in a.polish_args if x != "--"]
    if a.child:
        return child(args, a.full)
    if "--out" not in args:
        raise SystemExit("give polish's --out (deleted before each run)")
    out = args[args.index("--out") + 1]
    rows = {}
    print("load average %s" % open("/proc/loadavg").read().split()[:3])
    for r in range(a.rounds):
        for code in a.codes:
            for t in a.threads:
                env = dict(os.environ, PYTHONPATH=os.path.abspath(code))
                cmd = [sys.executable, os.path.abspath(__file__), "--child"] + \
                    (["--full"] if a.full else []) + ["--"] + args + ["--threads", str(t)]
                shutil.rmtree(out, ignore_errors=True)      # every run does all micrographs
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                end = time.time()
                lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
                if not lines:
                    print(res.stderr[-2000:])
                    raise SystemExit("no report from %s" % cmd)
                m = json.loads(lines[-1])
                if a.full:
                    m["exit_s"] = end - m.pop("returned")
                rows.setdefault((code, t), []).append(m)
                print("round %d %s t=%d %s" % (r + 1, code, t, " ".join(
                    "%s %.3f" % kv for kv in sorted(m.items()))), flush=True)
    print("load average %s" % open("/proc/loadavg").read().split()[:3])
    for (code, t), ms in rows.items():
        print("median %s t=%d: %s" % (code, t, " ".join(
            "%s %.3f" % (k, statistics.median(m[k] for m in ms)) for k in sorted(ms[0]))))


if __name__ == "__main__":
    sys.exit(main())
