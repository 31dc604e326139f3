"""Gold-standard 3D auto-refinement with a Gaussian (Tikhonov), RED or confidence-weighted RED
prior (Kimanius et al. 2021; engine: :mod:`polishplugin.core.refine.loop`); no Scipion needed.

    python -m polishplugin.programs.refine --particles particles.star --ref start.mrc --out Refine \\
        [--mask mask.mrc] [--mode tikhonov|red|cw-red] [--denoiser tv] [--root DIR]

Reads a RELION 3.1 particles STAR (stacks named by rlnImageName relative to --root, else the
current directory, else the STAR's folder), CTF per particle, half-sets from rlnRandomSubset
(alternating when absent); the starting map (MRC, same box and pixel size), low-passed at
--ini-high; an optional solvent mask (default: a soft sphere of --particle-diameter).

Writes under --out:
  half1.mrc, half2.mrc   the two half-set maps of the last iteration (regularised, eq. 11 / 17:
                         with red / cw-red they hold the denoiser's output)
  half1_unregularised.mrc, half2_unregularised.mrc
                         the last iteration's halves B / K before any prior or denoiser (grey
                         scale of half1.mrc): the maps fsc.star's FSCs are computed from, and the
                         ones to hand to validation (relion_postprocess, local resolution), whose
                         FSC would otherwise see the prior's or the denoiser's shared features
  map.mrc                the final map from both halves' sums joined
  fsc.star               data_general (rlnFinalResolution: half-map FSC 0.143 resolution, A;
                         rlnImageSize, rlnImagePixelSize, rlnCurrentIteration); data_fsc
                         (rlnSpectralIndex, rlnResolution, rlnAngstromResolution,
                         rlnFourierShellCorrelation = gold-standard FSC of the last iteration,
                         unregularised half maps in a sphere); with --mask also, as
                         relion_postprocess (Chen et al. 2013), the FSC of those half maps
                         unmasked, masked, masked with phases randomised beyond rlnRandomiseFrom
                         and corrected (rlnFourierShellCorrelationUnmaskedMaps, ...MaskedMaps,
                         rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps,
                         rlnFourierShellCorrelationCorrected) and rlnPpCorrectedResolution (its
                         0.143 resolution, A), rlnRandomiseFrom (A), rlnMaskName
  particles.star         the input particles with refined rlnAngleRot/Tilt/Psi (degrees),
                         rlnOriginXAngst/YAngst, rlnMaxValueProbDistribution, rlnRandomSubset
                         (image names unchanged: relative to the same folder as the input's)
  iterations.star        one row per iteration: rlnCurrentIteration, rlnHealpixOrder,
                         rlnCurrentImageSize, rlnCurrentResolution (A), rlnChangesOptimalOrientations
                         (mean, degrees), rlnAccuracyRotations (the expected angular accuracy
                         of the iteration's reference, degrees, RELION's test; 999 where not
                         computed), rlnChangesOptimalOffsets (mean, A), rlnOffsetStep and
                         rlnOffsetRange (px), rlnPpLambda, rlnSigmaOffsetsAngst (the offset
                         prior's sigma after the iteration), rlnPpMeanMaxProb, rlnPpCpuSeconds,
                         rlnPpWallSeconds
  refine.json            the same per-iteration records, the settings, converged, totals
  half1_denoiser_input.mrc, half2_denoiser_input.mrc
                         red / cw-red: x~ = B / K of each half (eq. 17, the denoiser's input) of
                         the last iteration whose lambda was above 0 (same grey scale as half1.mrc)
  half1_denoised.mrc, half2_denoised.mrc
                         f(x~), the denoiser's output, of that iteration
  state/iter_NNN.npz     everything the next iteration needs; a rerun with the same settings
                         continues from the last finished iteration (--fresh: start again)

Under MPI (``mpirun -np R python -m polishplugin.programs.refine ...``) the particles are split
over the ranks (even R: half-set 1 on the even ranks, half-set 2 on the odd ones; odd R: a share
of both on every rank); B, K, the noise and the poses are summed over the ranks, rank 0 updates
half-set 1's map and rank 1 half-set 2's at the same time (programs/parallel.py, RefineSplit);
rank 0 writes. The result equals the one-process run's to rounding.
"""
import argparse
import glob
import json
import logging
import os
import re
import time

