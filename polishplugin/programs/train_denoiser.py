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
for every --recon-every-th truth; targets = truth x half-map FSC. The network sees the standardised
input (mean 0, sd 1, §3.1) and learns the target standardised with the input's mean and sd (MSE,
Adam, cosine learning-rate decay, clipped gradients, random --patch^3 crops with flips and axis
permutations).

Outputs (under --out):
  unet3d.npz   weights + architecture (load with get_denoiser("unet", unet_weights=...))
  scores.json  training record (pairs, settings, loss curve, seconds) and held-out scores: mean FSC
               vs truth between 10 and 4 A of the noisy input, TV and the U-Net; CPU s per call
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
from .cli import at_least, positive, run_program
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
    t = p.add_argument_group("network and optimiser")
    t.add_argument("--base", type=at_least(1), default=8, help="channels at full resolution")
    t.add_argument("--steps", type=at_least(1), default=2500)
    t.add_argument("--batch", type=at_least(1), default=2)
    t.add_argument("--patch", type=at_least(8), default=40, help="crop size (multiple of 4)")
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
    if not args.gauss_per_truth and not args.recon_every:
        raise InputError("--gauss-per-truth", "no pairs: give --gauss-per-truth or --recon-every")
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
    return pairs, record


def random_batch(pairs, batch, patch, rng):
    xs, ts = [], []
    for _ in range(batch):
        x, t = pairs[rng.integers(len(pairs))]
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
    return np.stack(xs)[:, None], np.stack(ts)[:, None]


def train(model, pairs, args, rng):
    """Adam with cosine decay of the learning rate on MSE, gradient norm clipped at --clip (without
    it a run at lr 2e-3 diverged after 950 steps); returns the loss curve (mean per 50 steps)."""
    torch = __import__("torch")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.02)
    model.train()
    curve, acc, t0 = [], [], time.process_time()
    for step in range(args.steps):
        x, t = random_batch(pairs, args.batch, args.patch, rng)
        x, t = torch.from_numpy(x), torch.from_numpy(t)
        loss = torch.mean((model(x) - t) ** 2)
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
    """Held-out (name, truth, [(condition, noisy map)]) at --eval-box / --eval-pixel."""
    from ..core.refine.unet_pairs import gaussian_pair, model_truth, reconstruction_pair
    from ..core.simulate.volumes import pseudo_protein
    n, px = args.eval_box, args.eval_pixel
    truths = [(os.path.basename(p), model_truth(p, n, px, rng)) for p in args.holdout]
    for i in range(args.eval_pseudo):
        v = pseudo_protein(n, px, rng).astype(np.float64)
        truths.append(("pseudo-protein %d" % (i + 1), v / v.std()))
    cases = []
    for name, truth in truths:
        maps = []
        for res, b in ((4.0, 0.0), (6.0, 50.0), (8.0, 0.0), (12.0, 100.0)):
            x, _, _ = gaussian_pair(truth, px, rng, res, bfactor=b)
            maps.append(("coloured noise, FSC 0.143 at %g A, B %g" % (res, b), x))
        for count, snr in ((args.eval_particles, 0.02), (args.eval_particles // 2, 0.005)):
            x, _, _ = reconstruction_pair(truth, px, rng, count, snr, angle_error_deg=2.0)
            maps.append(("B/K of %d particles, SNR %g, 2 deg pose error" % (count, snr), x))
        cases.append((name, truth, maps))
    return cases


def score(args, model):
    """Mean FSC vs truth (10-4 A) of input, TV and U-Net on held-out cases, CPU s per call."""
    from ..core.refine.denoisers import get_denoiser, standardised
    from ..core.refine.unet import apply_unet
    from ..core.refine.unet_pairs import mean_fsc
    rng = np.random.default_rng(args.seed + 1000)
    tv = get_denoiser("tv")
    rows = []
    for name, truth, maps in eval_cases(args, rng):
        for cond, x in maps:
            t0 = time.process_time()
            y = standardised(lambda v: apply_unet(model, v), x)
            cpu = time.process_time() - t0
            rows.append(dict(structure=name, condition=cond, cpu_s=cpu,
                             noisy=mean_fsc(x, truth, args.eval_pixel),
                             tv=mean_fsc(tv(x), truth, args.eval_pixel),
                             unet=mean_fsc(y, truth, args.eval_pixel)))
            log.info("%s, %s: mean FSC 10-4 A noisy %.3f, TV %.3f, U-Net %.3f", name, cond,
                     rows[-1]["noisy"], rows[-1]["tv"], rows[-1]["unet"])
    return rows


def markdown(rows, args):
    lines = ["Held-out mean FSC vs truth between 10 and 4 A (box %d, %.2f A/px, unmasked)"
             % (args.eval_box, args.eval_pixel), "",
             "| structure | noisy map | input | TV (w 0.1) | U-Net |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %.3f | %.3f | %.3f |" % (r["structure"], r["condition"], r["noisy"],
                                                       r["tv"], r["unet"]))
    if rows:
        m = {k: np.mean([r[k] for r in rows]) for k in ("noisy", "tv", "unet")}
        lines.append("| **mean** | | **%.3f** | **%.3f** | **%.3f** |" % (m["noisy"], m["tv"], m["unet"]))
    return "\n".join(lines) + "\n"


def run(args):
    check_args(args)
    from ..core.refine.unet import build_unet, count_parameters, import_torch, save_weights
    torch = import_torch()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "fresh")}
    with claim_output(get_comm(), args.out, "train_denoiser", settings,
                      args.models + args.holdout, OUTPUTS, fresh=args.fresh):
        c0 = time.process_time()
        truths = make_truths(args, rng)
        pairs, record = make_pairs(args, truths, rng)
        data_cpu = time.process_time() - c0
        log.info("%d truths, %d pairs in %.0f CPU-s", len(truths), len(pairs), data_cpu)
        model = build_unet(args.base)
        c1 = time.process_time()
        curve = train(model, pairs, args, rng)
        train_cpu = time.process_time() - c1
        info = dict(parameters=count_parameters(model), pairs=len(pairs), steps=args.steps,
                    final_loss=curve[-1], data_cpu_s=data_cpu, train_cpu_s=train_cpu,
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
    raise SystemExit(main())
