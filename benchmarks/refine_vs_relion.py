"""The experiment of Kimanius et al. 2021 (§4) at small scale: gold-standard auto-refinement of
simulated particles from a 30 A low-pass of the truth, RELION 3.1's relion_refine_mpi against
our pp_refine with the Tikhonov, RED and CW-RED priors (TV denoiser unless --denoiser), for
several structures x SNRs. Same particle files, same machine, run one after the other.
A run "MODE:DENOISER" (e.g. cw-red:unet) picks the denoiser of that run; --extra passes more
pp_refine options to every run of ours (e.g. "--cw-low 8").

Per run: FSC of the final map against the truth at 0.5 and 0.143, mean FSC vs truth between
--band A (default 10 and 4 A, the paper's band), the half-map (gold-standard) resolution the
program reports, the median angular error of the particles against their true poses in the
refined map's frame (the truth's frame turned by the best global rotation, which is the
identity unless the map came out in a symmetry-related frame; its angle is printed), the
iterations and the CPU seconds (this process's children: every MPI rank and thread; RELION's
master rank, which only waits, included), in total and per iteration.

    python benchmarks/refine_vs_relion.py --out /tmp/rvr [--structures 2xhe pseudo]
        [--snrs 0.05 0.01 0.0028] [--box 64] [--px 2.0] [--count 2000] [--ranks 3]
        [--runs relion tikhonov red cw-red cw-red:unet] [--max-iter 25]

Prints one markdown table row per run (flushed as each run ends) and writes results.json.
"""
import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import (child_env, children_cpu, refine_command, refined_angles,  # noqa: E402
                     write_project)
from polishplugin.core.fourier import fsc, resolution_at  # noqa: E402
from polishplugin.core.geometry import euler_to_matrix  # noqa: E402
from polishplugin.core.refine.sampling import angular_distance  # noqa: E402
from polishplugin.core.simulate.particles import simulate_particles  # noqa: E402
from polishplugin.core.simulate.volumes import pseudo_protein, volume_from_model  # noqa: E402
from polishplugin.io.mrc import read_mrc, write_mrc  # noqa: E402
from polishplugin.io.star import read_star  # noqa: E402

MODELS = os.path.join(REPO, "..", "shared", "data", "models")
RUNS = ("relion", "tikhonov", "red", "cw-red")


def run_name(text):
    """A --runs entry: relion, tikhonov, red, cw-red, or red / cw-red with :DENOISER."""
    mode, _, den = text.partition(":")
    if mode not in RUNS or (den and mode in ("relion", "tikhonov")):
        raise argparse.ArgumentTypeError("run must be one of %s (red / cw-red may end in "
                                         ":DENOISER), got %r" % (", ".join(RUNS), text))
    return text


def truth_volume(name, box, px, rng):
    if name == "pseudo":
        return pseudo_protein(box, px, rng)
    path = os.path.join(MODELS, name + (".pdb" if os.path.exists(
        os.path.join(MODELS, name + ".pdb")) else ".cif"))
    vol = volume_from_model(path, box, px, 2 * px)
    return (vol / vol.std()).astype(np.float32)


def run_relion(folder, args):
    out = os.path.join(folder, "relion")
    os.makedirs(out, exist_ok=True)
    env = child_env(mpirun=True)
    env.pop("RELION_EXTERNAL_RECONSTRUCT_EXECUTABLE", None)
    cmd = ["mpirun", "-np", str(args.ranks), "relion_refine_mpi", "--i", "particles.star",
           "--o", "relion/run", "--ref", "ref.mrc", "--ini_high", "30", "--auto_refine",
           "--split_random_halves", "--particle_diameter", str(0.8 * args.box * args.px),
           "--healpix_order", "1", "--auto_local_healpix_order", "3", "--offset_range", "3",
           "--offset_step", "1", "--sym", "C1", "--pad", "2", "--ctf", "--flatten_solvent",
           "--zero_mask", "--firstiter_cc", "--j", "1", "--dont_combine_weights_via_disc",
           "--pool", "10", "--random_seed", "1"]
    res = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    with open(os.path.join(folder, "relion.log"), "w") as fh:
        fh.write(res.stdout + res.stderr)
    if res.returncode:
        raise SystemExit("RELION failed in %s:\n%s" % (folder, res.stdout[-2000:] + res.stderr[-2000:]))
    half = float(re.findall(r"Final resolution \(without masking\) is: (\S+)", res.stdout)[-1])
    iters = len(re.findall(r"Expectation iteration", res.stdout))
    return os.path.join(out, "run_class001.mrc"), os.path.join(out, "run_data.star"), half, iters


