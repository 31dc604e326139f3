"""Train the 3D U-Net denoiser of RED refinement (Kimanius et al. 2021, §3.1) on pairs made with our
simulator, then score it on held-out structures against the noisy input and TV; no Scipion needed.

    python -m polishplugin.programs.train_denoiser --out TrainDenoiser \\
        --models ../shared/data/models/2xhe.pdb ../shared/data/models/6wqa.cif \\
                 ../shared/data/models/7cfn.cif \\
        --holdout ../shared/data/models/5me2.pdb

Truth maps: each --models atomic model in --rotations random orientations and --pseudo
pseudo-proteins, box --box at pixel sizes drawn from --pixel-range. Pairs (core/refine/unet_pairs.py):
--gauss-per-truth coloured-noise half maps per truth (FSC resolution, steepness, B-factor drawn at
random) and one direct-Fourier reconstruction from --particles noisy projections with pose errors
for every --recon-every-th truth; with --engine-runs, the half maps x~ = B / K of every iteration
of that many refinements by our own engine (as §3.1 took RELION's intermediates; kept in --cache);
targets = truth x half-map FSC. The network sees the standardised input (mean 0, sd 1, §3.1) and
learns the target standardised with the input's mean and sd (--loss MSE, Adam, cosine
learning-rate decay, clipped gradients, random --patch^3 crops with flips and axis permutations);
--init fine-tunes given weights.

Outputs (under --out):
  unet3d.npz   weights + architecture (load with get_denoiser("unet", unet_weights=...))
  scores.json  training record (pairs, settings, loss curve, seconds) and held-out scores: mean FSC
               vs truth between 10 and 4 A of the noisy input, TV, the U-Net and the eq. 17
               update with the U-Net's prior mean beside Tikhonov's; CPU s per call
  scores.md    the held-out table in markdown
"""
import argparse
import json
import logging
import os
import time

import numpy as np

from ..io.atomic import atomic_text
from ..io.errors import InputError
from .cli import at_least, exit_program, positive, run_program
from .jobdir import claim_output
from .parallel import get_comm

log = logging.getLogger("polishplugin.train_denoiser")

