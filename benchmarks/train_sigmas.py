"""Motion-parameter training (§2.2, eq. 19 of Zivanov 2019) on simulated movies with known sigmas.

For each true triplet and SNR: simulate training micrographs and held-out micrographs, train
(train_with_restarts: Nelder-Mead on the TCC, restarts from jittered RELION starts, one subset
per restart drawn from the training micrographs), then polish the held-out micrographs with the
trained and with the true sigmas. Prints markdown tables of

* recovered vs true sigmas (ratio; targets x1.5 for sigma_vel and sigma_acc, x3 for sigma_div),
  and the spread (max/min) over restarts;
* the acceptance criterion: RMS track error (A) on held-out micrographs with the trained sigmas
  within 10% of that with the true sigmas;
* flatness: relative TCC drop at x0.5 and x2 of each sigma around the optimum (mean over restarts)
  and the TCC at the true triplet relative to the optimum, on the training data;
* time and peak traced memory (tracemalloc) of building the training data, of the optimisation,
  and of one polishing pass over the same training micrographs.

    python benchmarks/train_sigmas.py [--train-mics 6] [--test-mics 3] [--size 512] [--frames 16]
        [--particles 20] [--box 64] [--snr 0.01 0.05] [--restarts 2] [--eval-res 6.0]
"""
import argparse
import logging
import math
import time
import tracemalloc

import numpy as np

from _common import add_movie_options, movie_config, rms_errors, track_errors
from polishplugin.core.motion.micrograph import polish_simulated_micrograph
from polishplugin.core.motion.tcc import split_threshold, tcc
from polishplugin.core.motion.train_data import make_align, simulated_training_micrograph
from polishplugin.core.motion.training import (choose_subset, make_tcc_objective,
                                               train_with_restarts)
from polishplugin.core.simulate.dataset import simulate_dataset

TRUTHS = ((0.5, 5000.0, 2.0), (1.0, 2000.0, 1.0))
TARGET = (1.5, 3.0, 1.5)