import numpy as np

from ..core.refine.denoisers import get_denoiser
from ..io.atomic import atomic_path, atomic_text
from ..io.errors import InputError
from ..io.star import StarTable, read_particles_star, write_particles_star, write_star
from .cli import (add_prior_arguments, at_least, check_prior_arguments, exit_program, number,
                  positive, run_program)
from .jobdir import claim_output, file_digest

log = logging.getLogger("polishplugin.refine")

UNREGULARISED = "half%d_unregularised.mrc"
OUTPUTS = ("half1.mrc", "half2.mrc", UNREGULARISED % 1, UNREGULARISED % 2, "map.mrc",
           "fsc.star", "particles.star", "iterations.star", "refine.json", "state")
RED_MAPS = ("half%d_denoiser_input.mrc", "half%d_denoised.mrc")      # red / cw-red only


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("inputs")
    g.add_argument("--particles", required=True, help="RELION 3.1 particles STAR (with CTF)")
    g.add_argument("--ref", required=True, help="starting map (MRC), same box and pixel size")
    g.add_argument("--mask", help="solvent mask (MRC, values in [0, 1]); default: soft sphere")
    g.add_argument("--root", default=None, help="folder the image names are relative to "
                   "(default: current directory; else the STAR file's folder is tried)")
    g.add_argument("--no-ctf", action="store_true", help="ignore the CTF (CTF = 1)")
    r = add_prior_arguments(p)
    r.add_argument("--tau2-fudge", type=positive, default=1.0, help="tau^2 fudge factor")
    r.add_argument("--pad", type=at_least(1), default=2, help="Fourier padding of the M-step")
    s = p.add_argument_group("sampling")
    s.add_argument("--ini-high", type=positive, default=30.0,
                   help="low-pass (A) of the starting map")
    s.add_argument("--particle-diameter", type=positive, default=None,
                   help="A (default 0.8 of the box): solvent sphere, angular step needed")
    s.add_argument("--healpix-order", type=at_least(0), default=1,
                   help="first HEALPix order (global search; 1 = 30 degrees)")
    s.add_argument("--local-order", type=at_least(1), default=3,
                   help="from this order on: local searches around each particle's pose")
    s.add_argument("--max-order", type=at_least(0), default=6,
                   help="finest HEALPix order (6: 0.94 degrees; 4, the default before, cost "
                        "resolution at box 96 / 1.5 A)")
    s.add_argument("--local-steps", type=positive, default=2.0,
                   help="local search half-width in angular steps")
    s.add_argument("--accuracy-stop", type=float, default=0.0,
                   help="no finer HEALPix order once the angular step searched is below this x "
                        "the expected angular accuracy (RELION's auto-refine: 0.75); 0: off, "
                        "the default (the accuracy is reported in iterations.star either way)")
    s.add_argument("--offset-range", type=positive, default=3.0, help="px, first search")
    s.add_argument("--offset-step", type=positive, default=1.0, help="px, first search")
    s.add_argument("--sigma-offset", type=number, default=10.0,
                   help="A: first sigma of RELION's Gaussian prior on the offsets (then from the "
                        "data, as RELION's --offset); 0: uniform prior")
    s.add_argument("--max-iter", type=at_least(1), default=25)
    c = p.add_argument_group("compute")
    c.add_argument("--batch", type=at_least(1), default=16, help="images scored together")
    c.add_argument("--threads", type=at_least(1), default=1)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fresh", action="store_true",
                   help="discard what an earlier run with other settings left in --out")
    return p