def run_ours(folder, run, args):
    mode, _, denoiser = run.partition(":")
    name = run.replace(":", "_")
    out = os.path.join(folder, name)
    cmd = refine_command("--out", name, "--mode", mode, "--max-iter", args.max_iter,
                         "--particle-diameter", 0.8 * args.box * args.px, "--fresh",
                         *args.extra.split())
    if mode != "tikhonov":
        cmd += ["--denoiser", denoiser or args.denoiser]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    with open(os.path.join(folder, name + ".log"), "w") as fh:
        fh.write(res.stdout + res.stderr)
    if res.returncode:
        raise SystemExit("pp_refine failed in %s:\n%s" % (folder, res.stderr[-3000:]))
    half = float(read_star(os.path.join(out, "fsc.star"))["general"]["rlnFinalResolution"][0])
    iters = len(json.load(open(os.path.join(out, "refine.json")))["iterations"])
    return os.path.join(out, "map.mrc"), os.path.join(out, "particles.star"), half, iters


def _angles_by_image(star):
    """Refined angles (N, 3) radians in the order of the image numbers (RELION reorders nothing
    with --dont_combine_weights_via_disc, but match by image name)."""
    ang, parts = refined_angles(star)
    return ang[np.argsort([int(str(nm).split("@")[0]) for nm in parts["rlnImageName"]])]


def angular_errors(star, true_angles):
    return angular_distance(_angles_by_image(star), true_angles)


def _matrices(star, true_angles):
    ang = _angles_by_image(star)
    return (euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2]),
            euler_to_matrix(true_angles[:, 0], true_angles[:, 1], true_angles[:, 2]))