def _timed(fn):
    """(result, CPU seconds) of fn(), untraced (tracemalloc slows the optimiser's small
    allocations many-fold)."""
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def _peak(fn):
    """Peak bytes traced by tracemalloc while fn() runs."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _rms(ds, mics, sigmas):
    return rms_errors([track_errors(m, polish_simulated_micrograph(ds, m, sigmas=sigmas).tracks,
                                    ds.config.pixel_size) for m in mics])[0]


def run_case(truth, snr, a):
    cfg = movie_config(a, snr, n_micrographs=a.train_mics + a.test_mics,
                       pixel_size=a.pixel_size, sigma_vel=truth[0], sigma_div=truth[1],
                       sigma_acc=truth[2])
    ds = simulate_dataset(cfg)
    raw = [ds.micrograph(i) for i in range(len(ds))]
    train_raw, test_raw = raw[:a.train_mics], raw[a.train_mics:]
    k_max = min(a.box // 2, a.box * a.pixel_size / a.eval_res)
    t_align, t_eval = split_threshold(k_max)
    def build():
        return [simulated_training_micrograph(ds, m, t_align, t_eval, k_max) for m in train_raw]
    m_build = _peak(build)
    mics, t_build = _timed(build)
    held = sum(m.nbytes for m in mics)
    counts = {m.name: m.n_particles for m in mics}
    per_restart = max(2, int(a.subset * sum(counts.values())))

    def make_objective(seed):
        names = set(choose_subset(counts, per_restart, rng=seed))
        sub = [m for m in mics if m.name in names]
        return make_tcc_objective(make_align(sub), [m.eval_data for m in sub])
    seeds = [23 + r for r in range(a.restarts)]
    full = make_tcc_objective(make_align(mics), [m.eval_data for m in mics])
    full(truth)                                               # numba warm-up
    summary, t_opt = _timed(lambda: train_with_restarts(make_objective, seeds,
                                                        max_evals=a.max_evals))
    m_eval = _peak(lambda: full(truth))      # transient of one evaluation over all micrographs
    n_evals = sum(r.n_evals + 12 for r in summary.results)
    trained = summary.geo_mean
    tcc_true, tcc_trained = full(truth), full(trained)
    _, t_pol = _timed(lambda: [polish_simulated_micrograph(ds, m) for m in train_raw])
    m_pol = _peak(lambda: polish_simulated_micrograph(ds, train_raw[0]))
    rms_trained = _rms(ds, test_raw, trained)
    rms_true = _rms(ds, test_raw, truth)
    flat = {k: np.mean([r.flatness[k] for r in summary.results], axis=0)
            for k in summary.results[0].flatness}
    truth_tracks = tcc([m.eval_data for m in mics],
                       [r.positions - r.centres[:, None] - m.cut_shifts
                        for r, m in zip(train_raw, mics)])
    return dict(truth=truth, snr=snr, trained=trained, spread=summary.spread,
                optima=[r.sigmas for r in summary.results], rms_trained=rms_trained,
                rms_true=rms_true, flat=flat, tcc_true=tcc_true, tcc_trained=tcc_trained,
                tcc_truth_tracks=truth_tracks, t_build=t_build, m_build=m_build, t_opt=t_opt,
                m_opt=held + m_eval, t_pol=t_pol, m_pol=m_pol, held=held, n_evals=n_evals,
                particles=sum(counts.values()), per_restart=per_restart, k_max=k_max)


def _fmt(t):
    return "%.3g / %.4g / %.3g" % tuple(t)


def report(rows, a):
    print("\n### Recovered sigmas (vel A/dose, div A, acc A/dose), %d training micrographs x %d "
          "particles, subsets of %d%%, %d restarts; evaluation ring up to %.1f A"
          % (a.train_mics, a.particles, 100 * a.subset, a.restarts, a.eval_res))
    print("| truth | SNR | trained (geo. mean) | trained / truth | within target | per-restart "
          "optima | spread max/min |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = [t / s if s > 0 else math.nan for t, s in zip(r["trained"], r["truth"])]
        ok = ["yes" if max(q, 1 / q) <= lim else "no" for q, lim in zip(ratio, TARGET)]
        print("| %s | %g | %s | %s | %s | %s | %s |" % (
            _fmt(r["truth"]), r["snr"], _fmt(r["trained"]), " / ".join("%.2f" % q for q in ratio),
            "/".join(ok), "; ".join(_fmt(o) for o in r["optima"]),
            " / ".join("%.2f" % s for s in r["spread"])))
    print("\n### Acceptance: RMS track error (A) on %d held-out micrographs" % a.test_mics)
    print("| truth | SNR | true sigmas | trained sigmas | trained / true | within 10% |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        q = r["rms_trained"] / r["rms_true"]
        print("| %s | %g | %.3f | %.3f | %.3f | %s |" % (_fmt(r["truth"]), r["snr"], r["rms_true"],
                                                       r["rms_trained"], q,
                                                       "yes" if q <= 1.1 else "no"))
    print("\n### Flatness on the training data: relative TCC drop at x0.5 / x2 (mean over "
          "restarts); TCC at the true triplet and at the true tracks vs the trained optimum")
    print("| truth | SNR | s_vel x0.5 / x2 | s_div x0.5 / x2 | s_acc x0.5 / x2 | TCC trained | "
          "TCC true triplet | TCC true tracks |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["flat"]
        print("| %s | %g | %s | %.6f | %.6f | %.6f |" % (
            _fmt(r["truth"]), r["snr"], " | ".join("%.1e / %.1e" % (f[k][0], f[k][-1])
                                                     for k in ("sigma_vel", "sigma_div",
                                                               "sigma_acc")),
            r["tcc_trained"], r["tcc_true"], r["tcc_truth_tracks"]))
    print("\n### Cost (CPU seconds; peak traced memory: building all training data, held data +"
          " one evaluation, polishing one micrograph), single thread")
    print("| truth | SNR | particles | build data | held data | optimise (evals) | "
          "one polishing pass |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %g | %d | %.1f s, %.1f MB | %.1f MB | %.1f s (%d), %.1f MB "
              "| %.1f s, %.1f MB |"
              % (_fmt(r["truth"]), r["snr"], r["particles"], r["t_build"], r["m_build"] / 1e6,
                 r["held"] / 1e6, r["t_opt"], r["n_evals"], r["m_opt"] / 1e6, r["t_pol"],
                 r["m_pol"] / 1e6))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-mics", type=int, default=6)
    ap.add_argument("--test-mics", type=int, default=3)
    add_movie_options(ap, micrographs=None, size=512, frames=16, particles=20, box=64, seed=11)
    ap.add_argument("--pixel-size", type=float, default=1.5)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--subset", type=float, default=0.7,
                    help="fraction of the training particles in each restart's subset")
    ap.add_argument("--max-evals", type=int, default=60)
    ap.add_argument("--eval-res", type=float, default=6.0,
                    help="outer edge of the evaluation ring (A)")
    ap.add_argument("--cases", type=int, default=len(TRUTHS), help="first N true triplets")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    t0 = time.time()
    for truth in TRUTHS[:a.cases]:
        for snr in a.snr:
            rows.append(run_case(truth, snr, a))
            logging.warning("done truth %s SNR %g after %.0f s", truth, snr, time.time() - t0)
    report(rows, a)
    print("\nwall time %.0f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