# ------------------------------------------------------------------------------ inputs
def read_inputs(args):
    """(particles table, optics, Particles, reference, mask, initial angles, shifts), checked."""
    from ..core.ctf import ctf_2d
    from ..core.refine.loop import Particles
    from ..io.mrc import read_mrc
    from ..io.polish_inputs import check_numbers
    from .reconstruct import StackReader, _location, particle_geometry
    optics, parts = read_particles_star(args.particles)
    check_numbers(args.particles, parts, "particles")
    check_numbers(args.particles, optics, "optics")
    angles, shifts, ctf_params, half, px = particle_geometry(optics, parts, args.particles)
    if not set(np.unique(half)) <= {1, 2}:
        raise InputError(args.particles, "rlnRandomSubset must be 1 or 2")
    for h in (1, 2):
        if not np.any(half == h):
            raise InputError(args.particles, "half-set %d is empty (rlnRandomSubset): "
                             "gold-standard refinement needs particles in both" % h)
    reader = StackReader(args.root)
    images, first_bad = [], None
    try:
        for k, name in enumerate(parts["rlnImageName"]):
            before = reader.nonfinite
            images.append(reader.image(*_location(name, args.particles, args.root)))
            if reader.nonfinite > before and first_bad is None:
                first_bad = k
    finally:
        reader.close()
    if first_bad is not None:
        raise InputError(args.particles, "%d NaN/infinite pixels in the particle images (%d "
                         "image(s) without any finite pixel), the first in particle %d (%s): "
                         "remove or repair them first" % (reader.nonfinite, reader.empty,
                                                          first_bad + 1,
                                                          parts["rlnImageName"][first_bad]))
    if len({im.shape for im in images}) > 1:
        raise InputError(args.particles, "particle images of different sizes: %s"
                         % sorted({im.shape for im in images}))
    images = np.stack(images)
    n = images.shape[-1]
    if images.shape[-2] != n:
        raise InputError(args.particles, "images are not square (%s)" % (images.shape[1:],))
    ref, ref_px = read_mrc(args.ref)
    if ref.shape != (n, n, n):
        raise InputError(args.ref, "starting map of shape %s, the particles' box is %d"
                         % (ref.shape, n))
    if ref_px and abs(ref_px - px) > 0.01 * px:
        raise InputError(args.ref, "pixel size %.4f A differs from the particles' %.4f A "
                         "(rescale the map or fix its header)" % (ref_px, px))
    if not np.all(np.isfinite(ref)):
        raise InputError(args.ref, "starting map has NaN/infinite voxels")
    if not np.any(ref):
        raise InputError(args.ref, "starting map is empty (all zero)")
    mask = None
    if args.mask:
        mask, _ = read_mrc(args.mask)
        if mask.shape != (n, n, n):
            raise InputError(args.mask, "mask of shape %s, the particles' box is %d"
                             % (mask.shape, n))
        if not np.all(np.isfinite(mask)) or mask.min() < -1e-3 or mask.max() > 1 + 1e-3:
            raise InputError(args.mask, "mask values must be finite and within [0, 1]")
        if mask.max() <= 0:
            raise InputError(args.mask, "mask is empty")
        mask = np.clip(mask.astype(np.float64), 0.0, 1.0)
    ctfs = None
    if not args.no_ctf:
        if ctf_params is None:
            raise InputError(args.particles, "no CTF (rlnDefocusU...): give --no-ctf to refine "
                             "without one")
        ctfs = np.stack([ctf_2d(p, n, px) for p in ctf_params]).astype(np.float32)
    particles = Particles(images.astype(np.float32), ctfs, half, px)
    return parts, optics, particles, ref.astype(np.float64), mask, angles, shifts