OUTPUTS = ["unet3d.npz", "scores.json", "scores.md"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fresh", action="store_true", help="delete an earlier run's outputs first")
    d = p.add_argument_group("training data")
    d.add_argument("--models", nargs="*", default=[], help="atomic models (PDB/mmCIF) for training")
    d.add_argument("--holdout", nargs="*", default=[], help="atomic models for the held-out scores")
    d.add_argument("--rotations", type=at_least(1), default=6, help="orientations per model")
    d.add_argument("--pseudo", type=at_least(0), default=18, help="pseudo-protein truths")
    d.add_argument("--box", type=at_least(16), default=64, help="training map box (px)")
    d.add_argument("--pixel-range", type=positive, nargs=2, default=[1.5, 2.2],
                   help="pixel sizes (A) drawn uniformly for the training maps")
    d.add_argument("--gauss-per-truth", type=at_least(0), default=4)
    d.add_argument("--recon-every", type=at_least(0), default=2,
                   help="one reconstruction pair per this many truths (0: none)")
    d.add_argument("--particles", type=at_least(10), nargs=2, default=[600, 2000],
                   help="range of particles per reconstruction pair")
    d.add_argument("--engine-runs", type=at_least(0), default=0,
                   help="refinements by our engine (Tikhonov) whose every iteration's half maps "
                        "x~ = B / K become pairs, on training truths spread over the list")
    d.add_argument("--engine-particles", type=at_least(20), nargs=2, default=[300, 500],
                   help="range of particles per engine refinement")
    d.add_argument("--engine-snr", type=positive, nargs=2, default=[0.02, 0.1],
                   help="SNR range (log-uniform) of the engine refinements' particles")
    d.add_argument("--engine-max-iter", type=at_least(2), default=12)
    d.add_argument("--cache", default="",
                   help="folder keeping each engine refinement's pairs (reused when the same "
                        "run is asked again; keep it outside the repository)")
    t = p.add_argument_group("network and optimiser")
    t.add_argument("--base", type=at_least(1), default=8, help="channels at full resolution")
    t.add_argument("--init", default="", help="weights to start from (fine-tuning) instead of "
                                              "random ones; --base is then theirs")
    t.add_argument("--steps", type=at_least(0), default=2500,
                   help="training steps; 0 with --init: only score those weights")
    t.add_argument("--batch", type=at_least(1), default=2)
    t.add_argument("--patch", type=at_least(8), default=40, help="crop size (multiple of 4)")
    t.add_argument("--loss", choices=("mse", "relative"), default="mse",
                   help="mse: plain MSE on the standardised maps (the shipped weights); "
                        "relative: each pair's MSE divided by its target's variance + "
                        "--loss-floor (see pair_weights; measured worse, MODEL_CARD.md)")
    t.add_argument("--loss-floor", type=positive, default=0.01)
    t.add_argument("--lr", type=positive, default=1e-3)
    t.add_argument("--clip", type=positive, default=1.0, help="gradient-norm clip")
    t.add_argument("--threads", type=at_least(1), default=1, help="torch threads")
    t.add_argument("--seed", type=int, default=0)
    e = p.add_argument_group("held-out scores")
    e.add_argument("--eval-box", type=at_least(16), default=80)
    e.add_argument("--eval-pixel", type=positive, default=1.5)
    e.add_argument("--eval-pseudo", type=at_least(0), default=2, help="held-out pseudo-proteins")
    e.add_argument("--eval-particles", type=at_least(10), default=2000,
                   help="particles of the held-out reconstructions (SNR 0.02; half as many at 0.005)")
    e.add_argument("--eval-engine-particles", type=at_least(0), default=0,
                   help="also score every iteration's half maps of one engine refinement of "
                        "this many particles (SNR 0.05) per held-out truth (0: none)")
    e.add_argument("--no-eval", action="store_true")
    return p


def check_args(args):
    for path in args.models + args.holdout:
        if not os.path.isfile(path):
            raise InputError(path, "atomic model not found")
    if args.patch % 4 or args.patch > args.box:
        raise InputError("--patch", "must be a multiple of 4 and at most --box, got %d" % args.patch)
    if not args.models and not args.pseudo:
        raise InputError("--models", "no training truths: give --models or --pseudo > 0")
    if not args.gauss_per_truth and not args.recon_every and not args.engine_runs:
        raise InputError("--gauss-per-truth", "no pairs: give --gauss-per-truth, --recon-every "
                         "or --engine-runs")
    if args.steps == 0 and not args.init:
        raise InputError("--steps", "0 steps only scores given weights: give --init")
    if args.init and not os.path.isfile(args.init):
        raise InputError(args.init, "weights to start from not found")
    lo, hi = sorted(args.pixel_range)
    if 2.0 * lo > 20.0:
        raise InputError("--pixel-range", "pixel sizes above 10 A leave nothing to denoise")


def make_truths(args, rng):
    """[(name, map, pixel size)] of the training truths."""
    from ..core.refine.unet_pairs import model_truth
    from ..core.simulate.volumes import pseudo_protein
    lo, hi = sorted(args.pixel_range)
    truths = []
    for path in args.models:
        for _ in range(args.rotations):
            px = rng.uniform(lo, hi)
            truths.append((os.path.basename(path), model_truth(path, args.box, px, rng), px))
    for i in range(args.pseudo):
        px = rng.uniform(min(lo, 1.2), hi)
        v = pseudo_protein(args.box, px, rng, radius_A=rng.uniform(0.15, 0.3) * args.box * px,
                           n_chains=int(rng.integers(1, 7))).astype(np.float64)
        truths.append(("pseudo-protein", v / v.std(), px))
    return truths


def draw_gaussian(rng, px):
    """Random coloured-noise settings: FSC resolution 2.2 px .. 25 A (log-uniform), steepness,
    B-factor (zero half the time)."""
    res = float(np.exp(rng.uniform(np.log(2.2 * px), np.log(25.0))))
    return dict(resolution_A=res, steepness=float(rng.uniform(4, 12)),
                bfactor=float(rng.uniform(0, 150)) if rng.uniform() < 0.5 else 0.0)


def draw_recon(rng, particles):
    return dict(count=int(rng.integers(particles[0], particles[1] + 1)),
                snr=float(np.exp(rng.uniform(np.log(0.005), np.log(0.05)))),
                angle_error_deg=float(rng.uniform(0, 4)))


def engine_run(args, tag, name, truth, px, rng, **kw):
    """(x~ maps, targets, half-map FSCs, records) of one engine refinement
    (``unet_pairs.engine_pairs``), kept in --cache under a name made of ``tag`` and the run's
    settings when --cache is given, and read back from there when it is already."""
    from ..core.refine.unet_pairs import engine_pairs, mean_fsc
    path = os.path.join(args.cache, "engine_%s_s%d_%s_n%d_px%.4f_%d_%.4g.npz" % (
        tag, args.seed, name.split(".")[0], truth.shape[0], px, kw["count"], kw["snr"])) \
        if args.cache else ""
    if path and os.path.isfile(path):
        with np.load(path) as z:
            return z["x"], z["t"], z["c"], json.loads(str(z["records"]))
    c0 = time.process_time()
    got = engine_pairs(truth, px, rng, **kw)
    xs = np.stack([g[0] for g in got]).astype(np.float32)
    ts = np.stack([g[1] for g in got]).astype(np.float32)
    cs = np.stack([np.nan_to_num(g[2]) for g in got])
    recs = [dict(g[3], truth_fsc_10_4=mean_fsc(g[0], truth, px)) for g in got]
    log.info("engine run %s (%s, %d particles, SNR %.3g): %d maps in %.0f CPU-s", tag, name,
             kw["count"], kw["snr"], len(got), time.process_time() - c0)
    if path:
        os.makedirs(args.cache, exist_ok=True)
        np.savez(path + ".part.npz", x=xs, t=ts, c=cs, records=np.array(json.dumps(recs)))
        os.replace(path + ".part.npz", path)
    return xs, ts, cs, recs


def engine_set(args, truths):
    """Pairs of --engine-runs refinements by our engine, run k on truth k * len(truths) // runs
    with its own random stream (seed, k), so that a cached run is the same run; [(x~, target)]
    and their records. Maps not in the truth's frame (``unet_pairs.in_truth_frame``) are left
    out."""
    from ..core.refine.unet_pairs import in_truth_frame
    pairs, record = [], []
    lo, hi = sorted(args.engine_particles)
    slo, shi = sorted(args.engine_snr)
    for k in range(args.engine_runs):
        name, truth, px = truths[k * len(truths) // args.engine_runs]
        rng = np.random.default_rng([args.seed, 7, k])
        kw = dict(count=int(rng.integers(lo, hi + 1)),
                  snr=float(np.exp(rng.uniform(np.log(slo), np.log(shi)))),
                  max_iter=args.engine_max_iter)
        xs, ts, cs, recs = engine_run(args, "r%d" % k, name, truth, px, rng, **kw)
        for x, t, c, rec in zip(xs, ts, cs, recs):
            if not in_truth_frame(x.astype(np.float64), t.astype(np.float64), c):
                log.info("engine run %d, iteration %d half %d: not in the truth's frame, left out",
                         k, rec["iteration"], rec["half"])
                continue
            pairs.append(standardise_pair(x, t))
            record.append(dict(kind="engine", truth=name, pixel=px, run=k, **kw, **rec))
    return pairs, record


def standardise_pair(x, target):
    mu, sd = x.mean(), x.std()
    return ((x - mu) / sd).astype(np.float32), ((target - mu) / sd).astype(np.float32)


def make_pairs(args, truths, rng):
    """Standardised (input, target) pairs and a record of their settings."""
    from ..core.refine.unet_pairs import gaussian_pair, reconstruction_pair
    pairs, record = [], []
    for i, (name, truth, px) in enumerate(truths):
        for _ in range(args.gauss_per_truth):
            kw = draw_gaussian(rng, px)
            x, t, _ = gaussian_pair(truth, px, rng, **kw)
            pairs.append(standardise_pair(x, t))
            record.append(dict(kind="gaussian", truth=name, pixel=px, **kw))
        if args.recon_every and i % args.recon_every == 0:
            kw = draw_recon(rng, args.particles)
            x, t, _ = reconstruction_pair(truth, px, rng, **kw)
            pairs.append(standardise_pair(x, t))
            record.append(dict(kind="reconstruction", truth=name, pixel=px, **kw))
    if args.engine_runs:
        more, rec = engine_set(args, truths)
        pairs += more
        record += rec
    return pairs, record


def random_batch(pairs, batch, patch, rng):
    """(inputs, targets, pair indices) of ``batch`` random crops with flips / axis permutations."""
    xs, ts, idx = [], [], []
    for _ in range(batch):
        idx.append(int(rng.integers(len(pairs))))
        x, t = pairs[idx[-1]]
        c = [int(rng.integers(0, s - patch + 1)) for s in x.shape]
        sl = tuple(slice(c0, c0 + patch) for c0 in c)
        x, t = x[sl], t[sl]
        perm = rng.permutation(3)
        flips = tuple(np.flatnonzero(rng.uniform(size=3) < 0.5))
        x, t = np.transpose(x, perm), np.transpose(t, perm)
        if flips:
            x, t = np.flip(x, flips), np.flip(t, flips)
        xs.append(np.ascontiguousarray(x))
        ts.append(np.ascontiguousarray(t))
    return np.stack(xs)[:, None], np.stack(ts)[:, None], np.array(idx)


def pair_weights(pairs, loss, floor):
    """Loss weight of each pair, mean 1: all 1 for "mse"; for "relative" 1 / (var(t) + floor), t
    the standardised target. With the input's sd as the unit (§3.1) a map whose FSC falls to
    0.143 at 8 A has a target of variance ~0.04 (12 A: ~0.001) against ~0.7 at 4.5 A, so plain MSE
    all but ignores low-resolution maps; "relative" weighs every map's error against its own
    target's power."""
    if loss == "mse":
        return np.ones(len(pairs))
    w = np.array([1.0 / (float(t.var()) + floor) for _, t in pairs])
    return w / w.mean()


def train(model, pairs, args, rng):
    """Adam with cosine decay of the learning rate on the (--loss) weighted MSE, gradient norm
    clipped at --clip (without it a run at lr 2e-3 diverged after 950 steps); returns the loss
    curve (mean per 50 steps)."""
    torch = __import__("torch")
    weights = pair_weights(pairs, args.loss, args.loss_floor)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.02)
    model.train()
    curve, acc, t0 = [], [], time.process_time()
    for step in range(args.steps):
        x, t, idx = random_batch(pairs, args.batch, args.patch, rng)
        x, t = torch.from_numpy(x), torch.from_numpy(t)
        w = torch.from_numpy(weights[idx].astype(np.float32))
        loss = torch.mean(w * torch.mean((model(x) - t) ** 2, dim=(1, 2, 3, 4)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        sched.step()
        acc.append(loss.item())
        if len(acc) == 50 or step == args.steps - 1:
            curve.append(float(np.mean(acc)))
            acc = []
            log.info("step %d/%d: loss %.4f (%.0f CPU-s)", step + 1, args.steps, curve[-1],
                     time.process_time() - t0)
    model.eval()
    return curve


def eval_cases(args, rng):
    """Held-out (name, truth, [(condition, noisy map, half-map FSC)]) at --eval-box /
    --eval-pixel: coloured noise and B / K maps, and with --eval-engine-particles every
    iteration's half map x~ of one engine refinement per truth (SNR 0.05)."""
    from ..core.refine.unet_pairs import gaussian_pair, model_truth, reconstruction_pair
    from ..core.simulate.volumes import pseudo_protein
    n, px = args.eval_box, args.eval_pixel
    truths = [(os.path.basename(p), model_truth(p, n, px, rng)) for p in args.holdout]
    for i in range(args.eval_pseudo):
        v = pseudo_protein(n, px, rng).astype(np.float64)
        truths.append(("pseudo-protein %d" % (i + 1), v / v.std()))
    cases = []
    for i, (name, truth) in enumerate(truths):
        maps = []
        for res, b in ((4.0, 0.0), (6.0, 50.0), (8.0, 0.0), (12.0, 100.0)):
            x, _, c = gaussian_pair(truth, px, rng, res, bfactor=b)
            maps.append(("coloured noise, FSC 0.143 at %g A, B %g" % (res, b), x, c))
        for count, snr in ((args.eval_particles, 0.02), (args.eval_particles // 2, 0.005)):
            x, _, c = reconstruction_pair(truth, px, rng, count, snr, angle_error_deg=2.0)
            maps.append(("B/K of %d particles, SNR %g, 2 deg pose error" % (count, snr), x, c))
        if args.eval_engine_particles:
            xs, _, cs, recs = engine_run(
                args, "heldout%d" % i, name.replace(" ", ""), truth, px,
                np.random.default_rng([args.seed, 11, i]), count=args.eval_engine_particles,
                snr=0.05, max_iter=args.engine_max_iter)
            for x, c, r in zip(xs, cs, recs):
                maps.append(("engine x~, iteration %d half %d, half-map %.1f A"
                             % (r["iteration"], r["half"], r["resolution"]), x, c))
        cases.append((name, truth, maps))
    return cases


def score(args, model):
    """Mean FSC vs truth (10-4 A) on held-out cases of the input, TV, the U-Net, and of the eq. 17
    update (``unet_pairs.red_blend``) with the U-Net's prior mean at lambda 1 and at the CW-RED
    lambda of the map's half-map resolution, beside the Tikhonov update; CPU s per call."""
    from ..core.fourier import resolution_at
    from ..core.refine.confidence import cw_red_lambda
    from ..core.refine.denoisers import get_denoiser, standardised
    from ..core.refine.unet import apply_unet
    from ..core.refine.unet_pairs import mean_fsc, red_blend
    rng = np.random.default_rng(args.seed + 1000)
    tv = get_denoiser("tv")
    px = args.eval_pixel
    rows = []
    for name, truth, maps in eval_cases(args, rng):
        for cond, x, curve in maps:
            x = np.asarray(x, np.float64)
            t0 = time.process_time()
            y = standardised(lambda v: apply_unet(model, v), x)
            cpu = time.process_time() - t0
            res = resolution_at(np.asarray(curve, np.float64), x.shape[0], px)
            lam = cw_red_lambda(res)
            rows.append(dict(structure=name, condition=cond, cpu_s=cpu, half_map_A=res, lam=lam,
                             noisy=mean_fsc(x, truth, px), tv=mean_fsc(tv(x), truth, px),
                             unet=mean_fsc(y, truth, px),
                             tikhonov=mean_fsc(red_blend(x, 0 * x, curve), truth, px),
                             red=mean_fsc(red_blend(x, y, curve), truth, px),
                             cw_red=mean_fsc(red_blend(x, y, curve, lam), truth, px)))
            log.info("%s, %s: mean FSC 10-4 A noisy %.3f, TV %.3f, U-Net %.3f; update Tikhonov "
                     "%.3f, RED %.3f, CW-RED (lambda %.2f) %.3f", name, cond, rows[-1]["noisy"],
                     rows[-1]["tv"], rows[-1]["unet"], rows[-1]["tikhonov"], rows[-1]["red"], lam,
                     rows[-1]["cw_red"])
    return rows


COLUMNS = ("noisy", "tv", "unet", "tikhonov", "red", "cw_red")


def markdown(rows, args):
    """The held-out table; engine maps grouped per structure by half-map resolution."""
    lines = ["Held-out mean FSC vs truth between 10 and 4 A (box %d, %.2f A/px, unmasked). "
             "Update columns: eq. 17 on x~ shell by shell with tau^2 from the half-map FSC, "
             "prior mean 0 (Tikhonov) or the U-Net's f(x~) at lambda 1 (RED) or at the CW-RED "
             "lambda of the half-map resolution" % (args.eval_box, args.eval_pixel), "",
             "| structure | noisy map | input | TV (w 0.1) | U-Net | update: Tikhonov | RED | CW-RED |",
             "|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        if r["condition"].startswith("engine"):
            res = r["half_map_A"]
            edges = [e for e in (6, 8, 10, 12) if res > e]
            lo = edges[-1] if edges else None
            label = ("engine x~, half-map %s A" % ("<= 6" if lo is None else ">= 12" if lo == 12
                                                   else "%d-%d" % (lo, lo + 2)))
        else:
            label = r["condition"]
        groups.setdefault((r["structure"], label), []).append(r)
    for (structure, label), rs in groups.items():
        m = [np.mean([r[k] for r in rs]) for k in COLUMNS]
        count = " (%d maps)" % len(rs) if len(rs) > 1 else ""
        lines.append("| %s | %s%s | " % (structure, label, count) + " | ".join("%.3f" % v for v in m)
                     + " |")
    if rows:
        m = [np.mean([r[k] for r in rows]) for k in COLUMNS]
        lines.append("| **mean** (%d maps) | | " % len(rows) + " | ".join("**%.3f**" % v for v in m)
                     + " |")
    return "\n".join(lines) + "\n"


def run(args):
    check_args(args)
    from ..core.refine.unet import (build_unet, count_parameters, import_torch, load_unet,
                                    save_weights)
    torch = import_torch()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "fresh")}
    with claim_output(get_comm(), args.out, "train_denoiser", settings,
                      args.models + args.holdout, OUTPUTS, fresh=args.fresh):
        c0 = time.process_time()
        pairs, record = [], []
        if args.steps:
            truths = make_truths(args, rng)
            pairs, record = make_pairs(args, truths, rng)
            log.info("%d truths, %d pairs in %.0f CPU-s", len(truths), len(pairs),
                     time.process_time() - c0)
        data_cpu = time.process_time() - c0
        model = load_unet(args.init) if args.init else build_unet(args.base)
        c1 = time.process_time()
        curve = train(model, pairs, args, rng) if args.steps else []
        train_cpu = time.process_time() - c1
        info = dict(parameters=count_parameters(model), pairs=len(pairs), steps=args.steps,
                    final_loss=curve[-1] if curve else None, data_cpu_s=data_cpu,
                    train_cpu_s=train_cpu, init=os.path.basename(args.init) if args.init else None,
                    models=[os.path.basename(m) for m in args.models],
                    holdout=[os.path.basename(m) for m in args.holdout])
        save_weights(model, os.path.join(args.out, "unet3d.npz"), info)
        rows = [] if args.no_eval else score(args, model)
        with atomic_text(os.path.join(args.out, "scores.json")) as fh:
            json.dump(dict(info=info, settings=settings, loss_curve=curve, pairs=record,
                           heldout=rows), fh, indent=1)
        with atomic_text(os.path.join(args.out, "scores.md")) as fh:
            fh.write(markdown(rows, args))
        log.info("%d parameters; training %.0f CPU-s, data %.0f CPU-s; weights in %s",
                 info["parameters"], train_cpu, data_cpu, args.out)
    return 0


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
