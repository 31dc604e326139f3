"""Train the motion-prior parameters sigma_vel, sigma_div, sigma_acc on random subsets of
micrographs; no Scipion needed.

    python -m polishplugin.programs.train --particles run_data.star \\
        --mics MotionCorr/job002/corrected_micrographs.star \\
        --postprocess PostProcess/postprocess.star \\
        --out Train --min-particles 4000 --align-frac 0.5 --restarts 3 [--no-fit-acc] \\
        [--method evidence | tcc]

Each restart chooses its own random subset of micrographs (seed --seed + restart, RELION's
choice: micrographs with >= 2 particles until --min-particles). Every movie is read once: its
training data (CC maps on the alignment circle against the own half map, evaluation ring against
the opposite half map; core/motion/train_data.py) stays in memory while a later restart needs it.

--method evidence (default): per restart, the maximum of the subset's summed marginal likelihood
of the alignment-circle CC maps (core/motion/evidence.py), one alignment per restart.
--method tcc: the paper's TCC maximisation (Zivanov 2019 §2.2, eq. 19) with Nelder-Mead from the
RELION start (0.6, 10000, 3) jittered by up to x1.5; every evaluation re-aligns the subset.

Outputs (under --out), both methods:
  opt_params_all_groups.txt  "s_vel s_div s_acc" (RELION style; s_acc -1 = off): the GEOMETRIC
                             MEAN of the per-restart optima (each is measured on its own subset,
                             so no value picks a best one)
  train.json                 method, per-restart optima, their spread (max/min per sigma), subsets,
                             memory held and time; evidence: each optimum's Laplace width
                             (evidence_spread, a factor; null where the data leave it flat);
                             tcc: flatness (relative TCC drop at x0.5 .. x2 of each sigma) and
                             the best restart
  logfile.pdf                evidence: the optima with their widths; tcc: TCC over the
                             evaluations, optimiser path, TCC slices, optima
  trace.star                 tcc only: every evaluation: restart, index, kind (simplex |
                             flatness), sigmas, TCC, seconds
"""
import argparse
import json
import logging
import math
import os
import time

import numpy as np

from ..io.atomic import atomic_text
from ..io.polish_inputs import load_polish_inputs
from ..io.star import StarTable, write_star
from .cli import (add_max_ed, add_movie_inputs, add_output_options, at_least, auto_window,
                  check_reference_args, exit_program, finish_status, job_figures, max_dims,
                  max_ed_setting, number, positive, resolve_backend, run_program)
from .jobdir import claim_output, input_digests, input_paths
from .micrographs import MovieOnce
from .parallel import get_comm, set_blas_threads, set_threads

log = logging.getLogger("polishplugin.train")

OPT_PARAMS = "opt_params_all_groups.txt"