def settings_of(args, n, px):
    from ..core.refine.loop import Settings
    if args.max_order < args.healpix_order:
        raise SystemExit("--max-order %d is coarser than --healpix-order %d"
                         % (args.max_order, args.healpix_order))
    if args.ini_high < 2 * px:
        raise SystemExit("--ini-high %g A is beyond Nyquist (%g A)" % (args.ini_high, 2 * px))
    if args.sigma_offset < 0:
        raise SystemExit("--sigma-offset must be >= 0 (0: uniform prior), got %g"
                         % args.sigma_offset)
    if not 0.0 <= args.accuracy_stop <= 2.0:
        raise SystemExit("--accuracy-stop must be between 0 (off) and 2, got %g"
                         % args.accuracy_stop)
    if args.offset_step > args.offset_range:
        raise SystemExit("--offset-step %g px exceeds --offset-range %g px"
                         % (args.offset_step, args.offset_range))
    denoiser = None
    if args.mode != "tikhonov":
        denoiser = get_denoiser(args.denoiser, tv_weight=args.tv_weight,
                                unet_weights=args.unet_weights, tta=args.unet_tta,
                                unet_precision=args.unet_precision or "auto")
        if args.denoiser == "unet":
            from .parallel import set_torch_threads
            set_torch_threads(args.threads)
    return Settings(mode=args.mode, denoiser=denoiser, lam=args.lam, cw_low=args.cw_low,
                    cw_high=args.cw_high, cw_shells=args.cw_shells, pad=args.pad,
                    tau2_fudge=args.tau2_fudge,
                    ini_high=args.ini_high, particle_diameter=args.particle_diameter or 0.0,
                    healpix_order=args.healpix_order, local_order=args.local_order,
                    max_order=args.max_order, local_steps=args.local_steps,
                    accuracy_stop=args.accuracy_stop, offset_range=args.offset_range,
                    offset_step=args.offset_step,
                    sigma_offset=args.sigma_offset,
                    max_iter=args.max_iter, batch=args.batch)


# ------------------------------------------------------------------------------ outputs
def _state_files(out):
    files = glob.glob(os.path.join(out, "state", "iter_*.npz"))
    return sorted(files, key=lambda f: int(re.findall(r"iter_(\d+)\.npz$", f)[0]))


def save_state(out, state):
    folder = os.path.join(out, "state")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "iter_%03d.npz" % state.iteration)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            state.save(fh)
    for old in _state_files(out)[:-2]:       # keep the last two
        os.remove(old)


def load_state(out):
    """The last finished iteration's state in ``out`` (None if there is none)."""
    from ..core.refine.loop import State
    for path in reversed(_state_files(out)):
        try:
            return State.load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable state (%s); trying the one before", path, exc)
    return None


def write_iterations(out, history, settings_record, finished):
    rows = {"rlnCurrentIteration": [r["iteration"] for r in history],
            "rlnHealpixOrder": [r["healpix_order"] for r in history],
            "rlnCurrentImageSize": [r["current_size"] for r in history],
            "rlnCurrentResolution": [r["resolution"] for r in history],
            "rlnChangesOptimalOrientations": [r["angular_change"] for r in history],
            "rlnAccuracyRotations": [999.0 if r.get("accuracy_rot_deg") is None
                                     else r["accuracy_rot_deg"] for r in history],
            "rlnChangesOptimalOffsets": [r["offset_change_A"] for r in history],
            "rlnOffsetStep": [r["offset_step"] for r in history],
            "rlnOffsetRange": [r["offset_range"] for r in history],
            "rlnPpLambda": [r["lambda"] for r in history],
            "rlnSigmaOffsetsAngst": [r.get("sigma_offset_A", 0.0) for r in history],
            "rlnPpMeanMaxProb": [r["mean_maxprob"] for r in history],
            "rlnPpCpuSeconds": [r["cpu_s"] for r in history],
            "rlnPpWallSeconds": [r["wall_s"] for r in history]}
    write_star(os.path.join(out, "iterations.star"), {"iterations": StarTable(rows)})
    summary = {"settings": settings_record, "iterations": history, "finished": bool(finished),
               "converged": bool(history and history[-1]["converged"]),
               "cpu_s_total": float(sum(r["cpu_s"] for r in history)),
               "wall_s_total": float(sum(r["wall_s"] for r in history)),
               "resolution": history[-1]["resolution"] if history else None}
    with atomic_text(os.path.join(out, "refine.json")) as fh:
        json.dump(summary, fh, indent=1)