def _angle(tr):
    return np.rad2deg(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def frame_errors(star, true_angles, within=10.0, share=0.05):
    """Angular errors up to the global rotations G that particles share (a symmetry or pseudo-
    symmetry of the truth, e.g. 5me2's two-folds, can put particles, or the whole map, in the
    truth's frame turned by G): G are the clusters of D_i = A_true^T A_ref (D_j within
    ``within`` degrees) holding at least ``share`` of the particles, found greedily, more than
    3 ``within`` from the identity; per particle
    the error is the smallest angle(A_ref, A_true G) over G and the identity. Returns (angles of
    the G found, errors)."""
    a_ref, a_true = _matrices(star, true_angles)
    d = np.einsum("nji,njk->nik", a_true, a_ref)
    left, frames = np.ones(len(d), bool), [np.eye(3)]
    while left.sum() >= share * len(d):
        close = _angle(np.einsum("cij,nij->cn", d[left], d[left])) < within
        best = int(np.argmax(close.sum(axis=1)))
        if close[best].sum() < share * len(d):
            break
        if _angle(np.trace(d[left][best])) > 3 * within:     # not the identity's cluster
            frames.append(d[left][best])
        left[np.flatnonzero(left)[close[best]]] = False
    errors = np.min([_angle(np.einsum("nij,nij->n", a_ref, a_true @ g)) for g in frames], axis=0)
    return [round(float(_angle(np.trace(g)))) for g in frames[1:]], errors


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--structures", nargs="+", default=["2xhe", "pseudo"],
                   help="atomic models in ../shared/data/models without internal symmetry (the "
                        "angular error is measured against one frame), or pseudo")
    p.add_argument("--snrs", nargs="+", type=float, default=[0.05, 0.01, 0.0028])
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--px", type=float, default=2.0)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--max-iter", type=int, default=25)
    p.add_argument("--denoiser", default="tv")
    p.add_argument("--band", nargs=2, type=float, default=[10.0, 4.0])
    p.add_argument("--runs", nargs="+", type=run_name, default=list(RUNS))
    p.add_argument("--extra", default="", help="more pp_refine options for our runs")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if "relion" in args.runs and not shutil.which("relion_refine_mpi"):
        raise SystemExit("needs RELION (relion_refine_mpi) for --runs relion")
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    lo, hi = args.band
    band = slice(int(np.ceil(args.box * args.px / lo)), int(args.box * args.px / hi) + 1)
    print("box %d, %.2f A/px, %d particles, FSC band %g-%g A (shells %d-%d)"
          % (args.box, args.px, args.count, lo, hi, band.start, band.stop - 1))
    print("| structure | SNR | run | vs truth FSC 0.5 (A) | vs truth 0.143 (A) | mean FSC %g-%g A "
          "| half-map res (A) | half-map - truth (shells) | median ang. error, map frame (deg) "
          "| frames (deg) | iterations "
          "| CPU (s) | CPU/iter (s) |" % (lo, hi))
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    results = []
    for si, name in enumerate(args.structures):
        for snr in args.snrs:
            rng = np.random.default_rng(args.seed + 100 * si)
            truth = truth_volume(name, args.box, args.px, rng)
            folder = os.path.join(root, "%s_snr%g" % (name, snr))
            ps = simulate_particles(truth, args.count, args.px, snr, rng)
            # both programs start blind: no angles, no origins in the STAR
            start = write_project(folder, truth, dataclasses.replace(
                ps, angles=np.zeros_like(ps.angles), origins_A=np.zeros_like(ps.origins_A)),
                args.px)
            write_mrc(os.path.join(folder, "truth.mrc"), truth, args.px)
            c0 = fsc(start, truth)
            print("| %s | %g | start (30 A low-pass) | %.1f | %.1f | %.3f | | | | | | | |"
                  % (name, snr, resolution_at(c0, args.box, args.px, 0.5),
                     resolution_at(c0, args.box, args.px), c0[band].mean()), flush=True)
            for run in args.runs:
                cpu0, t0 = children_cpu(), time.time()
                final, star, half, iters = (run_relion(folder, args) if run == "relion"
                                            else run_ours(folder, run, args))
                cpu, wall = children_cpu() - cpu0, time.time() - t0
                c = fsc(read_mrc(final)[0], truth)
                err = angular_errors(star, ps.angles)
                g_deg, frame_err = frame_errors(star, ps.angles)
                row = dict(structure=name, snr=snr, run=run,
                           truth_05=resolution_at(c, args.box, args.px, 0.5),
                           truth_0143=resolution_at(c, args.box, args.px),
                           band_fsc=float(c[band].mean()), half_map=half,
                           # > 0: the half maps claim more shells than the truth gives
                           optimism=args.box * args.px * (1 / half - 1 / resolution_at(
                               c, args.box, args.px)),
                           angular_error=float(np.median(err)), frame_rotation=g_deg,
                           frame_error=float(np.median(frame_err)), iterations=iters, cpu_s=cpu,
                           cpu_per_iter=cpu / max(iters, 1), wall_s=wall, fsc_truth=c.tolist())
                results.append(row)
                print("| %(structure)s | %(snr)g | %(run)s | %(truth_05).1f | %(truth_0143).1f | "
                      "%(band_fsc).3f | %(half_map).1f | %(optimism)+.1f | %(frame_error).1f | "
                      "%(frame_rotation)s | %(iterations)d | "
                      "%(cpu_s).0f | %(cpu_per_iter).1f |" % row, flush=True)
                with open(os.path.join(root, "results.json"), "w") as fh:
                    json.dump(dict(args=vars(args), results=results), fh, indent=1)


if __name__ == "__main__":
    main()
