"""Run a command and report the peak memory of its whole process tree (the program and any
worker processes it forks), sampled every --every seconds from /proc: the peak of the summed
RSS (pages a forked worker shares with its parent counted once per process: an upper bound),
of the tree's own pages (the first process's RSS plus each descendant's private pages: what
the tree holds, comparable with one process's RSS) and of the summed PSS (shared pages,
libraries included, split with every process sharing them, also outside the tree), with wall
time and user + sys CPU seconds of the tree (wait4). MB = 1000 KiB (as /usr/bin/time's %M /
1000). Usage:

    python benchmarks/tree_memory.py [--every 0.05] -- python -m polishplugin.programs.polish ...
"""
import argparse
import os
import subprocess
import sys
import time


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def kb(pid, path, key):
    try:
        with open("/proc/%d/%s" % (pid, path)) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=float, default=0.05)
    ap.add_argument("--label", default="run")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    rss = own = pss = procs = 0
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        ps = tree(proc.pid)
        procs = max(procs, len(ps))
        rss = max(rss, sum(kb(p, "status", "VmRSS:") for p in ps))
        pss = max(pss, sum(kb(p, "smaps_rollup", "Pss:") for p in ps))
        own = max(own, kb(ps[0], "status", "VmRSS:") + sum(
            kb(p, "smaps_rollup", "Private_Clean:") + kb(p, "smaps_rollup", "Private_Dirty:")
            for p in ps[1:]))
        time.sleep(a.every)
    wall = time.time() - t0
    code = os.waitstatus_to_exitcode(status)
    print("%s: wall %.2f user %.2f sys %.2f peak MB: own %.0f summed RSS %.0f PSS %.0f "
          "(processes %d) exit %d" % (a.label, wall, ru.ru_utime, ru.ru_stime, own / 1000.0,
                                      rss / 1000.0, pss / 1000.0, procs, code), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