def build_parser():
    from ..core.motion.training import RELION_SEED, RELION_START
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = add_movie_inputs(p)
    g.add_argument("--allow-missing", action="store_true")
    g.add_argument("--skip-outside", action="store_true")
    t = p.add_argument_group("training")
    t.add_argument("--method", choices=["evidence", "tcc"], default="evidence",
                   help="evidence (default): maximise the marginal likelihood of the subset's "
                        "alignment-circle CC maps (core/motion/evidence.py; one alignment per "
                        "restart, a few times cheaper than tcc; no TCC trace); tcc: the "
                        "paper's TCC maximisation (Nelder-Mead, every evaluation re-aligns the "
                        "subset; --max-evals, --xatol apply to it only)")
    t.add_argument("--min-particles", type=at_least(2), default=4000,
                   help="particles per restart's subset (RELION --min_p)")
    t.add_argument("--align-frac", type=number, default=0.5,
                   help="area fraction of the disc |k| <= k_max used to align (RELION "
                        "--align_frac); the rest is the evaluation ring")
    t.add_argument("--eval-max-res", type=at_least_zero, default=0.0,
                   help="outer edge k_max of the evaluation ring in A (0: the half maps' FSC "
                        "0.143 resolution, as RELION's k_out)")
    t.add_argument("--restarts", type=at_least(1), default=3,
                   help="independent trainings, each on its own random subset")
    t.add_argument("--fit-acc", dest="fit_acc", action="store_true", default=True,
                   help="fit sigma_acc too (RELION --params3, default)")
    t.add_argument("--no-fit-acc", dest="fit_acc", action="store_false",
                   help="fit sigma_vel and sigma_div only, sigma_acc off (RELION --params2)")
    t.add_argument("--start", type=number, nargs=3, default=list(RELION_START),
                   metavar=("S_VEL", "S_DIV", "S_ACC"), help="starting triplet")
    t.add_argument("--max-evals", type=at_least(1), default=100, help="per restart")
    t.add_argument("--xatol", type=positive, default=0.1,
                   help="simplex size in log-sigma to stop")
    t.add_argument("--memory-budget", type=at_least_zero, default=0.0,
                   help="GB of training data per subset (0: no limit); micrographs that would "
                        "exceed it are skipped")
    t.add_argument("--seed", type=at_least(0), default=RELION_SEED)
    f = p.add_argument_group("alignment")
    f.add_argument("--first-frame", type=at_least(1), default=1, help="1-based")
    f.add_argument("--last-frame", type=at_least(-1), default=-1, help="1-based, -1 = last")
    f.add_argument("--window", type=at_least(0), default=0,
                   help="CC search radius (px); 0 = auto")
    f.add_argument("--invert", choices=["auto", "yes", "no"], default="auto")
    f.add_argument("--cc-scale", choices=["likelihood", "relion"], default="likelihood")
    f.add_argument("--no-defects", action="store_true")
    add_max_ed(f)
    add_output_options(p)
    return p


def at_least_zero(text):
    """argparse type: a finite float >= 0."""
    v = number(text)
    if v < 0:
        raise argparse.ArgumentTypeError("%r must be >= 0" % text)
    return v


def check_args(args):
    check_reference_args(args, "train")
    if not 0 < args.align_frac < 1:
        raise SystemExit("train: --align-frac must lie in (0, 1)")
    if args.first_frame < 1 or (args.last_frame != -1 and args.last_frame < args.first_frame + 2):
        raise SystemExit("train: the frame range must hold at least 3 frames")
    n_fit = 3 if args.fit_acc else 2
    if any(v <= 0 for v in args.start[:n_fit]):
        raise SystemExit("train: starting sigmas must be positive")


