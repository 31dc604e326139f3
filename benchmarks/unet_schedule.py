"""Calibration of CW-RED's lambda schedule for a denoiser (Kimanius et al. 2021, §4.3, Fig. 1c):
the denoiser's single-pass gain, and the half-map optimism it injects, as functions of the input
map's nominal resolution, on maps that are neither the refinement benchmark's structures nor the
U-Net's training set, and the two thresholds derived from them
(``core.refine.confidence.derive_thresholds``).

Calibration maps: every iteration's unregularised half maps x~ = B / K of our own engine's
Tikhonov refinements (``unet_pairs.engine_pairs``: blind from a 30 A low-pass, box 64 at 2.0
A/px as in ``refine_vs_relion.py``) of new pseudo-proteins (random stream (--seed, k) for run k;
the benchmark's pseudo-protein is default_rng(1), the U-Net's training and held-out ones come
from seed 0), run k at the k-th (cycled) of --snrs with the k-th of --counts particles, so that
the maps span the resolutions refinements live at. A unit is one iteration: its two half maps at
the nominal resolution the loop itself reports (masked half-map FSC = 0.143, what CW-RED's lambda
is computed from). Per half map, R = the eq. 17 update at lambda 1 and T = the eq. 11 (Tikhonov)
update, both made from x~ shell by shell with tau^2 from the masked half-map FSC
(``unet_pairs.red_blend``: the two maps lambda interpolates between), and per unit (means over
its two halves):

    l2, l1     1 - |R - truth|_p / |T - truth|_p inside the loop's particle mask, both at the
               grey scale that fits T best to the truth (the paper's Fig. 1c measure)
    band_info  mean FSC vs truth of R - that of T over the shells from 30 A to the nominal
               resolution (the shells the map has information in)
    band_10_4  the same over 10-4 A (the previous calibration's gain)
    optimism   half_map_optimism(R1, R2) - half_map_optimism(T1, T2): shells by which the
               denoiser moves the halves' FSC 0.143 point beyond what their FSC with the truth
               supports (``unet_pairs.half_map_optimism``; the false shared features of §4.3)

The rule (``derive_thresholds``; --gain, --min-n, --z, --bound): lambda > 0 only in resolution
bins (``confidence.EDGES_A``) where the gain is reliably positive and the injected optimism
reliably within one shell. The final pass (full size) is scored but left out of the rule: its
half maps feed no later iteration, and the final map is made from the joined sums with the joined
FSC (with ``--cw-shells final`` also a per-shell weight on f), which this blend of one half does
not emulate. Units with a half that went astray from the truth
(``unet_pairs.in_truth_frame``, as the U-Net's training leaves them out) are left out.

    PYTHONPATH=. python benchmarks/unet_schedule.py --out /tmp/sched --n-runs 8 \
        --snrs 0.05 0.1 0.02 0.01 --counts 400 400 400 800 [--runs 3 2 0 4] [--engine-only]

(the shipped calibration: runs 0-7, two pseudo-proteins per SNR; ``--unet-tta``: the U-Net's
test-time average as the refinement applies it, default the refinement's.) Runs already in --out
(run_K.json; the engine's maps engine_K.npz) are not redone, so runs can be split over processes
(``--runs 3 2 0 4`` and ``--runs 7 6 1 5`` side by side) and the derivation
(printed, and saved as schedule.json: the rule's settings, the curve, the thresholds and every
unit's resolution, gain and optimism, the file shipped as core/refine/weights/unet_schedule.json)
uses every run found in --out.
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
from polishplugin.core.refine.confidence import (EDGES_A, OPTIMISM_BOUND,  # noqa: E402
                                                 derive_thresholds, gain_curve)
from polishplugin.core.refine.denoisers import TTA, UNET_TTA, get_denoiser  # noqa: E402
from polishplugin.core.refine.loop import sphere_mask  # noqa: E402
from polishplugin.core.refine.unet_pairs import (distance_ratio, engine_pairs,  # noqa: E402
                                                 half_map_optimism, in_truth_frame, mean_fsc,
                                                 red_blend)
from polishplugin.core.simulate.volumes import pseudo_protein  # noqa: E402

INFO_LOW_A = 30.0   # measure (b): shells from the start's 30 A low-pass to the nominal resolution


def engine_maps(k, args):
    """(truth, SNR, count, [(x~, target, half-map FSC, record)], engine CPU-s) of calibration run
    ``k``: pseudo-protein (seed, k) refined at the k-th (cycled) of --snrs / --counts; the maps
    cached in --out as engine_K.npz (a cached run is read, not redone)."""
    rng = np.random.default_rng([args.seed, k])
    n, px = args.box, args.px
    truth = pseudo_protein(n, px, rng).astype(np.float64)
    truth /= truth.std()
    snr = args.snrs[k % len(args.snrs)]
    count = args.counts[k % len(args.counts)]
    cache = os.path.join(args.out, "engine_%d.npz" % k)
    c0 = time.process_time()
    if os.path.isfile(cache):       # the refinement's maps, kept so that scoring can be redone
        with np.load(cache) as z:
            maps = [(x, t, c, rec) for x, t, c, rec in zip(
                z["x"].astype(np.float64), z["t"].astype(np.float64), z["c"],
                json.loads(str(z["records"])))]
    else:
        maps = engine_pairs(truth, px, rng, count=count, snr=snr, max_iter=args.max_iter)
        np.savez(cache + ".part.npz", x=np.stack([m[0] for m in maps]).astype(np.float32),
                 t=np.stack([m[1] for m in maps]).astype(np.float32),
                 c=np.stack([np.nan_to_num(m[2]) for m in maps]),
                 records=np.array(json.dumps([m[3] for m in maps])))
        os.replace(cache + ".part.npz", cache)
    return truth, snr, count, maps, time.process_time() - c0


def calibration_run(k, args, denoiser):
    """Units (one per iteration: its two half maps at one nominal resolution) of calibration run
    ``k``, each with the measures of the module docstring."""
    truth, snr, count, maps, engine_cpu = engine_maps(k, args)
    n, px = args.box, args.px
    sphere = sphere_mask(n, min(0.4 * n, n / 2.0 - 1))     # the loop's default particle mask
    rows = []
    for i in range(0, len(maps), 2):
        (x1, t, unmasked, rec), (x2, _, _, _) = maps[i], maps[i + 1]
        curve = fsc(x1 * sphere, x2 * sphere)                # as the loop computes it
        curve[rec["current_size"] // 2:] = 0.0
        res = rec["resolution"]
        row = dict(run=k, snr=snr, count=count, iteration=rec["iteration"], resolution=res,
                   current_size=rec["current_size"],
                   final_pass=i + 2 == len(maps) and rec["current_size"] == n,
                   in_frame=all(in_truth_frame(x, t, unmasked) for x in (x1, x2)))
        tik, red = [], []
        for x in (x1, x2):
            f = denoiser(x)
            tik.append(red_blend(x, np.zeros_like(x), curve, 0.0, rec["current_size"]))
            red.append(red_blend(x, f, curve, 1.0, rec["current_size"]))
            for key, p_ in (("l2", 2), ("l1", 1)):
                row.setdefault(key, []).append(
                    1.0 - distance_ratio([red[-1]], tik[-1], truth, sphere, p_)[0])
            row.setdefault("band_info", []).append(
                mean_fsc(red[-1], truth, px, INFO_LOW_A, res)
                - mean_fsc(tik[-1], truth, px, INFO_LOW_A, res))
            row.setdefault("band_10_4", []).append(
                mean_fsc(red[-1], truth, px) - mean_fsc(tik[-1], truth, px))
            row.setdefault("raw_10_4", []).append(mean_fsc(f, truth, px) - mean_fsc(x, truth, px))
        for key in ("l2", "l1", "band_info", "band_10_4", "raw_10_4"):
            row[key] = float(np.mean(row[key]))
        row["optimism_tikhonov"] = half_map_optimism(tik[0], tik[1], truth, sphere,
                                                     current_size=rec["current_size"])
        row["optimism_red"] = half_map_optimism(red[0], red[1], truth, sphere,
                                                current_size=rec["current_size"])
        row["optimism"] = row["optimism_red"] - row["optimism_tikhonov"]
        rows.append(row)
    print("run %d: SNR %g, %d particles, %d iterations, engine %.0f CPU-s, resolutions %.1f-%.1f A"
          % (k, snr, count, len(rows), engine_cpu, min(r["resolution"] for r in rows),
             max(r["resolution"] for r in rows)), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--denoiser", default="unet")
    p.add_argument("--unet-weights", default=None)
    p.add_argument("--unet-tta", type=int, choices=TTA, default=None,
                   help="denoiser unet: average over this many cube symmetries (default %d, the "
                        "refinement's; 1: the plain network)" % UNET_TTA)
    p.add_argument("--n-runs", type=int, default=4, help="calibration refinements (runs 0..N-1)")
    p.add_argument("--runs", type=int, nargs="*", default=None,
                   help="which of them this process does (default: all)")
    p.add_argument("--snrs", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4])
    p.add_argument("--counts", type=int, nargs="+", default=[400],
                   help="particles of run k: the k-th (cycled), beside --snrs")
    p.add_argument("--engine-only", action="store_true",
                   help="only refine and cache the runs' maps (engine_K.npz), score nothing")
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--px", type=float, default=2.0)
    p.add_argument("--max-iter", type=int, default=12)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--gain", default="l2", choices=("l2", "l1", "band_info", "band_10_4"),
                   help="the gain the rule uses (all are shown)")
    p.add_argument("--min-n", type=int, default=4, help="units (iterations) a bin needs to count")
    p.add_argument("--z", type=float, default=2.0, help="reliably: mean -/+ z SE")
    p.add_argument("--bound", type=float, default=OPTIMISM_BOUND,
                   help="most injected half-map optimism (shells) where lambda > 0")
    args = p.parse_args()
    if args.seed in (0, 1):
        raise SystemExit("--seed 0 and 1 make the U-Net's and the benchmark's pseudo-proteins")
    os.makedirs(args.out, exist_ok=True)
    import torch
    torch.set_num_threads(1)
    if args.engine_only:
        for k in (range(args.n_runs) if args.runs is None else args.runs):
            _, snr, count, maps, cpu = engine_maps(k, args)
            print("run %d: SNR %g, %d particles, %d maps, engine %.0f CPU-s"
                  % (k, snr, count, len(maps), cpu), flush=True)
        return
    if args.denoiser == "unet" and args.unet_tta is None:
        args.unet_tta = UNET_TTA
    denoiser = get_denoiser(args.denoiser, unet_weights=args.unet_weights, tta=args.unet_tta)
    for k in (range(args.n_runs) if args.runs is None else args.runs):
        path = os.path.join(args.out, "run_%d.json" % k)
        if not os.path.isfile(path):
            rows = calibration_run(k, args, denoiser)
            with open(path + ".part", "w") as fh:
                json.dump(dict(args=vars(args), rows=rows), fh, indent=0)
            os.replace(path + ".part", path)
    rows, astray, final = [], 0, []
    for k in range(args.n_runs):
        path = os.path.join(args.out, "run_%d.json" % k)
        if os.path.isfile(path):
            got = json.load(open(path))["rows"]
            rows += [r for r in got if r["in_frame"] and not r["final_pass"]]
            astray += sum(not r["in_frame"] for r in got)
            final += [r for r in got if r["final_pass"]]
    res = np.array([round(r["resolution"], 4) for r in rows])
    gain = np.array([round(r[args.gain], 5) for r in rows])
    opt = np.array([round(r["optimism"], 4) for r in rows])
    edges = EDGES_A
    print("\n%d units (iterations) from %d runs (%d more left out: a half not in the truth's "
          "frame, unet_pairs.in_truth_frame); gains of the update at lambda 1 over the Tikhonov "
          "one, means over bins; the rule uses %s and the injected optimism"
          % (len(rows), len({r["run"] for r in rows}), astray, args.gain))
    print("(the final passes, left out, l2 / injected optimism: %s)" % ", ".join(
        "run %d %.1f A %+.3f / %+.2f" % (r["run"], r["resolution"], r["l2"], r["optimism"])
        for r in final))
    print("| nominal resolution (A) | units | L2 gain (SE, min) | L1 gain | FSC gain 30 A-nominal "
          "| FSC gain 10-4 A | injected optimism, shells (SE, max) | RED half maps' optimism |")
    print("|---|---|---|---|---|---|---|---|")
    every = {key: {c["low_A"]: c for c in gain_curve(
        res, [r[key] for r in rows], edges, 1)} for key in
        ("l2", "l1", "band_info", "band_10_4", "optimism", "optimism_red")}
    used = {c["low_A"] for c in gain_curve(res, gain, edges, args.min_n)}
    for lo, c in every[args.gain].items():
        q = every["optimism"][lo]
        print("| %.0f-%.0f%s | %d | %+.3f (%.3f, %+.3f) | %+.3f | %+.3f | %+.3f | %+.2f (%.2f, "
              "%+.2f) | %+.2f |" % (c["high_A"], lo, "" if lo in used else " (too few)", c["n"],
                                    c["mean"], c["se"], c["min"], every["l1"][lo]["mean"],
                                    every["band_info"][lo]["mean"],
                                    every["band_10_4"][lo]["mean"], q["mean"], q["se"], q["max"],
                                    every["optimism_red"][lo]["mean"]))
    try:
        low, high = derive_thresholds(res, gain, opt, edges, args.min_n, args.z, args.bound)
        print("\nderived: lambda 0 at %.1f A and worse, 1 at %.1f A and better" % (low, high))
    except ValueError as exc:
        low = high = None
        print("\nno schedule derived: %s" % exc)
    units = [dict(run=r["run"], snr=r["snr"], iteration=r["iteration"],
                  resolution=round(r["resolution"], 4), gain=round(r[args.gain], 5),
                  optimism=round(r["optimism"], 4)) for r in rows]
    with open(os.path.join(args.out, "schedule.json"), "w") as fh:
        json.dump(dict(denoiser=args.denoiser, weights=args.unet_weights or "shipped",
                       unet_tta=args.unet_tta,
                       command=" ".join(sys.argv),
                       rule=dict(gain=args.gain, edges=list(edges), min_n=args.min_n, z=args.z,
                                 bound=args.bound),
                       low_A=low, high_A=high, curve=gain_curve(res, gain, edges, args.min_n),
                       units=units), fh, indent=1)

if __name__ == "__main__":
    main()
