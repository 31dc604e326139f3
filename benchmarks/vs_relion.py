"""Side by side with relion_motion_refine (RELION 3.1.3, the reference implementation): issue 9.

    python benchmarks/vs_relion.py --work /tmp/vsr [--micrographs 8 --size 2048 --frames 32
        --particles 50 --box 160 --snrs 0.007 0.035 --threads 2] [--speed --speed-threads 1 2]

For each particle SNR it simulates a RELION project (TIFF movies + gain, job folders, refined
centres found from the data, true sigmas --sigma-vel/--sigma-div/--sigma-acc) and runs, in the
project directory, one after the other:
  RELION: motion estimation with the GUI's default sigmas (0.2/5000/2, = ours), with the true
          sigmas, and with the sigmas its own training (--params3) finds; recombination of the
          true-sigma tracks (--combine_frames, its own B-factors);
  ours:   polish with the defaults (sigmas chosen per micrograph, --sigmas auto), RELION's
          defaults (--sigmas relion-defaults), the true sigmas (exact likelihood, and --cc-scale
          relion), the sigmas our TCC training finds (--restarts 1 --max-evals 40 by default:
          one simplex run, capped because on small sets the sigmas run away and each evaluation
          grows slower) and those of train --method evidence (--evidence-restarts); bfactors
          (shiny particles) on the true-sigma tracks unless --no-shiny.
--relion-only runs the simulation and RELION's rows alone (to start them early; the script is
resumable, finished rows are not re-run).
Each program is a separate process measured with /usr/bin/time: CPU = user + sys of the whole
process (imports, JIT, I/O included), peak RSS, wall. Other jobs may share the cores, so the fair
measure is CPU-seconds, not wall time. Tracks are compared with the truth (RMS over particles and
frames, A; "shape" removes each particle's mean offset; "global" compares the per-micrograph mean
track). Shiny particles of both, and the extracted ones, are reconstructed by relion_reconstruct
(CTF on) per half-set and as a whole: half-map FSC 0.143 and FSC 0.5 against the true map
(masked). Prints one markdown table per SNR and writes results.json under --work.
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

from polishplugin.core import fourier  # noqa: E402
from polishplugin.io.mrc import read_mrc  # noqa: E402
from polishplugin.io.polish_inputs import load_polish_inputs  # noqa: E402
from polishplugin.io.star import read_star, read_tracks_star  # noqa: E402
from polishplugin.programs.simulate import LAYOUT  # noqa: E402

GUI_DEFAULTS = (0.2, 5000.0, 2.0)   # RELION's GUI and tutorial defaults = ours


def timed(cmd, cwd, log):
    """Run ``cmd`` in ``cwd``; (wall s, CPU s = user + sys, peak RSS MB) of the whole process.
    A run whose cost file (``log`` + .cost.json) exists is not repeated (resumable benchmark)."""
    done = log + ".cost.json"
    if os.path.exists(done):
        return json.load(open(done))
    tfile = os.path.join(cwd, ".time_%d" % os.getpid())
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(log, "w") as fh:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile] + cmd, cwd=cwd,
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise SystemExit("failed (%d): %s\nsee %s" % (proc.returncode, " ".join(cmd), log))
    wall, user, sys_, rss = open(tfile).read().split()[-4:]
    os.remove(tfile)
    cost = {"wall_s": float(wall), "cpu_s": float(user) + float(sys_), "rss_mb": float(rss) / 1024}
    with open(done, "w") as fh:
        json.dump(cost, fh)
    return cost


def relion_motion(project, job, threads, *extra, log="run"):
    cmd = ["relion_motion_refine", "--i", LAYOUT["particles"], "--f", LAYOUT["postprocess"],
           "--corr_mic", LAYOUT["mics"], "--first_frame", "1", "--last_frame", "-1",
           "--o", job + "/", "--j", str(threads)] + [str(e) for e in extra]
    folder, log = os.path.join(project, job), os.path.join(project, job, log + ".log")
    if not os.path.exists(log + ".cost.json"):   # a fresh run: no outputs of an earlier one
        if extra and "--combine_frames" in extra:
            for f in glob.glob(os.path.join(folder, "**", "*shiny*"), recursive=True) + \
                    glob.glob(os.path.join(folder, "bfactors.star")):
                os.remove(f)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    return timed(cmd, project, log)


def ours(project, program, job, threads, *extra):
    cmd = [sys.executable, "-m", "polishplugin.programs." + program, "--particles",
           LAYOUT["particles"], "--mics", LAYOUT["mics"], "--postprocess", LAYOUT["postprocess"],
           "--out", job, "--threads", str(threads), "--no-figures"] + [str(e) for e in extra]
    log = os.path.join(project, job + ".log")
    if not os.path.exists(log + ".cost.json"):   # a fresh run (polish skips finished micrographs)
        shutil.rmtree(os.path.join(project, job), ignore_errors=True)
    os.makedirs(os.path.join(project, job), exist_ok=True)
    return timed(cmd, project, log)


def sigmas_args(s, relion):
    if relion:
        return ["--s_vel", s[0], "--s_div", s[1], "--s_acc", s[2]]
    return ["--sigma-vel", s[0], "--sigma-div", s[1], "--sigma-acc", s[2]]


def auto_sigmas(project, job):
    """Geometric mean of the per-micrograph sigmas chosen by --sigmas auto (diag/*.json)."""
    got = [json.load(open(f))["sigmas"] for f in
           glob.glob(os.path.join(project, job, "diag", "**", "*.json"), recursive=True)]
    return tuple(float(np.exp(np.mean(np.log(np.abs(v))))) for v in zip(*got)) if got else None


def read_params(path):
    return tuple(float(v) for v in open(path).read().split()[:3])


def tracks_of(folder, mics):
    out = []
    for m in mics:
        hits = glob.glob(os.path.join(folder, "**", m + "_tracks.star"), recursive=True)
        out.append(read_tracks_star(hits[0]))
    return out


def errors(est, truth):
    """RMS abs, shape and global-track errors (A) of per-micrograph track lists."""
    e, t = np.concatenate(est), np.concatenate(truth)
    d = e - t
    rms = lambda x: float(np.sqrt((x ** 2).sum(-1).mean()))  # noqa: E731
    glob_d = np.stack([a.mean(0) - b.mean(0) for a, b in zip(est, truth)])
    return {"rms_A": rms(d), "shape_A": rms(d - d.mean(1, keepdims=True)),
            "global_A": rms(glob_d - glob_d.mean(1, keepdims=True))}


def reconstruct(project, star, tag, truth, mask, px):
    """relion_reconstruct (CTF) per half-set and all: half-map FSC 0.143, FSC 0.5 vs truth (A)."""
    res, cpu = {}, 0.0
    maps = {}
    for sub in ("1", "2", "all"):
        out = os.path.join("Recon", "%s_%s.mrc" % (tag, sub))
        os.makedirs(os.path.join(project, "Recon"), exist_ok=True)
        cmd = ["relion_reconstruct", "--i", star, "--o", out, "--ctf"] + \
            ([] if sub == "all" else ["--subset", sub])
        cpu += timed(cmd, project, os.path.join(project, out + ".log"))["cpu_s"]
        maps[sub] = read_mrc(os.path.join(project, out))[0]
    n = truth.shape[0]
    res["half_fsc_0143_A"] = fourier.resolution_at(fourier.fsc(maps["1"] * mask, maps["2"] * mask),
                                                   n, px)
    res["truth_fsc_05_A"] = fourier.resolution_at(fourier.fsc(maps["all"] * mask, truth * mask),
                                                  n, px, 0.5)
    res["recon_cpu_s"] = cpu
    return res


def run_snr(a, snr, work):
    project = os.path.join(work, "snr_%g" % snr)
    true = (a.sigma_vel, a.sigma_div, a.sigma_acc)
    simulate(a, snr, project)
    truth_info = json.load(open(os.path.join(project, "truth", "truth.json")))
    mics = truth_info["micrographs"]
    truth = tracks_of(os.path.join(project, "truth"), mics)
    n_pf = sum(len(t) for t in truth) * a.frames
    T = a.threads
    rows = []

    def add(label, sig, folder, cost, train=None):
        r = {"method": label, "sigmas": sig}
        r.update(errors(tracks_of(os.path.join(project, folder), mics), truth))
        r.update(cost)
        r["cpu_ms_per_pf"] = 1e3 * cost["cpu_s"] / n_pf
        r["train_cpu_s"] = train and train["cpu_s"]
        r["train_rss_mb"] = train and train["rss_mb"]
        rows.append(r)

    inp = load_polish_inputs(*(os.path.join(project, LAYOUT[k]) for k in
                               ("particles", "mics", "postprocess")), root=project)
    px = inp.pixel_size
    by_name = {os.path.splitext(os.path.basename(m.name))[0]: m for m in inp.micrographs}
    glob_tracks = [by_name[m].initial_tracks * px for m in mics]
    none = [np.zeros_like(t) for t in truth]
    for label, est in (("no correction", none), ("global track (MotionCorr)", glob_tracks)):
        r = {"method": label, "sigmas": None}
        r.update(errors(est, truth))
        rows.append(r)

    # RELION
    add("RELION defaults", GUI_DEFAULTS, "MotionRefine/job020",
        relion_motion(project, "MotionRefine/job020", T, *sigmas_args(GUI_DEFAULTS, True)))
    add("RELION true sigmas", true, "MotionRefine/job021",
        relion_motion(project, "MotionRefine/job021", T, *sigmas_args(true, True)))
    n_parts = sum(len(t) for t in truth)
    tr = relion_motion(project, "MotionRefine/job022", T, "--params3", "--align_frac", "0.5",
                       "--eval_frac", "0.5", "--min_p", n_parts)
    rel_trained = read_params(os.path.join(project, "MotionRefine/job022",
                                           "opt_params_all_groups.txt"))
    add("RELION trained", rel_trained, "MotionRefine/job023",
        relion_motion(project, "MotionRefine/job023", T, "--params_file",
                      "MotionRefine/job022/opt_params_all_groups.txt"), tr)
    if a.relion_only:
        return {"snr": snr, "particles": n_parts, "particle_frames": n_pf, "rows": rows}
    if not a.no_shiny:
        rel_recomb = relion_motion(project, "MotionRefine/job021", T, *sigmas_args(true, True),
                                   "--combine_frames", "--only_do_unfinished", log="recombine")
    # ours
    add("ours defaults (--sigmas auto)", auto_sigmas(project, "Polish/job036"), "Polish/job036",
        ours(project, "polish", "Polish/job036", T))
    add("ours --sigmas relion-defaults", GUI_DEFAULTS, "Polish/job030",
        ours(project, "polish", "Polish/job030", T, "--sigmas", "relion-defaults"))
    add("ours true sigmas", true, "Polish/job031",
        ours(project, "polish", "Polish/job031", T, *sigmas_args(true, False)))
    add("ours true sigmas, --cc-scale relion", true, "Polish/job032",
        ours(project, "polish", "Polish/job032", T, *sigmas_args(true, False),
             "--cc-scale", "relion"))
    otr = ours(project, "train", "Train/job033", T, "--method", "tcc", "--min-particles",
               n_parts, "--restarts", a.restarts, "--max-evals", a.max_evals)
    our_trained = read_params(os.path.join(project, "Train/job033", "opt_params_all_groups.txt"))
    add("ours trained", our_trained, "Polish/job034",
        ours(project, "polish", "Polish/job034", T, "--params-file",
             "Train/job033/opt_params_all_groups.txt"), otr)
    etr = ours(project, "train", "Train/job037", T, "--min-particles", n_parts, "--restarts",
               a.evidence_restarts, "--method", "evidence")
    add("ours trained (--method evidence)",
        read_params(os.path.join(project, "Train/job037", "opt_params_all_groups.txt")),
        "Polish/job038", ours(project, "polish", "Polish/job038", T, "--params-file",
                              "Train/job037/opt_params_all_groups.txt"), etr)
    if a.no_shiny:
        return {"snr": snr, "particles": n_parts, "particle_frames": n_pf, "rows": rows}
    our_recomb = ours(project, "bfactors", "Polish/job035", T, "--polish", "Polish/job031")

    vol, _ = read_mrc(os.path.join(project, "truth", "volume.mrc"))
    mask, _ = read_mrc(os.path.join(project, LAYOUT["mask"]))
    shiny = {"extracted (global track)": reconstruct(project, LAYOUT["particles"], "extract", vol,
                                                      mask, px),
             "RELION shiny (true sigmas)": reconstruct(project, "MotionRefine/job021/shiny.star",
                                                       "relion", vol, mask, px),
             "ours shiny (true sigmas)": reconstruct(project, "Polish/job035/particles.star",
                                                     "ours", vol, mask, px)}
    bf = {}
    for who, path in (("relion", "MotionRefine/job021/bfactors.star"),
                      ("ours", "Polish/job035/bfactors.star")):
        t = read_star(os.path.join(project, path))["perframe_bfactors"]
        bf[who] = {"B": [float(v) for v in t["rlnBfactorUsedForSharpening"]],
                   "C": [float(v) for v in t["rlnFittedInterceptGuinierPlot"]]}
    shiny["RELION shiny (true sigmas)"]["recombine"] = rel_recomb
    shiny["ours shiny (true sigmas)"]["recombine"] = our_recomb
    return {"snr": snr, "particles": n_parts, "particle_frames": n_pf, "rows": rows,
            "shiny": shiny, "bfactors": bf, "half_map_fsc_0143_A": truth_info["half_map_fsc_0143_A"]}


def run_speed(a, snr, work):
    """Speed side by side (--speed): for each thread count, RELION's motion estimation and our
    polish with the true sigmas, then each one's recombination (shiny particles) from those
    tracks, one process after the other; CPU, wall, peak RSS and track errors."""
    project = os.path.join(work, "snr_%g" % snr)
    simulate(a, snr, project)
    true = (a.sigma_vel, a.sigma_div, a.sigma_acc)
    mics = json.load(open(os.path.join(project, "truth", "truth.json")))["micrographs"]
    truth = tracks_of(os.path.join(project, "truth"), mics)
    n_pf = sum(len(t) for t in truth) * a.frames
    rows = []
    for T in a.speed_threads:
        rj, oj = "MotionRefine/speed_t%d" % T, "Polish/speed_t%d" % T
        cost = {"relion motion": relion_motion(project, rj, T, *sigmas_args(true, True)),
                "ours motion": ours(project, "polish", oj, T, *sigmas_args(true, False))}
        cost["relion recombination"] = relion_motion(
            project, rj, T, *sigmas_args(true, True), "--combine_frames", "--only_do_unfinished",
            log="recombine")
        cost["ours recombination"] = ours(project, "bfactors", oj + "_shiny", T, "--polish", oj)
        err = {"relion": errors(tracks_of(os.path.join(project, rj), mics), truth),
               "ours": errors(tracks_of(os.path.join(project, oj), mics), truth)}
        for k, c in cost.items():
            r = dict(c, step=k, threads=T, cpu_ms_per_pf=1e3 * c["cpu_s"] / n_pf)
            r.update(err[k.split()[0]] if k.endswith("motion") else {})
            rows.append(r)
    print("\n| step | threads | CPU s | CPU ms / particle-frame | wall s | peak RSS MB | RMS (A) "
          "| shape (A) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %.1f | %.2f | %.1f | %.0f | %s | %s |" % (
            r["step"], r["threads"], r["cpu_s"], r["cpu_ms_per_pf"], r["wall_s"], r["rss_mb"],
            fmt(r.get("rms_A")), fmt(r.get("shape_A"))))
    return {"snr": snr, "particle_frames": n_pf, "speed": rows}


def simulate(a, snr, project):
    """The simulated RELION project of one SNR (kept when it exists)."""
    if os.path.exists(os.path.join(project, "truth", "truth.json")):
        return
    cmd = [sys.executable, "-m", "polishplugin.programs.simulate", "--out", project,
           "--micrographs", a.micrographs, "--mic-size", a.size, "--frames", a.frames,
           "--particles", a.particles, "--box", a.box, "--pixel-size", a.pixel_size,
           "--snr", snr, "--sigma-vel", a.sigma_vel, "--sigma-div", a.sigma_div, "--sigma-acc",
           a.sigma_acc, "--seed", a.seed, "--tiff", "--no-figures"]
    subprocess.run([str(c) for c in cmd], check=True, env=dict(os.environ, PYTHONPATH=ROOT),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fmt(v, f="%.3f"):
    return "-" if v is None else f % v


def print_tables(res):
    for r in res:
        print("\n### SNR %g: %d particles, %d particle-frames\n" % (r["snr"], r["particles"],
                                                                   r["particle_frames"]))
        print("| method | sigmas vel/div/acc | RMS (A) | shape (A) | global track (A) | CPU s | "
              "CPU ms / particle-frame | wall s | peak RSS MB | training CPU s | training peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for x in r["rows"]:
            sig = "-" if x["sigmas"] is None else "%g/%g/%g" % tuple(x["sigmas"])
            print("| %s | %s | %.3f | %.3f | %.3f | %s | %s | %s | %s | %s | %s |" % (
                x["method"], sig, x["rms_A"], x["shape_A"], x["global_A"],
                fmt(x.get("cpu_s"), "%.1f"), fmt(x.get("cpu_ms_per_pf"), "%.2f"),
                fmt(x.get("wall_s"), "%.1f"), fmt(x.get("rss_mb"), "%.0f"),
                fmt(x.get("train_cpu_s"), "%.1f"), fmt(x.get("train_rss_mb"), "%.0f")))
        if "shiny" not in r:
            continue
        print("\n| particles reconstructed by relion_reconstruct | half-map FSC 0.143 (A) | "
              "FSC 0.5 vs truth (A) | recombination CPU s | peak RSS MB |")
        print("|---|---|---|---|---|")
        for k, s in r["shiny"].items():
            rc = s.get("recombine")
            print("| %s | %.2f | %.2f | %s | %s |" % (k, s["half_fsc_0143_A"], s["truth_fsc_05_A"],
                                                      fmt(rc and rc["cpu_s"], "%.1f"),
                                                      fmt(rc and rc["rss_mb"], "%.0f")))
        b = r["bfactors"]
        br, bo = np.asarray(b["relion"]["B"]), np.asarray(b["ours"]["B"])
        print("\nPer-frame B (A^2, bfactors.star, each from its own tracks' FCC): RELION %s; ours %s;"
              " correlation %.2f, RMS difference %.0f A^2" % (
                  " ".join("%.0f" % v for v in br), " ".join("%.0f" % v for v in bo),
                  np.corrcoef(br, bo)[0, 1], np.sqrt(np.mean((br - bo) ** 2))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--micrographs", type=int, default=8)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--particles", type=int, default=50, help="per micrograph")
    p.add_argument("--box", type=int, default=160)
    p.add_argument("--pixel-size", type=float, default=1.2)
    p.add_argument("--snrs", type=float, nargs="+", default=[0.007, 0.035])
    p.add_argument("--sigma-vel", type=float, default=0.5)
    p.add_argument("--sigma-div", type=float, default=5000.0)
    p.add_argument("--sigma-acc", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--restarts", type=int, default=1,
                   help="our training's restarts (RELION runs one Nelder-Mead)")
    p.add_argument("--max-evals", type=int, default=40,
                   help="our training's evaluations per restart")
    p.add_argument("--evidence-restarts", type=int, default=3,
                   help="restarts of our training with --method evidence")
    p.add_argument("--relion-only", action="store_true",
                   help="only simulate and run RELION's rows (to start them early)")
    p.add_argument("--no-shiny", action="store_true",
                   help="skip recombination and reconstructions (tracks only)")
    p.add_argument("--speed", action="store_true",
                   help="only the speed side by side: motion estimation and recombination of "
                        "both with the true sigmas, for each of --speed-threads")
    p.add_argument("--speed-threads", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    for prog in ("relion_motion_refine", "relion_reconstruct", "/usr/bin/time"):
        if shutil.which(prog) is None:
            raise SystemExit("vs_relion: %s not found (apt-get install -y relion time)" % prog)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    if a.speed:
        res = [run_speed(a, snr, work) for snr in a.snrs]
        with open(os.path.join(work, "speed.json"), "w") as fh:
            json.dump({"args": vars(a), "results": res}, fh, indent=1)
        return
    res = []
    for snr in a.snrs:   # results kept after each SNR
        res.append(run_snr(a, snr, work))
        with open(os.path.join(work, "results.json"), "w") as fh:
            json.dump({"args": vars(a), "results": res}, fh, indent=1)
        if not a.relion_only:
            print_tables(res[-1:])
    print("\n%d micrographs %d^2 x %d frames, %d particles each, box %d at %.2f A/px, true sigmas "
          "%g/%g/%g, %d thread(s) each, our training %d restart(s) of <= %d evaluations"
          % (a.micrographs, a.size, a.frames, a.particles, a.box, a.pixel_size, a.sigma_vel,
             a.sigma_div, a.sigma_acc, a.threads, a.restarts, a.max_evals))
    if not a.relion_only:
        print_tables(res)


if __name__ == "__main__":
    main()
