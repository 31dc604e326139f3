"""Test-time augmentation of the U-Net denoiser (issue 12): the model card's held-out scores
(``programs/train_denoiser.py``'s ``eval_cases``: 5me2 and 2 pseudo-proteins, box 80 at 1.5 A/px;
coloured noise, B / K maps and, with --engine-particles, every iteration's half maps of one engine
refinement per truth) with the shipped network averaged over 1, 8 and 48 elements of the cube group
(``get_denoiser("unet", tta=...)``), all on the same maps: mean FSC vs truth 10-4 A of f(x~) and of
the eq. 17 update at lambda 1 and at the CW-RED lambda (``unet_pairs.red_blend``), and CPU s per
call; then CPU per call at --speed-box on a noisy pseudo-protein (1 torch thread).

    python benchmarks/unet_tta.py --holdout ../shared/data/models/5me2.pdb \\
        --engine-particles 300 --cache /tmp/tta/unet_cache [--tta 1 8 48]
"""
import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from polishplugin.core.fourier import resolution_at  # noqa: E402
from polishplugin.core.refine.confidence import cw_red_lambda  # noqa: E402
from polishplugin.core.refine.denoisers import get_denoiser  # noqa: E402
from polishplugin.core.refine.unet_pairs import mean_fsc, red_blend  # noqa: E402
from polishplugin.core.simulate.volumes import pseudo_protein  # noqa: E402
from polishplugin.programs import train_denoiser  # noqa: E402


def group_label(cond, res):
    if not cond.startswith("engine"):
        return cond
    edges = [e for e in (6, 8, 10, 12) if res > e]
    lo = edges[-1] if edges else None
    return "engine x~, half-map %s A" % ("<= 6" if lo is None else ">= 12" if lo == 12
                                         else "%d-%d" % (lo, lo + 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--holdout", nargs="+", required=True)
    p.add_argument("--engine-particles", type=int, default=0)
    p.add_argument("--cache", default="")
    p.add_argument("--tta", type=int, nargs="+", default=[1, 8, 48])
    p.add_argument("--speed-box", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    targs = train_denoiser.build_parser().parse_args(
        ["--out", "unused", "--holdout"] + args.holdout
        + ["--eval-engine-particles", str(args.engine_particles), "--cache", args.cache])
    rng = np.random.default_rng(targs.seed + 1000)   # train_denoiser.score's
    fs = {t: get_denoiser("unet", tta=t) for t in args.tta}
    px = targs.eval_pixel
    rows = []
    for name, truth, maps in train_denoiser.eval_cases(targs, rng):
        for cond, x, curve in maps:
            x = np.asarray(x, np.float64)
            curve = np.asarray(curve, np.float64)
            res = resolution_at(curve, x.shape[0], px)
            lam = cw_red_lambda(res)
            row = dict(structure=name, group=group_label(cond, res), noisy=mean_fsc(x, truth, px),
                       tikhonov=mean_fsc(red_blend(x, 0 * x, curve), truth, px))
            for t, f in fs.items():
                c = time.process_time()
                y = f(x)
                row["cpu%d" % t] = time.process_time() - c
                row["unet%d" % t] = mean_fsc(y, truth, px)
                row["red%d" % t] = mean_fsc(red_blend(x, y, curve), truth, px)
                row["cw%d" % t] = mean_fsc(red_blend(x, y, curve, lam), truth, px)
            rows.append(row)
            print("%s, %s (%.1f A, lambda %.2f): input %.3f; U-Net %s; CW-RED update %s"
                  % (name, cond, res, lam, row["noisy"],
                     " / ".join("%.3f" % row["unet%d" % t] for t in args.tta),
                     " / ".join("%.3f" % row["cw%d" % t] for t in args.tta)), flush=True)
    cols = ["noisy", "tikhonov"] + ["unet%d" % t for t in args.tta] + \
        ["red%d" % t for t in args.tta] + ["cw%d" % t for t in args.tta]
    heads = ["input", "update: Tikhonov"] + ["U-Net TTA %d" % t for t in args.tta] + \
        ["RED TTA %d" % t for t in args.tta] + ["CW-RED TTA %d" % t for t in args.tta]
    print("\n| structure | maps | n | " + " | ".join(heads) + " |")
    print("|---|---|---|" + "---|" * len(heads))
    groups = {}
    for r in rows:
        groups.setdefault((r["structure"], r["group"]), []).append(r)
    groups[("**all**", "")] = rows
    groups[("**engine maps**", "")] = [r for r in rows if r["group"].startswith("engine")]
    for (s, g), rs in groups.items():
        if rs:
            print("| %s | %s | %d | " % (s, g, len(rs))
                  + " | ".join("%.3f" % np.mean([r[c] for r in rs]) for c in cols) + " |")
    print("\nCPU s per call at box %d (held-out maps): " % targs.eval_box
          + ", ".join("TTA %d %.2f" % (t, np.mean([r["cpu%d" % t] for r in rows]))
                      for t in args.tta))
    n = args.speed_box
    srng = np.random.default_rng(0)
    x = pseudo_protein(n, 2.0, srng).astype(np.float64)
    x += srng.normal(0, x.std(), x.shape)
    for t, f in fs.items():
        f(x[:16, :16, :16])
        cpu = []
        for _ in range(args.repeats):
            c = time.process_time()
            f(x)
            cpu.append(time.process_time() - c)
        print("box %d, TTA %d: CPU s per call %.3f (min of %d)" % (n, t, min(cpu), args.repeats))


if __name__ == "__main__":
    main()