def write_red_maps(out, state, px):
    """x~ and f(x~) of each half (``state.red_maps``) when this iteration ran the denoiser."""
    from ..io.mrc import write_mrc
    if state.red_maps is None:
        return
    for h in (1, 2):
        for name, vol in zip(RED_MAPS, state.red_maps[h - 1]):
            write_mrc(os.path.join(out, name % h), vol, px)


def masked_fsc_columns(state, mask, mask_name, n, px):
    """(data_general, data_fsc) columns of the masked FSC of the last iteration's unregularised
    halves (core/masked_fsc.py, random phases of seed 0; RELION's postprocess labels); empty
    without a mask, or (with a warning) when it cannot be computed."""
    from ..core.fourier import resolution_at
    from ..core.masked_fsc import masked_fsc
    if mask is None:
        return {}, {}
    if state.unregularised is None:
        log.warning("no masked FSC: the finished state holds no unregularised half maps (a run "
                    "of an older version; --fresh to refine again)")
        return {}, {}
    try:
        f = masked_fsc(state.unregularised[0], state.unregularised[1], mask,
                       np.random.default_rng(0))
    except ValueError as exc:
        log.warning("no masked FSC: %s", exc)
        return {}, {}
    general = {"rlnPpCorrectedResolution": [resolution_at(f.corrected, n, px)],
               "rlnRandomiseFrom": [f.randomise_from(px)], "rlnMaskName": [mask_name]}
    cols = {"rlnFourierShellCorrelationCorrected": f.corrected,
            "rlnFourierShellCorrelationUnmaskedMaps": f.unmasked,
            "rlnFourierShellCorrelationMaskedMaps": f.masked,
            "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps": f.randomised}
    return general, cols


