"""Shiny particles side by side with RELION 3.1.3 from the SAME tracks and the SAME FCC (issue 14).

    python benchmarks/shiny_vs_relion.py --work /tmp/svr [--micrographs 6 --size 1024
        --frames 24 --particles 40 --box 128 --pixel-size 1.2 --snrs 0.007 0.035
        --smooth 3 10 --threads 1]

For each particle SNR it simulates a RELION project (TIFF movies + gain, refined centres found
from the data), runs our polish once with the true sigmas, and then makes shiny particles from
those tracks in several ways, so that only the per-frame weighting (and the recombination code)
differs:
  RELION:       relion_motion_refine --combine_frames --only_do_unfinished given our tracks and
                our FCC sums under its names: its own B/k-factor fit (bfactors.star) and its
                recombination;
  ours:         bfactors program, the paper's fit (independent frames, as RELION);
  ours smooth:  bfactors --bfac-smooth TAU (smoothness prior on B and C across frames);
  ours, RELION's B-factors: bfactors --bfactors <RELION's bfactors.star> (our recombination with
                RELION's fit: separates the fit from the recombination);
  ours --no-defects: hot pixels and dead columns left in, as RELION's recombination leaves them.
With ``--own-tracks`` each program instead makes shiny particles end to end from its own tracks
and its own B-factor fit (the issue's comparison "from the same project"): RELION's motion
estimation with the true sigmas and with its GUI defaults (0.2/5000/2), each followed by its
--combine_frames; our polish with the true sigmas and with its default (--sigmas auto), each
followed by our bfactors; the tracks' errors against the truth are printed beside.
The particles cut by the simulator from the dose-weighted global-track sums ("extracted") are the
baseline. Every set goes through relion_reconstruct --ctf per half-set (the rlnRandomSubset of the
input, the same for all) and as a whole: half-map FSC 0.143, FSC vs the true map at 0.5 and
0.143, and the mean FSC vs truth over the shells between 10 and 4 A (all masked with the
simulation's mask). Prints a markdown table per SNR and writes results.json under --work.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from vs_relion import (GUI_DEFAULTS, errors, ours, relion_motion, sigmas_args, timed,  # noqa: E402
                       tracks_of)

from polishplugin.core import fourier  # noqa: E402
from polishplugin.io.mrc import read_mrc  # noqa: E402
from polishplugin.io.star import read_star  # noqa: E402
from polishplugin.programs.simulate import LAYOUT  # noqa: E402


def mean_fsc(curve, n, px, lo=10.0, hi=4.0):
    """Mean of an FSC curve over the shells k with lo >= n px / k >= hi (A)."""
    k = np.arange(len(curve))
    res = np.where(k > 0, n * px / np.maximum(k, 1), np.inf)
    sel = (res <= lo) & (res >= hi)
    return float(np.mean(curve[sel]))


def reconstruct(project, star, tag, truth, mask, px):
    maps, cpu = {}, 0.0
    os.makedirs(os.path.join(project, "Recon"), exist_ok=True)
    for sub in ("1", "2", "all"):
        out = os.path.join("Recon", "%s_%s.mrc" % (tag, sub))
        cmd = ["relion_reconstruct", "--i", star, "--o", out, "--ctf"] + \
            ([] if sub == "all" else ["--subset", sub])
        cpu += timed(cmd, project, os.path.join(project, out + ".log"))["cpu_s"]
        maps[sub] = read_mrc(os.path.join(project, out))[0]
    n = truth.shape[0]
    half = fourier.fsc(maps["1"] * mask, maps["2"] * mask)
    vs = fourier.fsc(maps["all"] * mask, truth * mask)
    return {"half_0143_A": fourier.resolution_at(half, n, px),
            "truth_05_A": fourier.resolution_at(vs, n, px, 0.5),
            "truth_0143_A": fourier.resolution_at(vs, n, px),
            "truth_mean_10_4": mean_fsc(vs, n, px), "recon_cpu_s": cpu}


def subsets(project, star):
    """Sorted (micrograph, x, y, half-set) of a particles STAR."""
    t = read_star(os.path.join(project, star))["particles"]
    return sorted((os.path.basename(m), round(float(x)), round(float(y)), int(h)) for m, x, y, h in
                  zip(t["rlnMicrographName"], t["rlnCoordinateX"], t["rlnCoordinateY"],
                      t["rlnRandomSubset"]))


def relion_from_our_fcc(project, polish_job, job, threads, sig, *extra):
    """RELION's fit + recombination of our tracks and FCC sums (copied under its names)."""
    movies = os.path.join(project, job, "Movies")
    os.makedirs(movies, exist_ok=True)
    for f in glob.glob(os.path.join(project, polish_job, "**", "*_tracks.star"), recursive=True) + \
            glob.glob(os.path.join(project, polish_job, "**", "*_FCC_*.mrc"), recursive=True):
        shutil.copy(f, movies)
    return relion_motion(project, job, threads, *sigmas_args(sig, True), "--combine_frames",
                         "--only_do_unfinished", *extra, log="recombine")