def eval_k_max(inputs, max_res=0.0):
    """Outer radius k_max (px of the particle box) of the evaluation ring: box * px / resolution,
    the resolution being ``max_res`` or the half maps' FSC 0.143 (postprocess, else computed
    from the masked half maps); capped at Nyquist."""
    from ..core import fourier
    res = max_res if max_res > 0 else inputs.resolution
    if not res:
        m = inputs.mask if inputs.mask is not None else 1.0
        curve = fourier.fsc(inputs.half1 * m, inputs.half2 * m)
        res = fourier.resolution_at(curve, inputs.half1.shape[0], inputs.pixel_size)
    return float(min(inputs.box // 2, inputs.box * inputs.pixel_size / res)), float(res)


def frame_range(args, nframes):
    first = args.first_frame - 1
    last = nframes if args.last_frame == -1 else min(args.last_frame, nframes)
    return first, last


def load_training_micrograph(mic, inputs, projectors, split, window, args):
    """Read one movie once (as polish reads it: :class:`.micrographs.MovieOnce`) and keep its
    :class:`TrainingMicrograph`."""
    from ..core.motion.patches import damage_filters
    from ..core.motion.train_data import build_training_micrograph
    from ..core.predict import predict_particles

    t_align, t_eval, k_max = split
    first, last = frame_range(args, mic.nframes)
    F, px, n = last - first, inputs.pixel_size, inputs.box
    threads = max(1, args.threads or 1)
    own = predict_particles(projectors, mic.angles, mic.half_sets, mic.ctfs, n, px)
    opp = predict_particles(projectors, mic.angles, mic.half_sets, mic.ctfs, n, px, opposite=True)
    damage = damage_filters(n, px, F, mic.dose_per_frame,
                            mic.pre_exposure + first * mic.dose_per_frame, mic.voltage)
    invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
    with MovieOnce(mic, first, last, args.no_defects, threads=threads) as once:
        return build_training_micrograph(
            once.frames(), mic.centres, own, opp, damage, mic.initial_tracks[:, first:last],
            t_align, t_eval, k_max, mic.dose_per_frame, px, window=window, invert=invert,
            cc_scale=args.cc_scale, late_defects=once.late_defects, name=mic.name,
            backend=args.backend, workers=threads)


class _Session:
    """Training data of the micrographs the current and later restarts need (each movie read
    once), the record of every evaluation, and the memory held.

    Under MPI every micrograph of any subset belongs to one rank (balanced by particles), which
    reads it and aligns it for every triplet; the sums of eq. 19 are gathered so that every rank
    sees the same TCC and runs the same Nelder-Mead steps."""

    def __init__(self, inputs, projectors, split, window, subsets, args, comm):
        from .parallel import balanced_share
        self.inputs, self.projectors, self.split, self.window = inputs, projectors, split, window
        self.by_name = {m.name: m for m in inputs.micrographs}
        self.subsets, self.args, self.comm = subsets, args, comm
        names = sorted(set().union(*subsets))
        self.mine = set(balanced_share(names, [len(self.by_name[n].centres) for n in names],
                                       comm))
        self.held, self.failed, self.rows = {}, {}, []
        self.peak_bytes, self.read_seconds, self.restart = 0, 0.0, -1

    def _load(self, names):
        for name in names:
            if name in self.held or name in self.failed:
                continue
            t0 = time.time()
            try:
                self.held[name] = load_training_micrograph(self.by_name[name], self.inputs,
                                                           self.projectors, self.split,
                                                           self.window, self.args)
            except Exception as exc:   # one bad micrograph must not stop the training
                log.error("%s skipped: %s: %s", name, type(exc).__name__, exc)
                self.failed[name] = "%s: %s" % (type(exc).__name__, exc)
            self.read_seconds += time.time() - t0

    def make_objective(self, seed):
        from ..core.motion.train_data import make_align
        from ..core.motion.training import make_tcc_objective
        self.restart += 1
        later = set().union(*self.subsets[self.restart:])
        for name in list(self.held):
            if name not in later:
                del self.held[name]
        self._load([n for n in self.subsets[self.restart] if n in self.mine])
        mics = [self.held[n] for n in self.subsets[self.restart] if n in self.held]
        counts = self.comm.allgather((len(mics), sum(m.n_particles for m in mics),
                                      sum(m.nbytes for m in self.held.values()), self.failed))
        for c in counts:
            self.failed.update(c[3])
        n_mics, n_particles, held = (sum(c[i] for c in counts) for i in range(3))
        if not n_mics:
            raise SystemExit("train: no usable micrograph in the subset of restart %d"
                             % self.restart)
        self.peak_bytes = max(self.peak_bytes, held)
        if self.comm.rank == 0:
            log.info("restart %d (seed %d): %d micrographs, %d particles on %d process(es); "
                     "training data held: %.1f MB", self.restart, seed, n_mics, n_particles,
                     self.comm.size, held / 1e6)
        objective = make_tcc_objective(make_align(mics, self.args.backend, max_dims(self.args)),
                                       [m.eval_data for m in mics], reduce=self._reduce,
                                       backend=self.args.backend)
        restart, t_start = self.restart, time.time()

        def recorded(triplet):
            t0 = time.time()
            value = objective(triplet)
            index = sum(1 for r in self.rows if r["restart"] == restart)
            self.rows.append(dict(restart=restart, seed=seed, index=index,
                                  sigmas=[float(v) for v in triplet], tcc=float(value),
                                  seconds=time.time() - t0))
            if self.comm.rank == 0:
                log.info("[restart %d] evaluation %d: s_vel %.4g s_div %.5g s_acc %.4g -> TCC "
                         "%.8f (%.2f s, %.0f s in this restart)", restart, index, *triplet,
                         value, time.time() - t0, time.time() - t_start)
            return value
        return recorded

    def _reduce(self, sums):
        """Sums of eq. 19 over all ranks, added in rank order (the same float everywhere)."""
        total = np.zeros(3)
        for part in self.comm.allgather(np.asarray(sums, dtype=np.float64)):
            total += part
        return total


def write_trace(path, rows, n_simplex):
    """trace.star: one row per evaluation (kind simplex: Nelder-Mead and its quadratic step;
    flatness: the probes around the optimum)."""
    kind = ["simplex" if r["index"] < n_simplex[r["restart"]] else "flatness" for r in rows]
    table = StarTable({
        "rlnPolishTrainRestart": np.array([r["restart"] for r in rows], dtype=np.int64),
        "rlnPolishTrainEvaluation": np.array([r["index"] for r in rows], dtype=np.int64),
        "rlnPolishTrainKind": np.array(kind, dtype=object),
        "rlnPolishTrainSigmaVel": np.array([r["sigmas"][0] for r in rows]),
        "rlnPolishTrainSigmaDiv": np.array([r["sigmas"][1] for r in rows]),
        "rlnPolishTrainSigmaAcc": np.array([r["sigmas"][2] for r in rows]),
        "rlnPolishTrainTcc": np.array([r["tcc"] for r in rows]),
        "rlnPolishTrainSeconds": np.array([r["seconds"] for r in rows])})
    write_star(path, {"evaluations": table})


def _finite(v):
    return None if v is None or not math.isfinite(v) else v


def run(args):
    check_args(args)
    args.backend = resolve_backend(args.backend)
    set_threads(args.threads)
    set_blas_threads(1)     # the reading is split over --threads (spectra, particle blocks)
    comm = get_comm()
    if comm.rank != 0:      # every rank runs the same optimisation: one log is enough
        logging.getLogger("polishplugin").setLevel(logging.WARNING)
    t_all = time.time()
    out = os.path.abspath(args.out)
    inputs = load_polish_inputs(args.particles, args.mics, args.postprocess, args.half1,
                                args.half2, args.mask, root=args.root,
                                allow_missing=args.allow_missing, skip_outside=args.skip_outside)
    nframes = inputs.micrographs[0].nframes
    if args.first_frame + 2 > nframes or args.last_frame > nframes:
        raise SystemExit("train: frames %d-%d asked of movies of %d frames (3 at least)"
                         % (args.first_frame, args.last_frame, nframes))
    if args.window and args.window > inputs.box // 2 - 2:
        raise SystemExit("train: --window %d does not fit in the %d px box (at most %d)"
                         % (args.window, inputs.box, inputs.box // 2 - 2))
    with claim_output(comm, out, "train", job_settings(args, inputs), input_paths(args, inputs),
                      OUTPUTS, args.fresh):
        return train(args, inputs, out, comm, t_all)


#: names written at the top of the output folder (what --fresh deletes)
OUTPUTS = (OPT_PARAMS, "trace.star", "train.json", "figures", "logfile.pdf")


def job_settings(args, inputs):
    """What defines the training result (recorded in the output folder)."""
    keys = ("method", "min_particles", "align_frac", "eval_max_res", "restarts", "fit_acc", "start",
            "max_evals", "xatol", "memory_budget", "seed", "first_frame", "last_frame",
            "window", "invert", "cc_scale", "no_defects", "allow_missing", "skip_outside")
    settings = {k: getattr(args, k) for k in keys}
    settings.update(max_ed_setting(args))
    settings["inputs"] = input_digests(args, inputs)
    return settings


def train(args, inputs, out, comm, t_all):
    """Restarts of the TCC optimisation on their subsets; rank 0 writes the results."""
    from ..core.motion.tcc import bytes_per_particle, split_threshold
    from ..core.motion.training import FLATNESS_FACTORS, choose_subset, format_opt_params, \
        train_with_restarts
    from ..core.motion.units import MotionParams
    from ..core.predict import make_projectors
    k_max, res = eval_k_max(inputs, args.eval_max_res)
    t_align, t_eval = split_threshold(k_max, args.align_frac)
    mic0 = inputs.micrographs[0]
    first, last = frame_range(args, mic0.nframes)
    F = last - first
    sv_px = MotionParams(*args.start).to_pixels(mic0.dose_per_frame, inputs.pixel_size)[0]
    window = args.window or auto_window(sv_px, F, inputs.box)
    bpp = bytes_per_particle(F, inputs.box, t_eval, k_max, 2 * window + 1)
    budget = args.memory_budget * 1e9 if args.memory_budget > 0 else None
    counts = {m.name: len(m.centres) for m in inputs.micrographs}
    seeds = [args.seed + r for r in range(args.restarts)]
    subsets = [choose_subset(counts, args.min_particles, rng=s, max_bytes=budget,
                             bytes_per_particle=bpp if budget else None) for s in seeds]
    log.info("%d micrographs, %d particles; evaluation ring %.2f-%.2f px of the %d box (k_max at "
             "%.2f A), alignment circle < %.2f px; CC window %d px; %d restart(s) on subsets of "
             "%s particles (%.2f MB per particle)", len(inputs.micrographs), sum(counts.values()),
             t_eval, k_max, inputs.box, res, t_align, window, args.restarts,
             "/".join(str(sum(counts[n] for n in s)) for s in subsets), bpp / 1e6)
    projectors = make_projectors(inputs.half1, inputs.half2, inputs.mask, backend=args.backend)
    session = _Session(inputs, projectors, (t_align, t_eval, k_max), window, subsets, args, comm)
    t_opt = time.time()
    start = tuple(args.start) if args.fit_acc else tuple(args.start[:2]) + (-1.0,)
    geometry = {"k_max_px": k_max, "k_max_A": res, "t_align_px": t_align, "t_eval_px": t_eval,
                "box": inputs.box, "pixel_size": inputs.pixel_size, "frames": F,
                "window_px": window, "processes": comm.size}
    if args.method == "evidence":
        return train_evidence(args, session, subsets, seeds, counts, start, geometry, out, comm,
                              t_opt, t_all)
    summary = train_with_restarts(session.make_objective, seeds, x0=start,
                                  fit_acc=args.fit_acc, max_evals=args.max_evals,
                                  xatol=args.xatol)
    read_seconds = max(comm.allgather(session.read_seconds))
    opt_seconds = time.time() - t_opt - read_seconds
    if comm.rank != 0:
        return 0
    sigmas = summary.geo_mean if args.fit_acc else summary.geo_mean[:2] + (-1.0,)
    with atomic_text(os.path.join(out, OPT_PARAMS)) as fh:
        fh.write(format_opt_params(sigmas))
    write_trace(os.path.join(out, "trace.star"), session.rows,
                [r.n_evals for r in summary.results])
    best = max(range(len(summary.results)), key=lambda i: summary.results[i].tcc)
    report = {
        "sigmas": list(sigmas), "method": "tcc",
        "choice": "geometric mean of the per-restart optima",
        "best_restart": best, "best_sigmas": list(summary.results[best].sigmas),
        "spread": [_finite(v) for v in summary.spread], "fit_acc": args.fit_acc,
        "restarts": [dict(seed=s, micrographs=sub, particles=int(sum(counts[n] for n in sub)),
                          sigmas=list(r.sigmas), tcc=r.tcc, n_evals=r.n_evals,
                          converged=r.converged, message=r.message,
                          flatness={k: v.tolist() for k, v in r.flatness.items()})
                     for s, sub, r in zip(seeds, subsets, summary.results)],
        "flatness_factors": list(FLATNESS_FACTORS), "start": list(start), **geometry,
        "memory": {"peak_held_bytes": int(session.peak_bytes),
                   "estimate_bytes_per_particle": int(bpp)},
        "failed": session.failed, "n_evaluations": len(session.rows),
        "seconds": {"read_and_build": round(read_seconds, 3),
                    "optimise": round(opt_seconds, 3), "total": round(time.time() - t_all, 3)}}
    with atomic_text(os.path.join(out, "train.json")) as fh:
        json.dump(report, fh, indent=1)
    log.info("per-restart optima:\n%s", summary.report())
    log.info("sigmas (geometric mean over %d restarts): %s -> %s; peak training data %.1f MB; "
             "%.1f s reading, %.1f s optimising", args.restarts, format_opt_params(sigmas).strip(),
             os.path.join(out, OPT_PARAMS), session.peak_bytes / 1e6, read_seconds,
             opt_seconds)
    if not args.no_figures:
        job_figures().train_figures(out, os.path.join(out, "figures"))
    return finish_status("train", sorted(session.failed), args.allow_partial)


def train_evidence(args, session, subsets, seeds, counts, start, geometry, out, comm, t_opt,
                   t_all):
    """--method evidence: per restart, the maximum of the summed marginal likelihood of the
    subset's micrographs (:mod:`..core.motion.evidence`), all in paper units; the Laplace width
    of each optimum (a factor exp(sd) per sigma, null where flat or not fitted) is reported."""
    from ..core.motion.evidence import SEARCH_LOWER, SEARCH_UPPER, SigmaSearch, choose_sigmas
    from ..core.motion.training import format_opt_params
    results, seen = [], {}
    for r, sub in enumerate(subsets):
        if tuple(sub) in seen:      # the same subset (e.g. every particle): the same optimum
            results.append(dict(seen[tuple(sub)], seed=seeds[r]))
            continue
        session.restart = r
        session._load([n for n in sub if n in session.mine])
        parts = [session.held[n].evidence(start, args.backend, max_dims(args))
                 for n in sub if n in session.held]

        class Pooled:
            evaluations = 0

            def __call__(self, *t):
                self.evaluations += 1
                return float(sum(session.comm.allgather(sum(f(t) for f in parts))))
        acc_on = args.fit_acc
        ch = choose_sigmas(Pooled(), SigmaSearch(start, SEARCH_LOWER, SEARCH_UPPER,
                                                 fit_acc=acc_on))
        sig = ch.sigmas_px if acc_on else ch.sigmas_px[:2] + (-1.0,)
        width = [_finite(v) for v in ch.spread()][:3 if acc_on else 2]
        results.append({"seed": seeds[r], "micrographs": sub,
                        "particles": int(sum(counts[n] for n in sub)), "sigmas": list(sig),
                        "evidence_spread": width + [None] * (3 - len(width)),
                        "log_evidence": ch.log_evidence,
                        "n_evals": ch.evaluations})
        seen[tuple(sub)] = results[-1]
        if comm.rank == 0:
            log.info("[restart %d] marginal-likelihood optimum %s (width x%s, %d evaluations)",
                     r, format_opt_params(sig).strip(),
                     "/".join("-" if v is None else "%.2f" % v for v in width), ch.evaluations)
    read_seconds = max(comm.allgather(session.read_seconds))
    if comm.rank != 0:
        return 0
    s = np.array([x["sigmas"] for x in results])
    n_fit = 3 if args.fit_acc else 2
    geo = [float(np.exp(np.log(s[:, i]).mean())) for i in range(n_fit)]
    spread = [float(s[:, i].max() / s[:, i].min()) for i in range(n_fit)] + [None] * (3 - n_fit)
    sigmas = tuple(geo) if args.fit_acc else tuple(geo) + (-1.0,)
    with atomic_text(os.path.join(out, OPT_PARAMS)) as fh:
        fh.write(format_opt_params(sigmas))
    report = {"sigmas": list(sigmas), "method": "evidence",
              "choice": "geometric mean of the per-restart marginal-likelihood optima",
              "spread": spread, "fit_acc": args.fit_acc, "restarts": results,
              "start": list(start), **geometry, "failed": session.failed,
              "n_evaluations": int(sum(x["n_evals"] for x in seen.values())),
              "memory": {"peak_held_bytes": int(max(session.peak_bytes,
                                                    sum(m.nbytes for m in session.held.values())))},
              "seconds": {"read_and_build": round(read_seconds, 3),
                          "optimise": round(time.time() - t_opt - read_seconds, 3),
                          "total": round(time.time() - t_all, 3)}}
    with atomic_text(os.path.join(out, "train.json")) as fh:
        json.dump(report, fh, indent=1)
    log.info("sigmas (geometric mean over %d restarts): %s, spread over restarts (max/min) "
             "x%s -> %s", len(results), format_opt_params(sigmas).strip(),
             "/".join("%.2f" % v for v in spread[:n_fit]), os.path.join(out, OPT_PARAMS))
    if not args.no_figures:
        job_figures().train_figures(out, os.path.join(out, "figures"))
    return finish_status("train", sorted(session.failed), args.allow_partial)


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
