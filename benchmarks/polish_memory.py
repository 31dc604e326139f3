"""Peak memory and CPU of the polish program against particles per micrograph and micrographs
(issue 14). In a project made by ``benchmarks/vs_relion.py --speed`` (Refine3D/job010,
MotionCorr/job002, PostProcess/job012), for each ``K:M`` of ``--runs``: a particles STAR with K
copies of every particle (the copies moved by up to 2 px, so that each sits on real signal and
the fit, window and iterations stay those of a real job) and a micrographs STAR of the first M
micrographs; then the program under ``/usr/bin/time`` (peak RSS, user + sys CPU, wall). Prints
one line per run. From the project folder::

    python benchmarks/polish_memory.py --runs 1:1 1:4 4:1 4:4 10:1 10:4 [-- --spectra-memory 1000]

Arguments after ``--`` go to the polish program (default: the true sigmas of the simulation,
``--sigma-vel 0.5 --sigma-div 5000 --sigma-acc 2``; ``--sigmas auto`` for the default job).
``--against PREFIX``: also print the largest track difference (A) from the same run under that
output prefix (e.g. made by another version of the code).
"""
import argparse
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTICLES = "Refine3D/job010/run_data.star"
MICS = "MotionCorr/job002/corrected_micrographs.star"
POST = "PostProcess/job012/postprocess.star"


def more_particles(src, dst, k, seed=1):
    """``src`` with every particle row repeated k times, the copies renamed and moved by
    uniform(-2, 2) px in x and y."""
    rng = random.Random(seed)
    out = []
    for line in open(src).read().splitlines():
        t = line.split()
        if len(t) > 4 and "@" in t[0] and not line.startswith("_"):
            for j in range(k):
                u = list(t)
                if j:
                    num, stack = t[0].split("@", 1)
                    u[0] = "%06d@%s" % (int(num) + 100000 * j, stack)
                    u[2] = "%.1f" % (float(t[2]) + rng.uniform(-2, 2))
                    u[3] = "%.1f" % (float(t[3]) + rng.uniform(-2, 2))
                out.append(" ".join(u))
        else:
            out.append(line)
    with open(dst, "w") as fh:
        fh.write("\n".join(out) + "\n")


def first_micrographs(src, dst, m):
    """``src`` (a RELION 3.1 micrographs STAR) with only its first m micrograph rows."""
    lines, out, seen = open(src).read().splitlines(), [], 0
    in_mics = False
    for line in lines:
        if line.startswith("data_micrographs"):
            in_mics = True
        t = line.split()
        if in_mics and t and not line.startswith(("_", "loop_", "data_", "#")):
            seen += 1
            if seen > m:
                continue
        out.append(line)
    with open(dst, "w") as fh:
        fh.write("\n".join(out) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", nargs="+", default=["1:1", "1:4"], help="K:M pairs")
    p.add_argument("--out", default="Polish/memory", help="output folders' prefix")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--against", help="output prefix of runs to compare the tracks with")
    a = p.parse_args(argv)
    extra = extra or ["--sigma-vel", "0.5", "--sigma-div", "5000", "--sigma-acc", "2"]
    env = dict(os.environ, PYTHONPATH=HERE)
    for run in a.runs:
        k, m = (int(v) for v in run.split(":"))
        parts, mics = "%s_x%d.star" % (a.out, k), "%s_m%d.star" % (a.out, m)
        os.makedirs(os.path.dirname(parts) or ".", exist_ok=True)
        more_particles(PARTICLES, parts, k)
        first_micrographs(MICS, mics, m)
        out = "%s_x%d_m%d" % (a.out, k, m)
        cmd = ["/usr/bin/time", "-f", "wall %e user %U sys %S rss_kB %M", a.python, "-m",
               "polishplugin.programs.polish", "--particles", parts, "--mics", mics,
               "--postprocess", POST, "--allow-missing", "--no-figures", "--threads", "1",
               "--fresh", "--out", out] + extra
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = res.stderr.strip().splitlines()[-1]
        if a.against:
            line += "; max |track difference| %s A" % track_difference(
                out, "%s_x%d_m%d" % (a.against, k, m))
        print("x%d particles, %d micrographs: %s" % (k, m, line), flush=True)
    return 0


def track_difference(out, other):
    """Largest |difference| (A) between the tracks of two polish output folders."""
    import glob
    import numpy as np
    sys.path.insert(0, HERE)
    from polishplugin.io.star import read_tracks_star
    worst = 0.0
    for path in glob.glob(os.path.join(out, "tracks", "**", "*_tracks.star"), recursive=True):
        twin = os.path.join(other, os.path.relpath(path, out))
        worst = max(worst, float(np.abs(np.asarray(read_tracks_star(path))
                                        - np.asarray(read_tracks_star(twin))).max()))
    return "%.3g" % worst


if __name__ == "__main__":
    sys.exit(main())