def write_results(out, state, parts, optics, particles, mask=None, mask_name=None):
    """The maps, fsc.star and particles.star; returns the corrected masked FSC's 0.143
    resolution (A), None without a mask."""
    from ..core.fourier import resolution_at
    from ..io.mrc import write_mrc
    n, px = particles.n, particles.pixel_size
    write_mrc(os.path.join(out, "half1.mrc"), state.refs[0], px)
    write_mrc(os.path.join(out, "half2.mrc"), state.refs[1], px)
    if state.unregularised is None:
        log.warning("%s not written: the finished state holds no unregularised half maps (a "
                    "run of an older version; --fresh to refine again)", UNREGULARISED % 1)
    else:
        for h in (1, 2):
            write_mrc(os.path.join(out, UNREGULARISED % h), state.unregularised[h - 1], px)
    write_mrc(os.path.join(out, "map.mrc"), state.final_map, px)
    shells = np.arange(n // 2 + 1)
    cols = {"rlnSpectralIndex": shells, "rlnResolution": shells / (n * px),
            "rlnAngstromResolution": np.where(shells > 0, n * px / np.maximum(shells, 1), 999.0),
            "rlnFourierShellCorrelation": state.fsc}
    general = {"rlnFinalResolution": [resolution_at(state.fsc, n, px)],
               "rlnImageSize": [n], "rlnImagePixelSize": [px],
               "rlnCurrentIteration": [state.iteration]}
    masked_general, masked_cols = masked_fsc_columns(state, mask, mask_name, n, px)
    general.update(masked_general)
    cols.update(masked_cols)
    write_star(os.path.join(out, "fsc.star"), {"general": StarTable(general, loop=False),
                                               "fsc": StarTable(cols)})
    table = parts.copy()
    deg = np.rad2deg(state.angles)
    table["rlnAngleRot"], table["rlnAngleTilt"], table["rlnAnglePsi"] = deg.T
    table["rlnOriginXAngst"] = -state.shifts[:, 0] * px
    table["rlnOriginYAngst"] = -state.shifts[:, 1] * px
    table["rlnMaxValueProbDistribution"] = state.maxprob
    table["rlnRandomSubset"] = particles.half_sets
    optics = optics.copy()
    if "rlnImageSize" not in optics:
        optics["rlnImageSize"] = np.full(len(optics), n)
    if "rlnImageDimensionality" not in optics:
        optics["rlnImageDimensionality"] = np.full(len(optics), 2)
    write_particles_star(os.path.join(out, "particles.star"), optics, table)
    return masked_general.get("rlnPpCorrectedResolution", [None])[0]


def run(args):
    from ..core.refine.loop import SERIAL, initial_state, refine
    from .parallel import RefineSplit, get_comm, set_blas_threads, set_threads
    check_prior_arguments(args, "refine")
    set_threads(args.threads)
    set_blas_threads(args.threads)   # no BLAS inside threads of its own: at most --threads
    comm = get_comm()
    root = comm.rank == 0
    parts, optics, particles, ref, mask, angles, shifts = read_inputs(args)
    settings = settings_of(args, particles.n, particles.pixel_size)
    record = dict(settings.record(), denoiser=args.denoiser if args.mode != "tikhonov" else None,
                  tv_weight=args.tv_weight if args.denoiser == "tv" else None,
                  no_ctf=args.no_ctf, particles=file_digest(args.particles),
                  ref=file_digest(args.ref), mask=file_digest(args.mask))
    if args.unet_weights:
        record["unet_weights"] = file_digest(args.unet_weights)
    if args.mode != "tikhonov" and args.unet_tta not in (None, 1):
        record["unet_tta"] = args.unet_tta   # absent for the plain network, as before TTA
    if args.mode != "tikhonov" and args.unet_precision == "bfloat16":
        record["unet_precision"] = "bfloat16"   # absent for float32, as before bfloat16
    out = os.path.abspath(args.out)
    inputs = [args.particles, args.ref, args.mask, args.unet_weights]
    split = RefineSplit(comm) if comm.size > 1 else SERIAL
    with claim_output(comm, out, "refine", record, inputs,
                      OUTPUTS + tuple(f % h for h in (1, 2) for f in RED_MAPS), args.fresh):
        state = comm.bcast(load_state(out) if root else None, root=0)
        if state is None:
            state = initial_state(particles, ref, settings, angles, shifts)
            if root:
                log.info("%d particles (%d + %d), box %d, %.3f A/px, mode %s, %d process(es): "
                         "starting", len(particles.images), np.sum(particles.half_sets == 1),
                         np.sum(particles.half_sets == 2), particles.n, particles.pixel_size,
                         settings.mode, comm.size)
        elif len(state.angles) != len(particles.images):
            raise InputError(out, "the saved state holds %d particles, the input %d: --fresh "
                             "to start again" % (len(state.angles), len(particles.images)))
        elif root:
            log.info("resuming after iteration %d%s", state.iteration,
                     " (already finished)" if state.finished else "")

        def after(st, rec):
            if not root:
                return
            save_state(out, st)
            write_red_maps(out, st, particles.pixel_size)
            write_iterations(out, st.history, record, st.finished)
            log.info("iteration %d: order %d%s, size %d, resolution %.2f A, lambda %.2f, "
                     "angular change %.2f deg, accuracy %s deg, %.1f CPU-s", rec["iteration"],
                     rec["healpix_order"], " local" if rec["local"] else "",
                     rec["current_size"], rec["resolution"], rec["lambda"],
                     rec["angular_change"], "-" if rec.get("accuracy_rot_deg") is None
                     else "%.1f" % rec["accuracy_rot_deg"], rec["cpu_s"])

        t0 = time.time()
        state = refine(particles, state, settings, mask, after, split)
        if not root:
            return 0
        write_iterations(out, state.history, record, True)
        corrected = write_results(out, state, parts, optics, particles, mask, args.mask)
        last = state.history[-1]
        log.info("%s after %d iterations: %.2f A (half-map FSC 0.143)%s, %.0f s; wrote %s",
                 "converged" if last["converged"] else "stopped at --max-iter",
                 state.iteration, last["resolution"],
                 "" if corrected is None else ", %.2f A (masked FSC 0.143, corrected by phase "
                 "randomisation)" % corrected, time.time() - t0, out)
    return 0


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
