"""Bayesian polishing: per-particle motion tracks under the GP prior of Zivanov et al. (2019),
MAP by L-BFGS, on RELION files; no Scipion needed.

    python -m polishplugin.programs.polish --particles run_data.star \\
        --mics MotionCorr/job002/corrected_micrographs.star --postprocess PostProcess/postprocess.star \\
        --out Polish [--sigma-vel 0.2 --sigma-div 5000 --sigma-acc 2 | --params-file opt_params.txt]
    mpirun -np 4 python -m polishplugin.programs.polish ...      # micrographs split over ranks

Per micrograph (under --out): tracks/<mic>_tracks.star (RELION _tracks.star layout, A),
fcc/<mic>_FCC_{cc,w0,w1}.mrc (eq. 20 sums against the opposite half map, frames x rings),
diag/<mic>.json (fit diagnostics). At the end: tracks_all.star (every particle and frame),
particles.star (the particles of polished micrographs), failed.txt, logfile.pdf.
Finished micrographs are skipped on a re-run (their tracks STAR is written last, atomically).
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from ..constants import DEFAULT_SIGMA_ACC, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_VEL
from ..io.atomic import atomic_text
from ..io.errors import InputError
from ..io.polish_inputs import load_polish_inputs
from ..io.star import StarTable, read_tracks_star, write_particles_star, write_star, \
    write_tracks_star
from .parallel import get_comm, my_share, set_threads
from .cli import (add_movie_inputs, add_output_options, auto_window, check_reference_args,
                  report_error, run_program)
from .micrographs import micrograph_defects

log = logging.getLogger("polishplugin.polish")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = add_movie_inputs(p)
    g.add_argument("--allow-missing", action="store_true",
                   help="drop particles of micrographs absent from --mics (default: error)")
    g.add_argument("--skip-outside", action="store_true",
                   help="drop particles centred outside their micrograph (default: error)")
    m = p.add_argument_group("motion prior (paper units, Zivanov 2019 Table 2)")
    m.add_argument("--sigma-vel", type=float, default=DEFAULT_SIGMA_VEL, help="A per e/A^2")
    m.add_argument("--sigma-div", type=float, default=DEFAULT_SIGMA_DIV, help="A")
    m.add_argument("--sigma-acc", type=float, default=DEFAULT_SIGMA_ACC,
                   help="A per e/A^2; <= 0 disables the acceleration term")
    m.add_argument("--params-file", help="RELION-style 'sigma_vel sigma_div sigma_acc' file "
                                         "(e.g. from the training program); overrides the three")
    f = p.add_argument_group("fit")
    f.add_argument("--first-frame", type=int, default=1, help="1-based")
    f.add_argument("--last-frame", type=int, default=-1, help="1-based, -1 = last")
    f.add_argument("--patch", type=int, default=0,
                   help="patch cut around each particle (px); 0 = auto: the box plus the CTF "
                        "delocalisation at the reference's resolution, at most twice the box")
    f.add_argument("--window", type=int, default=0,
                   help="CC search radius (px) around the initial track; 0 = auto")
    f.add_argument("--mode", choices=["gp", "none", "global"], default="gp",
                   help="gp: the paper's prior; none: unregularised per particle; global: one "
                        "track for all particles")
    f.add_argument("--init", choices=["motioncorr", "data"], default="motioncorr",
                   help="initial tracks from the MotionCorr shifts or a global track estimated "
                        "from the data")
    f.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                   help="contrast of the movies w.r.t. the reference (auto: from the data)")
    f.add_argument("--prior-mean", choices=["zero", "initial"], default="zero",
                   help="zero: the paper's prior on the whole motion; initial: the prior on the "
                        "deviation from the initial (MotionCorr) track, more forgiving of a "
                        "large stage drift with small sigmas")
    f.add_argument("--cc-scale", choices=["likelihood", "relion"], default="likelihood",
                   help="weight of the data term: exact likelihood (default) or RELION's "
                        "(~2/pi of it; use with sigmas trained by RELION)")
    f.add_argument("--defect-map", help="detector defect map (MRC/TIFF, non-zero = defect) for "
                                        "all movies, added to what is found in each movie")
    f.add_argument("--no-defects", action="store_true",
                   help="do not detect hot/dead pixels from the movies")
    add_output_options(p)
    return p


def read_params_file(path):
    """sigma_vel sigma_div sigma_acc from a RELION opt_params file (s_acc -1 = disabled)."""
    try:
        vals = [float(v) for v in open(path).read().split()[:3]]
    except (OSError, ValueError) as exc:
        raise InputError(path, "cannot read three numbers: %s" % exc)
    if len(vals) < 2:
        raise InputError(path, "needs 'sigma_vel sigma_div [sigma_acc]'")
    return vals[0], vals[1], vals[2] if len(vals) > 2 else -1.0


def auto_patch(inputs):
    """Patch size of the job (one for all micrographs, so their FCC sums add): the particle box
    plus the CTF delocalisation of the largest defocus at the reference's FSC = 0.143
    resolution (:func:`polishplugin.core.motion.patches.patch_size`)."""
    from ..core.fourier import fsc, resolution_at
    from ..core.motion.patches import patch_size
    res = inputs.resolution
    if not res:
        m = 1.0 if inputs.mask is None else inputs.mask
        res = resolution_at(fsc(inputs.half1 * m, inputs.half2 * m), inputs.half1.shape[0],
                            inputs.pixel_size)
    dz = max(max(c.defocus_u, c.defocus_v) for mic in inputs.micrographs for c in mic.ctfs)
    n = patch_size(inputs.box, inputs.pixel_size, dz, res, inputs.micrographs[0].voltage)
    log.info("patches of %d px for a %d px box (defocus up to %.0f A, reference at %.2f A)",
             n, inputs.box, dz, res)
    return n


def mic_stem(name):
    """Output path stem of a micrograph (its path without extension, kept relative)."""
    stem = os.path.splitext(os.path.normpath(str(name)))[0].lstrip(os.sep)
    return os.path.join(*[p for p in stem.split(os.sep) if p not in ("..", ".")])


def output_paths(out, name):
    s = mic_stem(name)
    return {"tracks": os.path.join(out, "tracks", s + "_tracks.star"),
            "fcc": {k: os.path.join(out, "fcc", "%s_FCC_%s.mrc" % (s, k))
                    for k in ("cc", "w0", "w1")},
            "diag": os.path.join(out, "diag", s + ".json"),
            "sum": os.path.join(out, "diag", s + "_sum.mrc"),
            "failed": os.path.join(out, "failed", s + ".txt")}


def check_args(args):
    check_reference_args(args, "polish")
    if args.first_frame < 1:
        raise SystemExit("polish: --first-frame must be >= 1")
    if args.last_frame != -1 and args.last_frame < args.first_frame + 1:
        raise SystemExit("polish: --last-frame must leave at least 2 frames")


# ------------------------------------------------------------------------ one micrograph
def polish_one(mic, inputs, projectors, sigmas, args, out):
    """Align one micrograph and write its outputs; returns a diagnostics dict."""
    from ..core.motion.micrograph import align_micrograph
    from ..core.motion.patches import damage_filters
    from ..core.motion.units import MotionParams
    from ..core.predict import predict_particles
    from ..io.movies import Movie, read_gain
    from ..io.mrc import write_mrc

    t0 = time.time()
    paths = output_paths(out, mic.name)
    first = args.first_frame - 1
    last = mic.nframes if args.last_frame == -1 else min(args.last_frame, mic.nframes)
    F = last - first
    px, n = inputs.pixel_size, args.patch_px
    with Movie(mic.movie) as raw:  # raw counts: the Poisson test of the defect search needs them
        raw_sum = raw.sum(first, last)
    defects = micrograph_defects(mic, first, last, args.no_defects, args.defect_mask, raw_sum)
    gain = read_gain(mic.gain) if mic.gain else None
    with Movie(mic.movie, gain=mic.gain) as movie:
        preds = predict_particles(projectors, mic.angles, mic.half_sets, mic.ctfs, n, px)
        opp = predict_particles(projectors, mic.angles, mic.half_sets, mic.ctfs, n, px,
                                opposite=True)
        damage = damage_filters(n, px, F, mic.dose_per_frame,
                                mic.pre_exposure + first * mic.dose_per_frame, mic.voltage)
        sig_px = MotionParams(*sigmas).to_pixels(mic.dose_per_frame, px)
        init = mic.initial_tracks[:, first:last] if args.init == "motioncorr" else None
        window = args.window or auto_window(sig_px[0], F, inputs.box)
        invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
        res = align_micrograph(movie.iter_frames(first, last), mic.centres, preds, damage, sig_px,
                               init, window=window, mode=args.mode, invert=invert,
                               opposite_predictions=opp, backend=args.backend, n_frames=F,
                               defects=defects, cc_scale=args.cc_scale,
                               prior_mean=args.prior_mean)
    for key, arr in (("cc", res.fcc.num), ("w0", res.fcc.wobs), ("w1", res.fcc.wpred)):
        os.makedirs(os.path.dirname(paths["fcc"][key]), exist_ok=True)
        write_mrc(paths["fcc"][key], arr.astype(np.float32), px)
    from ..viewers.plots import binned
    small, factor = binned(raw_sum * (gain if gain is not None else 1.0))
    os.makedirs(os.path.dirname(paths["sum"]), exist_ok=True)
    write_mrc(paths["sum"], small.astype(np.float32), px * factor)
    diag = {"micrograph": mic.name, "particles": int(len(mic.centres)), "frames": F,
            "first_frame": first + 1, "pixel_size": px, "iterations": res.fit.iterations,
            "energy": res.fit.energy, "converged": res.fit.converged,
            "message": res.fit.message, "gp_dims": res.fit.n_dims, "sign": res.sign,
            "amplitude": res.amplitude, "window_px": window, "patch_px": n,
            "defect_pixels": int(defects.sum()) if defects is not None else 0,
            "sigmas": list(sigmas), "sigmas_px": list(sig_px), "mode": args.mode, "cc_scale": args.cc_scale, "prior_mean": args.prior_mean,
            "init": args.init, "seconds": round(time.time() - t0, 3),
            "rows": mic.index.tolist(), "centres": mic.centres.tolist(), "initial_tracks_A": (res.initial_tracks * px).tolist()}
    os.makedirs(os.path.dirname(paths["diag"]), exist_ok=True)
    with atomic_text(paths["diag"]) as fh:
        json.dump(diag, fh)
    os.makedirs(os.path.dirname(paths["tracks"]), exist_ok=True)
    write_tracks_star(paths["tracks"], res.tracks * px)  # written last: marks the micrograph done
    if os.path.exists(paths["failed"]):
        os.remove(paths["failed"])
    return diag


def mark_failed(out, mic, exc):
    p = output_paths(out, mic.name)["failed"]
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with atomic_text(p) as fh:
        fh.write("%s: %s\n" % (type(exc).__name__, exc))


# ------------------------------------------------------------------------ whole job
def combine(out, inputs):
    """tracks_all.star, particles.star of polished micrographs, failed.txt; returns counts."""
    rows = {k: [] for k in ("rlnMicrographName", "rlnImageName", "rlnMicrographFrameNumber",
                            "rlnOriginXAngst", "rlnOriginYAngst")}
    keep, failed = [], []
    images = inputs.particles["rlnImageName"] if "rlnImageName" in inputs.particles else None
    for mic in inputs.micrographs:
        paths = output_paths(out, mic.name)
        if not os.path.exists(paths["tracks"]):
            reason = open(paths["failed"]).read().strip() if os.path.exists(paths["failed"]) \
                else "not processed"
            failed.append("%s\t%s" % (mic.name, reason))
            continue
        tracks = read_tracks_star(paths["tracks"])
        with open(paths["diag"]) as fh:
            first = json.load(fh)["first_frame"]
        P, F = tracks.shape[:2]
        for p in range(P):
            rows["rlnMicrographName"] += [mic.name] * F
            rows["rlnImageName"] += [str(images[mic.index[p]]) if images is not None
                                     else "%d@%s" % (p + 1, mic.name)] * F
            rows["rlnMicrographFrameNumber"] += list(range(first, first + F))
            rows["rlnOriginXAngst"] += tracks[p, :, 0].tolist()
            rows["rlnOriginYAngst"] += tracks[p, :, 1].tolist()
        keep.extend(mic.index.tolist())
    write_star(os.path.join(out, "tracks_all.star"), {"tracks": StarTable(rows)})
    write_particles_star(os.path.join(out, "particles.star"), inputs.optics,
                         inputs.particles.take(np.sort(np.asarray(keep, dtype=int))))
    with atomic_text(os.path.join(out, "failed.txt")) as fh:
        fh.write("\n".join(failed) + ("\n" if failed else ""))
    return len(keep), failed


def run(args):
    check_args(args)
    comm = get_comm()
    set_threads(args.threads)
    out = os.path.abspath(args.out)
    sigmas = read_params_file(args.params_file) if args.params_file else \
        (args.sigma_vel, args.sigma_div, args.sigma_acc)
    inputs = load_polish_inputs(args.particles, args.mics, args.postprocess, args.half1,
                                args.half2, args.mask, root=args.root,
                                allow_missing=args.allow_missing, skip_outside=args.skip_outside)
    if args.last_frame != -1 and args.last_frame > inputs.micrographs[0].nframes:
        raise SystemExit("polish: --last-frame %d beyond the %d frames of the movies"
                         % (args.last_frame, inputs.micrographs[0].nframes))
    args.defect_mask = None
    if args.defect_map:
        from ..io.movies import read_gain
        args.defect_mask = read_gain(args.defect_map) != 0
        for m in inputs.micrographs:
            if args.defect_mask.shape != m.shape:
                raise InputError(args.defect_map, "defect map is %dx%d but movie %s is %dx%d"
                                 % (args.defect_mask.shape[1], args.defect_mask.shape[0],
                                    m.movie, m.shape[1], m.shape[0]))
    args.patch_px = args.patch or auto_patch(inputs)
    from ..core.predict import make_projectors
    projectors = make_projectors(inputs.half1, inputs.half2, inputs.mask)
    todo = [m for m in inputs.micrographs if not os.path.exists(output_paths(out, m.name)["tracks"])]
    if comm.rank == 0:
        os.makedirs(out, exist_ok=True)
        log.info("%d micrographs, %d to do (%d already done), %d particles; sigmas %s; %d rank(s)",
                 len(inputs.micrographs), len(todo), len(inputs.micrographs) - len(todo),
                 sum(len(m.centres) for m in inputs.micrographs), sigmas, comm.size)
    mine = my_share(todo, comm)
    t0 = time.time()
    for i, mic in enumerate(mine):
        try:
            d = polish_one(mic, inputs, projectors, sigmas, args, out)
            eta = (time.time() - t0) / (i + 1) * (len(mine) - i - 1)
            log.info("[rank %d] %d/%d %s: %d particles, %d iterations%s, %.1f s (eta %.0f s)",
                     comm.rank, i + 1, len(mine), mic.name, d["particles"], d["iterations"],
                     "" if d["converged"] else " (NOT converged)", d["seconds"], eta)
        except Exception as exc:  # one bad micrograph must not stop the others
            from ..core.motion.fit import MotionFitError
            if not isinstance(exc, (MotionFitError, InputError, ValueError)):
                raise
            log.error("[rank %d] %s FAILED: %s", comm.rank, mic.name, exc)
            mark_failed(out, mic, exc)
    comm.barrier()
    if comm.rank == 0:
        n_ok, failed = combine(out, inputs)
        if failed:
            log.warning("%d micrograph(s) failed or were not processed (see failed.txt)",
                        len(failed))
        if not args.no_figures:
            from ..viewers.figures import polish_figures
            polish_figures(out, os.path.join(out, "figures"))
        log.info("done: %d particles with tracks in %.1f s -> %s", n_ok, time.time() - t0, out)
        if failed and not n_ok:
            report_error("no micrograph could be polished (%d failed, see %s); first: %s"
                         % (len(failed), os.path.join(out, "failed.txt"), failed[0]))
            return 1
        return 0
    return 0


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
