"""Calibration of CW-RED's lambda schedule for a denoiser (Kimanius et al. 2021, §4.3, Fig. 1c):
the denoiser's single-pass gain as a function of the input map's nominal resolution, on maps that
are neither the refinement benchmark's structures nor the U-Net's training set, and the two
thresholds derived from it (``core.refine.confidence.derive_thresholds``).

Calibration maps: every iteration's unregularised half maps x~ = B / K of our own engine's
Tikhonov refinements (``unet_pairs.engine_pairs``: 400 particles, blind from a 30 A low-pass, box
64 at 2.0 A/px as in ``refine_vs_relion.py``) of new pseudo-proteins (random stream
(--seed, k) for run k; the benchmark's pseudo-protein is default_rng(1), the U-Net's training
and held-out ones come from seed 0), one SNR per run (--snrs, cycled) so that the maps span
resolutions from the start to ~5 A. Per map: the nominal resolution the refinement loop itself
reports (masked half-map FSC = 0.143, what CW-RED's lambda is computed from) and

    gain = mean FSC vs truth 10-4 A of the eq. 17 update at lambda 1
           - the same of the eq. 11 (Tikhonov, lambda 0) update

both made from x~ shell by shell with tau^2 from the masked half-map FSC
(``unet_pairs.red_blend``): the two maps lambda interpolates between. Also shown: the raw gain of
f(x~) over x~ (the paper's Fig. 1c compares those). Maps whose half went astray from the truth
(``unet_pairs.in_truth_frame``, as the U-Net's training leaves them out) say nothing about the
denoiser against the truth and are left out.

    PYTHONPATH=. python benchmarks/unet_schedule.py --out /tmp/sched [--runs 0 1] [--denoiser unet]

Runs already in --out (run_K.json) are not redone, so runs can be split over processes
(``--runs 0 1`` and ``--runs 2 3`` side by side) and the derivation (printed, and saved as
schedule.json: the rule's settings, the curve, the thresholds and every map's resolution and
gain, the file shipped as core/refine/weights/unet_schedule.json) uses every run found in --out.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from polishplugin.core.fourier import fsc  # noqa: E402
from polishplugin.core.refine.confidence import derive_thresholds, gain_curve  # noqa: E402
from polishplugin.core.refine.denoisers import get_denoiser  # noqa: E402
from polishplugin.core.refine.loop import sphere_mask  # noqa: E402
from polishplugin.core.refine.unet_pairs import (engine_pairs, in_truth_frame, mean_fsc,  # noqa: E402
                                                 red_blend)
from polishplugin.core.simulate.volumes import pseudo_protein  # noqa: E402


def calibration_run(k, args, denoiser):
    """Rows (one per half map of each iteration) of calibration run ``k``."""
    rng = np.random.default_rng([args.seed, k])
    n, px = args.box, args.px
    truth = pseudo_protein(n, px, rng).astype(np.float64)
    truth /= truth.std()
    snr = args.snrs[k % len(args.snrs)]
    cache = os.path.join(args.out, "engine_%d.npz" % k)
    c0 = time.process_time()
    if os.path.isfile(cache):       # the refinement's maps, kept so that scoring can be redone
        with np.load(cache) as z:
            maps = [(x, t, c, rec) for x, t, c, rec in zip(
                z["x"].astype(np.float64), z["t"].astype(np.float64), z["c"],
                json.loads(str(z["records"])))]
    else:
        maps = engine_pairs(truth, px, rng, count=args.count, snr=snr, max_iter=args.max_iter)
        np.savez(cache + ".part.npz", x=np.stack([m[0] for m in maps]).astype(np.float32),
                 t=np.stack([m[1] for m in maps]).astype(np.float32),
                 c=np.stack([np.nan_to_num(m[2]) for m in maps]),
                 records=np.array(json.dumps([m[3] for m in maps])))
        os.replace(cache + ".part.npz", cache)
    engine_cpu = time.process_time() - c0
    sphere = sphere_mask(n, min(0.4 * n, n / 2.0 - 1))     # the loop's default particle mask
    rows = []
    for i in range(0, len(maps), 2):
        (x1, t, unmasked, rec), (x2, _, _, _) = maps[i], maps[i + 1]
        curve = fsc(x1 * sphere, x2 * sphere)                # as the loop computes it
        curve[rec["current_size"] // 2:] = 0.0
        for h, x in ((1, x1), (2, x2)):
            f = denoiser(x)
            rows.append(dict(run=k, snr=snr, iteration=rec["iteration"], half=h,
                             in_frame=in_truth_frame(x, t, unmasked),
                             resolution=rec["resolution"], current_size=rec["current_size"],
                             input=mean_fsc(x, truth, px), denoised=mean_fsc(f, truth, px),
                             tikhonov=mean_fsc(red_blend(x, np.zeros_like(x), curve), truth, px),
                             red=mean_fsc(red_blend(x, f, curve, 1.0), truth, px)))
    print("run %d: SNR %g, %d maps, engine %.0f CPU-s, resolutions %.1f-%.1f A"
          % (k, snr, len(rows), engine_cpu, min(r["resolution"] for r in rows),
             max(r["resolution"] for r in rows)), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--denoiser", default="unet")
    p.add_argument("--unet-weights", default=None)
    p.add_argument("--n-runs", type=int, default=4, help="calibration refinements (runs 0..N-1)")
    p.add_argument("--runs", type=int, nargs="*", default=None,
                   help="which of them this process does (default: all)")
    p.add_argument("--snrs", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4])
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--px", type=float, default=2.0)
    p.add_argument("--max-iter", type=int, default=12)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--bin", type=float, default=1.0, help="resolution bin width (A)")
    p.add_argument("--min-maps", type=int, default=4, help="maps a bin needs to count")
    p.add_argument("--z", type=float, default=2.0, help="reliably positive: mean - z SE > 0")
    args = p.parse_args()
    if args.seed in (0, 1):
        raise SystemExit("--seed 0 and 1 make the U-Net's and the benchmark's pseudo-proteins")
    os.makedirs(args.out, exist_ok=True)
    import torch
    torch.set_num_threads(1)
    denoiser = get_denoiser(args.denoiser, unet_weights=args.unet_weights)
    for k in (range(args.n_runs) if args.runs is None else args.runs):
        path = os.path.join(args.out, "run_%d.json" % k)
        if not os.path.isfile(path):
            rows = calibration_run(k, args, denoiser)
            with open(path + ".part", "w") as fh:
                json.dump(dict(args=vars(args), rows=rows), fh, indent=0)
            os.replace(path + ".part", path)
    rows, astray = [], 0
    for k in range(args.n_runs):
        path = os.path.join(args.out, "run_%d.json" % k)
        if os.path.isfile(path):
            got = json.load(open(path))["rows"]
            rows += [r for r in got if r["in_frame"]]
            astray += sum(not r["in_frame"] for r in got)
    res = np.array([round(r["resolution"], 4) for r in rows])
    gain = np.array([round(r["red"] - r["tikhonov"], 5) for r in rows])
    raw = np.array([r["denoised"] - r["input"] for r in rows])
    curve = gain_curve(res, gain, args.bin, args.min_maps)
    raw_curve = {c["low_A"]: c for c in gain_curve(res, raw, args.bin, 1)}
    print("\n%d maps from %d runs (%d more left out: not in the truth's frame, "
          "unet_pairs.in_truth_frame); gain = mean FSC 10-4 A, update at lambda 1 - Tikhonov "
          "update" % (len(rows), len({r["run"] for r in rows}), astray))
    print("| nominal resolution (A) | maps | mean gain | SE | min gain | maps gaining "
          "| mean gain f(x~) - x~ |")
    print("|---|---|---|---|---|---|---|")
    for c in gain_curve(res, gain, args.bin, 1):
        used = any(u["low_A"] == c["low_A"] for u in curve)
        print("| %.0f-%.0f%s | %d | %+.3f | %.3f | %+.3f | %d / %d | %+.3f |"
              % (c["high_A"], c["low_A"], "" if used else " (too few)", c["n"], c["mean"],
                 c["se"], c["min"], c["positive"], c["n"], raw_curve[c["low_A"]]["mean"]))
    try:
        low, high = derive_thresholds(res, gain, args.bin, args.min_maps, args.z)
        print("\nderived: lambda 0 at %.1f A and worse, 1 at %.1f A and better" % (low, high))
    except ValueError as exc:
        low = high = None
        print("\nno schedule derived: %s" % exc)
    maps = [dict(run=r["run"], snr=r["snr"], iteration=r["iteration"], half=r["half"],
                 resolution=round(r["resolution"], 4), gain=round(r["red"] - r["tikhonov"], 5))
            for r in rows]
    with open(os.path.join(args.out, "schedule.json"), "w") as fh:
        json.dump(dict(denoiser=args.denoiser, weights=args.unet_weights or "shipped",
                       command=" ".join(sys.argv), rule=dict(bin=args.bin, min_maps=args.min_maps,
                                                             z=args.z),
                       low_A=low, high_A=high, curve=curve, maps=maps), fh, indent=1)


if __name__ == "__main__":
    main()