def per_frame(project, path):
    t = read_star(os.path.join(project, path))["perframe_bfactors"]
    return (np.asarray(t["rlnBfactorUsedForSharpening"], float),
            np.asarray(t["rlnFittedInterceptGuinierPlot"], float))


def run_snr(a, snr, work):
    project = os.path.join(work, "snr_%g" % snr)
    true = (a.sigma_vel, a.sigma_div, a.sigma_acc)
    if not os.path.exists(os.path.join(project, "truth", "truth.json")):
        cmd = [sys.executable, "-m", "polishplugin.programs.simulate", "--out", project,
               "--micrographs", a.micrographs, "--mic-size", a.size, "--frames", a.frames,
               "--particles", a.particles, "--box", a.box, "--pixel-size", a.pixel_size,
               "--snr", snr, "--sigma-vel", true[0], "--sigma-div", true[1], "--sigma-acc",
               true[2], "--seed", a.seed, "--tiff", "--no-figures"]
        subprocess.run([str(c) for c in cmd], check=True, env=dict(os.environ, PYTHONPATH=ROOT),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    T = a.threads
    if a.own_tracks:
        return own_tracks(a, snr, project)
    ours(project, "polish", "Polish/job031", T, *sigmas_args(true, False))
    sets = {"extracted (global track, dose-weighted sum)": (LAYOUT["particles"], None)}
    cost = {"ours": ours(project, "bfactors", "Shiny/job041", T, "--polish", "Polish/job031")}
    # our FCC sums are on the particle box's rings, as RELION's: the same range (A) fits the
    # same rings
    info = json.load(open(os.path.join(project, "Shiny/job041/bfactors.json")))
    cost["RELION"] = relion_from_our_fcc(
        project, "Polish/job031", "MotionRefine/job040", T, true, "--bfac_minfreq",
        info["low_res_A"], "--bfac_maxfreq", info["high_res_A"])
    sets["RELION (its fit of our FCC, its recombination)"] = (
        "MotionRefine/job040/shiny.star", "MotionRefine/job040/bfactors.star")
    sets["ours (paper's fit)"] = ("Shiny/job041/particles.star", "Shiny/job041/bfactors.star")
    for i, tau in enumerate(a.smooth):
        job = "Shiny/job%03d" % (50 + i)
        label = "ours --bfac-smooth %g" % tau
        cost[label] = ours(project, "bfactors", job, T, "--polish", "Polish/job031",
                           "--bfac-smooth", tau)
        sets[label] = (job + "/particles.star", job + "/bfactors.star")
    ours(project, "bfactors", "Shiny/job060", T, "--polish", "Polish/job031", "--no-defects")
    sets["ours --no-defects (hot pixels and dead columns kept, as RELION)"] = (
        "Shiny/job060/particles.star", "Shiny/job060/bfactors.star")
    ours(project, "bfactors", "Shiny/job042", T, "--polish", "Polish/job031", "--bfactors",
         "MotionRefine/job040/bfactors.star")
    sets["ours with RELION's bfactors.star"] = ("Shiny/job042/particles.star",
                                                 "MotionRefine/job040/bfactors.star")
    vol, _ = read_mrc(os.path.join(project, "truth", "volume.mrc"))
    mask, px = read_mrc(os.path.join(project, LAYOUT["mask"]))
    px = a.pixel_size
    ref = subsets(project, LAYOUT["particles"])
    rows = {}
    for i, (label, (star, bstar)) in enumerate(sets.items()):
        if subsets(project, star) != ref:
            raise SystemExit("%s: half-sets differ from the input's" % star)
        r = reconstruct(project, star, "set%d" % i, vol, mask, px)
        if bstar:
            b, c = per_frame(project, bstar)
            r["B"], r["C"] = b.tolist(), c.tolist()
        rows[label] = r
    return {"snr": snr, "rows": rows, "cost": cost}


def own_tracks(a, snr, project):
    """Each program end to end from its own tracks and its own B-factors (--own-tracks)."""
    true, T = (a.sigma_vel, a.sigma_div, a.sigma_acc), a.threads
    mics = json.load(open(os.path.join(project, "truth", "truth.json")))["micrographs"]
    truth = tracks_of(os.path.join(project, "truth"), mics)
    runs = {}       # label: (tracks folder, shiny STAR, bfactors STAR, motion cost, recombination)
    for label, job, sig in (
            ("RELION, true sigmas", "MotionRefine/job070", true),
            ("RELION, GUI defaults 0.2/5000/2", "MotionRefine/job071", GUI_DEFAULTS)):
        motion = relion_motion(project, job, T, *sigmas_args(sig, True))
        recomb = relion_motion(project, job, T, *sigmas_args(sig, True), "--combine_frames",
                               "--only_do_unfinished", log="recombine")
        runs[label] = (job, job + "/shiny.star", job + "/bfactors.star", motion, recomb)
    for label, pol, shiny, extra in (
            ("ours, true sigmas", "Polish/job072", "Shiny/job073", sigmas_args(true, False)),
            ("ours, default (--sigmas auto)", "Polish/job074", "Shiny/job075", [])):
        motion = ours(project, "polish", pol, T, *extra)
        recomb = ours(project, "bfactors", shiny, T, "--polish", pol)
        runs[label] = (pol, shiny + "/particles.star", shiny + "/bfactors.star", motion, recomb)
    vol, _ = read_mrc(os.path.join(project, "truth", "volume.mrc"))
    mask, _ = read_mrc(os.path.join(project, LAYOUT["mask"]))
    px = a.pixel_size
    ref = subsets(project, LAYOUT["particles"])
    rows = {"extracted (global track, dose-weighted sum)":
            reconstruct(project, LAYOUT["particles"], "own_extract", vol, mask, px)}
    for i, (label, (folder, star, bstar, motion, recomb)) in enumerate(runs.items()):
        if subsets(project, star) != ref:
            raise SystemExit("%s: half-sets differ from the input's" % star)
        r = reconstruct(project, star, "own%d" % i, vol, mask, px)
        r.update(errors(tracks_of(os.path.join(project, folder), mics), truth))
        r["motion_cpu_s"], r["recombine_cpu_s"] = motion["cpu_s"], recomb["cpu_s"]
        r["B"], r["C"] = [v.tolist() for v in per_frame(project, bstar)]
        rows[label] = r
    return {"snr": snr, "own_tracks": True, "rows": rows}


def print_own(r):
    print("\n### SNR %g, each program from its own tracks and B-factors\n" % r["snr"])
    print("| particles (relion_reconstruct --ctf) | track RMS / shape (A) | "
          "half-map FSC 0.143 (A) | vs truth FSC 0.5 (A) | vs truth FSC 0.143 (A) | "
          "mean FSC vs truth 10-4 A | motion + recombination CPU s |")
    print("|---|---|---|---|---|---|---|")
    for k, x in r["rows"].items():
        tr = "-" if "rms_A" not in x else "%.3f / %.3f" % (x["rms_A"], x["shape_A"])
        cpu = "-" if "motion_cpu_s" not in x else "%.1f + %.1f" % (x["motion_cpu_s"],
                                                                  x["recombine_cpu_s"])
        print("| %s | %s | %.2f | %.2f | %.2f | %.3f | %s |" % (
            k, tr, x["half_0143_A"], x["truth_05_A"], x["truth_0143_A"], x["truth_mean_10_4"],
            cpu))


def print_table(r):
    if r.get("own_tracks"):
        return print_own(r)
    print("\n### SNR %g\n" % r["snr"])
    print("| particles (relion_reconstruct --ctf) | half-map FSC 0.143 (A) | vs truth FSC 0.5 (A) | "
          "vs truth FSC 0.143 (A) | mean FSC vs truth 10-4 A | B jump (RMS 2nd diff., A^2) |")
    print("|---|---|---|---|---|---|")
    for k, x in r["rows"].items():
        jump = "-" if "B" not in x else "%.0f" % np.sqrt(np.mean(np.diff(x["B"], 2) ** 2))
        print("| %s | %.2f | %.2f | %.2f | %.3f | %s |" % (k, x["half_0143_A"], x["truth_05_A"],
                                                          x["truth_0143_A"], x["truth_mean_10_4"],
                                                          jump))
    rel = np.asarray(r["rows"]["RELION (its fit of our FCC, its recombination)"]["B"])
    for k, x in r["rows"].items():
        if "B" in x and "RELION" not in k:
            print("\n%s: B %s; correlation with RELION's B %.2f" % (
                k, " ".join("%.0f" % v for v in x["B"]), np.corrcoef(rel, x["B"])[0, 1]))
    print("\nRELION: B %s" % " ".join("%.0f" % v for v in rel))
    print("\nrecombination CPU s: " + ", ".join("%s %.1f" % (k, v["cpu_s"])
                                              for k, v in r["cost"].items()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--micrographs", type=int, default=6)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--particles", type=int, default=40, help="per micrograph")
    p.add_argument("--box", type=int, default=128)
    p.add_argument("--pixel-size", type=float, default=1.2)
    p.add_argument("--snrs", type=float, nargs="+", default=[0.007, 0.035])
    p.add_argument("--smooth", type=float, nargs="*", default=[3.0, 10.0],
                   help="--bfac-smooth values tried")
    p.add_argument("--sigma-vel", type=float, default=0.5)
    p.add_argument("--sigma-div", type=float, default=5000.0)
    p.add_argument("--sigma-acc", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--own-tracks", action="store_true",
                   help="each program from its own tracks and B-factors (see above)")
    a = p.parse_args()
    for prog in ("relion_motion_refine", "relion_reconstruct", "/usr/bin/time"):
        if shutil.which(prog) is None:
            raise SystemExit("shiny_vs_relion: %s not found" % prog)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    res = []
    for snr in a.snrs:
        res.append(run_snr(a, snr, work))
        with open(os.path.join(work, "results.json"), "w") as fh:
            json.dump({"args": vars(a), "results": res}, fh, indent=1)
        print_table(res[-1])
    print("\n%d micrographs %d^2 x %d frames, %d particles each, box %d at %.2f A/px, true sigmas "
          "%g/%g/%g, %d thread(s)" % (a.micrographs, a.size, a.frames, a.particles, a.box,
                                      a.pixel_size, a.sigma_vel, a.sigma_div, a.sigma_acc,
                                      a.threads))
    for r in res:
        print_table(r)


if __name__ == "__main__":
    main()
