"""RELION 3.1's auto-refine with its own M-step, with its own relion_external_reconstruct, and
with our program as the external reconstruction (tikhonov; red and cw-red with the TV denoiser), on one
simulated particle set with known truth; then our Tikhonov M-step against
relion_external_reconstruct on every STAR RELION wrote during our run.

Prints a markdown table: half-map resolution reported by RELION, FSC = 0.5 and 0.143 resolution
of the final map against the truth, iterations, wall time; and the agreement table (relative
difference inside a sphere of a quarter box, and over the box).

    python benchmarks/refine_hook_vs_relion.py --out /tmp/hookbench [--box 24] [--px 5]
        [--count 120] [--snr 1.0] [--seed 1] [--ranks 3] [--runs relion ours_tikhonov ...]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from polishplugin.core.fourier import fsc, resolution_at
from polishplugin.core.refine.update import regularised_map
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import lowpass, pseudo_protein
from polishplugin.io.mrc import read_mrc, write_mrc
from polishplugin.io.particle_set import write_particle_set
from polishplugin.programs.external_reconstruct import Job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = [("relion", None, False), ("relion_extrec", None, True),
        ("ours_tikhonov", "--mode tikhonov", True),
        ("ours_red_tv", "--mode red --denoiser tv --lambda 1", True),
        ("ours_cwred_tv", "--mode cw-red --denoiser tv --angpix PX", True)]


def refine(folder, name, args, hook=None, external=True):
    out = os.path.join(folder, name)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env.pop("RELION_EXTERNAL_RECONSTRUCT_EXECUTABLE", None)
    if hook:
        path = os.path.join(folder, name + ".sh")
        with open(path, "w") as fh:
            fh.write("#!/bin/sh\nexec %s -m polishplugin.programs.external_reconstruct %s \"$@\"\n"
                     % (sys.executable, hook))
        os.chmod(path, 0o755)
        env["RELION_EXTERNAL_RECONSTRUCT_EXECUTABLE"] = path
    cmd = ["mpirun", "-np", str(args.ranks), "relion_refine_mpi", "--i", "particles.star",
           "--o", name + "/run", "--ref", "ref.mrc", "--ini_high", "30", "--auto_refine",
           "--split_random_halves", "--particle_diameter", str(0.75 * args.box * args.px),
           "--healpix_order", "1", "--auto_local_healpix_order", "3", "--offset_range", "2",
           "--offset_step", "2", "--sym", "C1", "--pad", "2", "--ctf", "--flatten_solvent",
           "--zero_mask", "--firstiter_cc", "--j", "1", "--dont_combine_weights_via_disc",
           "--pool", "10", "--random_seed", str(args.seed)]
    cmd += ["--external_reconstruct"] if external else []
    t0 = time.time()
    res = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    with open(os.path.join(folder, name + ".log"), "w") as fh:
        fh.write(res.stdout + res.stderr)
    if res.returncode:
        raise SystemExit("%s failed:\n%s" % (name, res.stdout[-3000:] + res.stderr[-3000:]))
    half = float(re.findall(r"Final resolution \(without masking\) is: (\S+)", res.stdout)[-1])
    iters = len(re.findall(r"Expectation iteration", res.stdout))
    return out, half, iters, wall


def agreement(out):
    rows = []
    for star in sorted(glob.glob(os.path.join(out, "*_half1_*_external_reconstruct.star"))):
        job = Job(star)
        os.chdir(os.path.dirname(out))
        data, weight = job.sums()
        for flag, gridding in (("--skip_gridding", False), (None, True)):
            ours, _ = regularised_map(data, weight, job.tau2, job.ori, job.pad, job.current,
                                      job.fudge, gridding=gridding)
            tmp = star.replace(".star", "_relion.mrc")
            subprocess.run(["relion_external_reconstruct", star, "--o", tmp]
                           + ([flag] if flag else []), check=True, capture_output=True)
            rel = read_mrc(tmp)[0].astype(np.float64)
            c = np.arange(job.ori) - job.ori // 2
            r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
            m = r < job.ori / 4
            rows.append((os.path.basename(star)[:10], gridding,
                         np.linalg.norm((ours - rel)[m]) / np.linalg.norm(rel[m]),
                         np.linalg.norm(ours - rel) / np.linalg.norm(rel)))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--box", type=int, default=24)
    p.add_argument("--px", type=float, default=5.0)
    p.add_argument("--count", type=int, default=120)
    p.add_argument("--snr", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ranks", type=int, default=3)
    p.add_argument("--runs", nargs="+", choices=[r[0] for r in RUNS], default=[r[0] for r in RUNS])
    args = p.parse_args()
    if not shutil.which("relion_refine_mpi"):
        raise SystemExit("needs RELION (relion_refine_mpi)")
    folder = os.path.abspath(args.out)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    truth = pseudo_protein(args.box, args.px, rng)
    start = lowpass(truth, 30.0, args.px)
    write_mrc(os.path.join(folder, "ref.mrc"), start, args.px)
    write_particle_set(folder, simulate_particles(truth, args.count, args.px, args.snr, rng),
                       args.px)
    runs = [(name, hook and hook.replace("PX", "%g" % args.px), ext)
            for name, hook, ext in RUNS if name in args.runs]
    print("| M-step | RELION half-map res (A) | vs truth FSC 0.5 (A) | vs truth 0.143 (A) "
          "| mean FSC vs truth, 30-12 A | iterations | wall (s) |\n|---|---|---|---|---|---|---|")
    band = slice(int(args.box * args.px / 30.0) + 1, int(args.box * args.px / 12.0) + 1)
    print("| start (30 A low-pass of the truth) | | %.1f | %.1f | %.2f | | |"
          % (resolution_at(fsc(start, truth), args.box, args.px, 0.5),
             resolution_at(fsc(start, truth), args.box, args.px, 0.143),
             fsc(start, truth)[band].mean()))
    outs = {}
    for name, hook, ext in runs:
        out, half, iters, wall = refine(folder, name, args, hook, ext)
        outs[name] = out
        final = read_mrc(os.path.join(out, "run_class001.mrc"))[0]
        c = fsc(final, truth)
        print("| %s | %.1f | %.1f | %.1f | %.2f | %d | %.0f |" % (
            name, half, resolution_at(c, args.box, args.px, 0.5),
            resolution_at(c, args.box, args.px, 0.143), c[band].mean(), iters, wall), flush=True)
    print("\n| STAR | gridding | rel. diff inside r < box/4 | rel. diff, box |\n|---|---|---|---|")
    if "ours_tikhonov" in outs:
        for row in agreement(outs["ours_tikhonov"]):
            print("| %s | %s | %.4f | %.4f |" % row)


if __name__ == "__main__":
    main()
