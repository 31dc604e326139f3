"""Bayesian polishing: per-particle motion tracks under the GP prior of Zivanov et al. (2019),
MAP by L-BFGS, on RELION files; no Scipion needed.

    python -m polishplugin.programs.polish --particles run_data.star \\
        --mics MotionCorr/job002/corrected_micrographs.star --postprocess PostProcess/postprocess.star \\
        --out Polish [--sigmas auto | --sigmas relion-defaults |
                      --sigma-vel 0.2 --sigma-div 5000 --sigma-acc 2 | --params-file opt_params.txt]
    mpirun -np 4 python -m polishplugin.programs.polish ...      # micrographs split over ranks
    python -m polishplugin.programs.polish ... --threads 2       # 2 worker processes (--processes)

Per micrograph (under --out): tracks/<mic>_tracks.star (RELION _tracks.star layout, A),
fcc/<mic>_FCC_{cc,w0,w1}.mrc (eq. 20 sums against the opposite half map, frames x the
box/2 + 1 rings of the particle box, as RELION's: the patch's pixels binned by frequency),
diag/<mic>.json (fit diagnostics), diag/<mic>_defects.npy (flat indices of the defect pixels
besides those of zero gain: reused by the bfactors program, which then reads the movie once).
At the end: tracks_all.star (every particle and frame),
particles.star (the particles of polished micrographs), failed.txt, logfile.pdf; with
--sigmas auto also sigmas.json (every micrograph's chosen sigmas and spread, their geometric mean
and spread over micrographs) and opt_params_all_groups.txt (that geometric mean, for
--params-file).
Finished micrographs are skipped on a re-run (their tracks STAR is written last, atomically);
settings.json records what defines the result, and a re-run with other settings is refused
(--fresh starts afresh; see jobdir.py). A failed micrograph is listed in failed.txt and the exit
status is 3 unless --allow-partial.
"""
import argparse
import json
import logging
import os
import time

import numpy as np

from ..constants import (DEFAULT_SIGMA_ACC, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_VEL,
                         DEFAULT_SPECTRA_MB)
from ..io.atomic import atomic_text
from ..io.errors import InputError
from ..io.polish_inputs import load_polish_inputs
from ..io.star import StarTable, read_tracks_star, write_particles_star, write_star, \
    write_tracks_star
from .parallel import (fill_in_process, for_each_in_processes, freeze_setup, get_comm, my_share,
                       numba_threads_started, pending, set_blas_threads, set_threads,
                       setup_without_gc)
from .cli import (add_max_ed, add_movie_inputs, add_output_options, at_least, auto_window,
                  check_reference_args, exit_program, finish_status, job_figures, max_dims,
                  max_ed_setting, number, positive, resolve_backend, run_program)
from .jobdir import claim_output, file_digest, input_digests, input_paths
from .micrographs import (MovieOnce, failure_list, for_each_micrograph, save_defects,
                          write_failure_list)

log = logging.getLogger("polishplugin.polish")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = add_movie_inputs(p)
    g.add_argument("--allow-missing", action="store_true",
                   help="drop particles of micrographs absent from --mics (default: error)")
    g.add_argument("--skip-outside", action="store_true",
                   help="drop particles centred outside their micrograph (default: error)")
    m = p.add_argument_group("motion prior (paper units, Zivanov 2019 Table 2)")
    m.add_argument("--sigmas", choices=SIGMA_MODES, default=None,
                   help="auto: chosen per micrograph from its own CC maps by maximising the "
                        "marginal likelihood (default when no sigmas are given); "
                        "relion-defaults: %g/%g/%g (RELION's GUI); given: --sigma-vel/-div/-acc "
                        "or --params-file (implied by any of them)"
                        % (DEFAULT_SIGMA_VEL, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_ACC))
    m.add_argument("--sigma-vel", type=positive, default=None,
                   help="A per e/A^2 (default with --sigmas given: %g)" % DEFAULT_SIGMA_VEL)
    m.add_argument("--sigma-div", type=positive, default=None,
                   help="A (default with --sigmas given: %g)" % DEFAULT_SIGMA_DIV)
    m.add_argument("--sigma-acc", type=number, default=None,
                   help="A per e/A^2; <= 0 disables the acceleration term (default with "
                        "--sigmas given: %g)" % DEFAULT_SIGMA_ACC)
    m.add_argument("--params-file", help="RELION-style 'sigma_vel sigma_div sigma_acc' file "
                                         "(e.g. from the training program); overrides the three")
    add_max_ed(m)
    f = p.add_argument_group("fit")
    f.add_argument("--first-frame", type=at_least(1), default=1, help="1-based")
    f.add_argument("--last-frame", type=at_least(-1), default=-1, help="1-based, -1 = last")
    f.add_argument("--patch", type=at_least(0), default=0,
                   help="patch cut around each particle (px); 0 = auto: the box plus the CTF "
                        "delocalisation at --data-resolution, at most 1.4 times the box, an even "
                        "length of factors 2, 3, 5 (twice the box: the same accuracy, 1.3x the CPU; the box itself, as RELION: "
                        "0.6%% worse at low SNR, 1.6x less CPU; BENCHMARKS.md)")
    f.add_argument("--window", type=at_least(0), default=0,
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
    f.add_argument("--data-resolution", type=number, default=0.0,
                   help="highest resolution (A) the data term and the FCC sums use: 0 = auto, "
                        "the reference's FSC = 0.143 resolution (its predictions hold no signal "
                        "beyond); < 0 = every frequency up to Nyquist (as RELION). The patch "
                        "spectra are kept only up to it: less memory and CPU")
    f.add_argument("--defect-map", help="detector defect map (MRC/TIFF, non-zero = defect) for "
                                        "all movies, added to what is found in each movie")
    f.add_argument("--no-defects", action="store_true",
                   help="do not detect hot/dead pixels from the movies")
    c = p.add_argument_group("memory")
    c.add_argument("--spectra-memory", type=positive, default=DEFAULT_SPECTRA_MB,
                   help="MB of memory for a micrograph's patch spectra (F x 89 kB per particle "
                        "at the default patch; shared by the --processes workers); a "
                        "micrograph needing more keeps them in an unlinked scratch file in --out "
                        "(as much disk, plus its predictions; freed when the micrograph is done "
                        "or the process ends) and reads them back in blocks of particles of at "
                        "most this size, at least one particle; the same limit for its CC maps "
                        "(F x 4.4 kB per particle at a 16 px window): beyond it they go to "
                        "scratch too and only their centres (0.7 kB) stay in memory (default "
                        "%(default)s; BENCHMARKS.md)")
    add_output_options(p)
    p.add_argument("--processes", type=at_least(0), default=0,
                   help="with --threads T >= 2: processes over the micrographs, forked after the "
                        "projector setup, each with T / processes threads (0 = auto: 2, at most "
                        "T and the micrographs to do; 1 = threads only); one per rank under MPI. "
                        "Each adds ~0.1 GB (BENCHMARKS.md, issue 14)")
    return p


SIGMA_MODES = ("auto", "relion-defaults", "given")


def resolve_sigmas(args):
    """(mode, sigmas in paper units or None for auto) from --sigmas and the sigma options."""
    explicit = [v for v in (args.sigma_vel, args.sigma_div, args.sigma_acc, args.params_file)
                if v is not None]
    mode = args.sigmas or ("given" if explicit else "auto")
    if mode != "given" and explicit:
        raise SystemExit("polish: --sigmas %s takes no --sigma-vel/--sigma-div/--sigma-acc/"
                         "--params-file (use --sigmas given)" % mode)
    if mode == "auto":
        return mode, None
    if mode == "relion-defaults":
        return mode, (DEFAULT_SIGMA_VEL, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_ACC)
    if args.params_file:
        return mode, read_params_file(args.params_file)
    pick = lambda v, d: d if v is None else v  # noqa: E731
    return mode, (pick(args.sigma_vel, DEFAULT_SIGMA_VEL), pick(args.sigma_div, DEFAULT_SIGMA_DIV),
                  pick(args.sigma_acc, DEFAULT_SIGMA_ACC))


def read_params_file(path):
    """sigma_vel sigma_div sigma_acc from a RELION opt_params file (s_acc -1 = disabled)."""
    try:
        vals = [float(v) for v in open(path).read().split()[:3]]
    except (OSError, ValueError) as exc:
        raise InputError(path, "cannot read three numbers: %s" % exc)
    if len(vals) < 2:
        raise InputError(path, "needs 'sigma_vel sigma_div [sigma_acc]'")
    if not all(np.isfinite(vals)) or vals[0] <= 0 or vals[1] <= 0:
        raise InputError(path, "sigma_vel and sigma_div must be positive and all three finite, "
                         "found %s" % " ".join("%g" % v for v in vals))
    return vals[0], vals[1], vals[2] if len(vals) > 2 else -1.0


def reference_resolution(inputs):
    """The reference's FSC = 0.143 resolution (A): from the postprocess STAR, else from the
    (masked) half maps."""
    from ..core.fourier import fsc, resolution_at
    res = inputs.resolution
    if not res:
        m = 1.0 if inputs.mask is None else inputs.mask
        res = resolution_at(fsc(inputs.half1 * m, inputs.half2 * m), inputs.half1.shape[0],
                            inputs.pixel_size)
    return res


def data_max_ring(args, inputs):
    """Highest Fourier ring of the patches (of ``args.patch_px``) that the data term uses:
    ceil(n px / resolution) for --data-resolution (0: the reference's), None (Nyquist) when
    negative or at least Nyquist."""
    n = args.patch_px
    res = args.data_resolution or reference_resolution(inputs)
    if res < 0:
        return None
    ring = int(np.ceil(n * inputs.pixel_size / res - 1e-9))
    if ring >= n // 2:
        return None
    log.info("data term up to %.2f A: Fourier rings 0-%d of %d px patches", res, ring, n)
    return ring


def auto_patch(inputs, data_resolution=0.0):
    """Patch size of the job (one for all micrographs, so their FCC sums add): the particle box
    plus the CTF delocalisation of the largest defocus at the resolution the data term uses
    (``data_resolution`` A: 0 = the reference's FSC = 0.143 resolution, < 0 = Nyquist)
    (:func:`polishplugin.core.motion.patches.patch_size`)."""
    from ..core.motion.patches import patch_size
    res = data_resolution if data_resolution > 0 else \
        2 * inputs.pixel_size if data_resolution < 0 else reference_resolution(inputs)
    dz = max(max(c.defocus_u, c.defocus_v) for mic in inputs.micrographs for c in mic.ctfs)
    n = patch_size(inputs.box, inputs.pixel_size, dz, res, inputs.micrographs[0].voltage)
    log.info("patches of %d px for a %d px box (defocus up to %.0f A, data term to %.2f A)",
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
            "defects": os.path.join(out, "diag", s + "_defects.npy"),
            "failed": os.path.join(out, "failed", s + ".txt")}


def check_args(args):
    check_reference_args(args, "polish")
    if args.last_frame != -1 and args.last_frame < args.first_frame + 1:
        raise SystemExit("polish: --last-frame must leave at least 2 frames")


#: sigma_vel and sigma_acc in px per frame that the fit can weigh (far beyond any real motion)
SIGMA_PX_RANGE = (1e-6, 1e6)


def check_sizes(args, inputs, sigmas):
    """Sigmas, frame range, patch and window against the data (before any movie is read)."""
    from ..core.motion.units import MotionParams
    for mic in inputs.micrographs if sigmas is not None else ():
        px = MotionParams(*sigmas).to_pixels(mic.dose_per_frame, inputs.pixel_size)
        for name, v, given in zip(("sigma_vel", "sigma_acc"), px[::2], sigmas[::2]):
            if v > 0 and not SIGMA_PX_RANGE[0] <= v <= SIGMA_PX_RANGE[1]:
                raise SystemExit("polish: %s %g is %g px per frame for %s, outside the %g-%g "
                                 "the fit can weigh (its 1/sigma^2 over- or underflows the "
                                 "energy)" % ((name, given, v, mic.name) + SIGMA_PX_RANGE))
    nframes = inputs.micrographs[0].nframes
    if args.first_frame + 1 > nframes or args.last_frame > nframes:
        raise SystemExit("polish: frames %d-%d asked of movies of %d frames"
                         % (args.first_frame, args.last_frame, nframes))
    if args.patch and (args.patch % 2 or not inputs.box <= args.patch <= 4 * inputs.box):
        raise SystemExit("polish: --patch must be 0 (auto) or even, from the box (%d) to 4 "
                         "times it, got %d" % (inputs.box, args.patch))
    n = args.patch_px
    if args.window and args.window > n // 2 - 2:
        raise SystemExit("polish: --window %d does not fit in patches of %d px (at most %d)"
                         % (args.window, n, n // 2 - 2))


#: names written at the top of the output folder (what --fresh deletes)
OUTPUTS = ("tracks", "fcc", "diag", "failed", "figures", "tracks_all.star", "particles.star",
           "failed.txt", "logfile.pdf", "sigmas.json", "opt_params_all_groups.txt")


def job_settings(args, inputs, sigmas):
    """What defines the polishing result (recorded in the output folder, see jobdir); --max-ed
    only when given, so that folders of the default job made before it existed resume."""
    return {**max_ed_setting(args),
            "sigmas": "auto" if sigmas is None else list(sigmas), "first_frame": args.first_frame,
            "last_frame": args.last_frame, "patch_px": args.patch_px, "window": args.window,
            "max_ring": args.max_ring,
            "mode": args.mode, "init": args.init, "invert": args.invert,
            "prior_mean": args.prior_mean, "cc_scale": args.cc_scale,
            "no_defects": args.no_defects, "defect_map": file_digest(args.defect_map),
            "allow_missing": args.allow_missing, "skip_outside": args.skip_outside,
            "inputs": input_digests(args, inputs)}


# ------------------------------------------------------------------------ one micrograph
def polish_one(mic, inputs, projectors, sigmas, args, out):
    """Align one micrograph and write its outputs; returns a diagnostics dict."""
    from ..core.motion.micrograph import align_micrograph
    from ..core.motion.observation import crop_plane, crop_size
    from ..core.motion.patches import damage_filters
    from ..core.motion.units import MotionParams
    from ..io.mrc import write_mrc

    t0 = time.time()
    paths = output_paths(out, mic.name)
    first = args.first_frame - 1
    last = mic.nframes if args.last_frame == -1 else min(args.last_frame, mic.nframes)
    F = last - first
    px, n = inputs.pixel_size, args.patch_px
    threads = max(1, args.threads or 1)
    # the movie is read once: the defects known beforehand are filled as the frames are read,
    # those found from the raw sum of the same pass are filled afterwards in the spectra
    once = MovieOnce(mic, first, last, args.no_defects, args.defect_mask, threads)
    with once:
        m = crop_size(n, args.max_ring)     # the Fourier grid the spectra are kept on
        store = spectra_store(len(mic.centres), F, m, n, args.spectra_memory, out)
        preds, opp = particle_predictions(store, projectors, mic, n, px, out)
        damage = crop_plane(damage_filters(n, px, F, mic.dose_per_frame,
                                           mic.pre_exposure + first * mic.dose_per_frame,
                                           mic.voltage), m)
        search = None
        if sigmas is None:                  # --sigmas auto: the search starts at the defaults
            from ..core.motion.evidence import SEARCH_START, search_in_pixels
            search = search_in_pixels(mic.dose_per_frame, px)
            sig_px = MotionParams(*SEARCH_START).to_pixels(mic.dose_per_frame, px)
        else:
            sig_px = MotionParams(*sigmas).to_pixels(mic.dose_per_frame, px)
        init = mic.initial_tracks[:, first:last] if args.init == "motioncorr" else None
        window = args.window or auto_window(sig_px[0], F, inputs.box)
        invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
        try:
            res = align_micrograph(once.frames(), mic.centres, preds, damage, sig_px,
                                   init, window=window, mode=args.mode, invert=invert,
                                   opposite_predictions=opp, backend=args.backend, n_frames=F,
                                   late_defects=once.late_defects, cc_scale=args.cc_scale,
                                   prior_mean=args.prior_mean, max_ring=args.max_ring,
                                   patch_size=n, workers=threads, fcc_box=inputs.box,
                                   spectra_store=store, sigma_search=search,
                                   cc_backing=cc_backing(args.spectra_memory, out),
                                   max_dims=max_dims(args))
        finally:
            for s in (store, preds, opp):
                if hasattr(s, "close"):
                    s.close()
    choice = None
    if sigmas is None and res.sigma_choice is None:     # auto failed: the search's start used
        from ..core.motion.evidence import SEARCH_START
        sigmas = SEARCH_START
    if res.sigma_choice is not None:
        from ..core.motion.evidence import sigmas_in_paper_units
        ch = res.sigma_choice
        sig_px = ch.sigmas_px
        sigmas = sigmas_in_paper_units(sig_px, mic.dose_per_frame, px)
        choice = {"sigmas": list(sigmas), "spread": list(ch.spread()),
                  "log_evidence": ch.log_evidence, "evaluations": ch.evaluations}
    # the diagnostic sum (gain-corrected, binned)
    from ..core.binning import binned
    small, factor = binned(once.total * (once.gain if once.gain is not None else 1.0))
    once.total = None
    for key, arr in (("cc", res.fcc.num), ("w0", res.fcc.wobs), ("w1", res.fcc.wpred)):
        os.makedirs(os.path.dirname(paths["fcc"][key]), exist_ok=True)
        write_mrc(paths["fcc"][key], arr.astype(np.float32), px)
    os.makedirs(os.path.dirname(paths["sum"]), exist_ok=True)
    write_mrc(paths["sum"], small.astype(np.float32), px * factor)
    if "flat" in once.found:
        save_defects(paths["defects"], once.found["flat"])
    diag = {"micrograph": mic.name, "particles": int(len(mic.centres)), "frames": F,
            "first_frame": first + 1, "pixel_size": px, "iterations": res.fit.iterations,
            "energy": res.fit.energy, "converged": res.fit.converged,
            "message": res.fit.message, "gp_dims": res.fit.n_dims, "sign": res.sign,
            "amplitude": res.amplitude, "window_px": window, "patch_px": n,
            "max_ring": args.max_ring, "spectrum_px": m,
            "defect_pixels": once.found["pixels"],
            "nonfinite_pixels": once.tally.get("nonfinite", 0),
            "sigmas": list(sigmas), "sigmas_px": list(sig_px), "sigma_choice": choice,
            "mode": args.mode, "cc_scale": args.cc_scale, "prior_mean": args.prior_mean,
            "init": args.init, "seconds": round(time.time() - t0, 3),
            "rows": mic.index.tolist(), "images": particle_names(inputs, mic),
            "centres": mic.centres.tolist(), "initial_tracks_A": (res.initial_tracks * px).tolist()}
    os.makedirs(os.path.dirname(paths["diag"]), exist_ok=True)
    with atomic_text(paths["diag"]) as fh:
        json.dump(diag, fh)
    os.makedirs(os.path.dirname(paths["tracks"]), exist_ok=True)
    write_tracks_star(paths["tracks"], res.tracks * px)  # written last: marks the micrograph done
    return diag


_SPECTRA = []


def particle_predictions(store, projectors, mic, n, px, folder):
    """Own- and opposite-half predictions (P, m, m) complex64 (single precision, as the spectra
    they are compared with) of a micrograph's particles on the grid of ``store``: arrays when the
    spectra are in memory, else :class:`polishplugin.programs.scratch.ScratchPlanes` in
    ``folder``, made a block of particles at a time (the memory of one block)."""
    from ..core.predict import predict_particles
    m = store.m
    block = getattr(store, "block", None)
    if block is None:
        return predict_particles(projectors, mic.angles, mic.half_sets, mic.ctfs, n, px,
                                 opposite="both", crop=m, dtype=np.complex64)
    from .scratch import ScratchPlanes
    P = store.P
    planes = ScratchPlanes(P, m, folder), ScratchPlanes(P, m, folder)
    for a in range(0, P, block):
        s = slice(a, min(P, a + block))
        for out, arr in zip(planes, predict_particles(
                projectors, mic.angles[s], mic.half_sets[s], mic.ctfs[s], n, px,
                opposite="both", crop=m, dtype=np.complex64)):
            out.write(a, arr)
    return planes


def cc_backing(megabytes, folder):
    """Where a micrograph's whole CC maps (P, F, W, W) float32 go: nowhere else than memory when
    they take at most ``megabytes`` (None), else an unlinked scratch file in ``folder``
    (:class:`polishplugin.programs.scratch.ScratchMaps`; only the maps' centres then stay in
    memory, :class:`polishplugin.core.motion.cc_store.CCStore`)."""
    def backing(P, F, W):
        size = P * F * W * W * 4
        if size <= megabytes * 2 ** 20:
            return None
        from .scratch import ScratchMaps
        log.info("CC maps of %d particles x %d frames: %.0f MB, more than --spectra-memory %g "
                 "MB: kept on scratch disk in %s, their centres in memory", P, F, size / 2 ** 20,
                 megabytes, folder)
        return ScratchMaps(P, F, W, folder)
    return backing


def spectra_store(P, F, m, n, megabytes, folder):
    """Where a micrograph's spectra (P, F, m, m//2+1) complex64 go: in memory (a buffer reused
    from micrograph to micrograph) when they take at most ``megabytes``, else an unlinked scratch
    file in ``folder`` read back in blocks of particles of at most that size
    (:class:`polishplugin.programs.scratch.ScratchSpectra`)."""
    from ..core.motion.spectra_store import SpectraStore
    budget = int(megabytes * 2 ** 20)
    per_particle = F * m * (m // 2 + 1) * np.dtype(np.complex64).itemsize
    if P * per_particle <= budget:
        return SpectraStore(P, F, m, n, buffer=spectra_buffer(P * per_particle // 8))
    from .scratch import ScratchSpectra
    block = max(1, budget // per_particle)
    log.info("spectra of %d particles x %d frames: %.0f MB, more than --spectra-memory %g MB: "
             "kept on scratch disk in %s, read back %d particles at a time", P, F,
             P * per_particle / 2 ** 20, megabytes, folder, block)
    return ScratchSpectra(P, F, m, n, folder, block * per_particle)


def spectra_buffer(size):
    """One complex64 buffer of at least ``size`` elements, kept for the next micrographs: the
    spectra of each micrograph reuse the pages the previous one touched (a fresh allocation of
    hundreds of MB per micrograph costs as much system time in page faults as the work)."""
    if not _SPECTRA or _SPECTRA[0].size < size:
        _SPECTRA[:] = []                       # free the smaller one first
        _SPECTRA.append(np.empty(size, dtype=np.complex64))
    return _SPECTRA[0]


def particle_names(inputs, mic):
    """rlnImageName of the micrograph's particles (their identity for later jobs), or None."""
    if "rlnImageName" not in inputs.particles:
        return None
    return [str(inputs.particles["rlnImageName"][i]) for i in mic.index]


# ------------------------------------------------------------------------ whole job
def combine(out, inputs):
    """tracks_all.star, particles.star of polished micrographs, failed.txt; returns the number
    of particles with tracks and the failure lines."""
    rows = {k: [] for k in ("rlnMicrographName", "rlnImageName", "rlnMicrographFrameNumber",
                            "rlnOriginXAngst", "rlnOriginYAngst")}
    keep = []
    for mic in inputs.micrographs:
        paths = output_paths(out, mic.name)
        if not os.path.isfile(paths["tracks"]):
            continue
        tracks = read_tracks_star(paths["tracks"])
        with open(paths["diag"]) as fh:
            first = json.load(fh)["first_frame"]
        names = particle_names(inputs, mic)
        P, F = tracks.shape[:2]
        for p in range(P):
            rows["rlnMicrographName"] += [mic.name] * F
            rows["rlnImageName"] += [names[p] if names else "%d@%s" % (p + 1, mic.name)] * F
            rows["rlnMicrographFrameNumber"] += list(range(first, first + F))
            rows["rlnOriginXAngst"] += tracks[p, :, 0].tolist()
            rows["rlnOriginYAngst"] += tracks[p, :, 1].tolist()
        keep.extend(mic.index.tolist())
    write_star(os.path.join(out, "tracks_all.star"), {"tracks": StarTable(rows)})
    write_particles_star(os.path.join(out, "particles.star"), inputs.optics,
                         inputs.particles.take(np.sort(np.asarray(keep, dtype=int))))
    failed = failure_list([m.name for m in inputs.micrographs],
                          lambda n: os.path.isfile(output_paths(out, n)["tracks"]),
                          lambda n: output_paths(out, n)["failed"])
    write_failure_list(out, failed)
    return len(keep), failed


def summarise_sigmas(out, inputs):
    """sigmas.json and opt_params_all_groups.txt of an auto-sigma job: per-micrograph choices,
    their geometric mean and spread (geometric sd and max/min over micrographs) and the median
    per-micrograph evidence width; None when no micrograph chose its sigmas."""
    per = {}
    for mic in inputs.micrographs:
        path = output_paths(out, mic.name)["diag"]
        if os.path.isfile(path):
            with open(path) as fh:
                ch = json.load(fh).get("sigma_choice")
            if ch:
                per[mic.name] = ch
    if not per:
        return None
    logs = np.log(np.abs([c["sigmas"] for c in per.values()]))
    width = np.array([c["spread"] for c in per.values()], dtype=float)
    summary = {"method": "per-micrograph marginal likelihood (core/motion/evidence.py)",
               "geometric_mean": np.exp(logs.mean(0)).tolist(),
               "geometric_sd_over_micrographs": np.exp(logs.std(0)).tolist(),
               "max_over_min": np.exp(logs.max(0) - logs.min(0)).tolist(),
               "median_evidence_spread": np.median(width, axis=0).tolist(),
               "micrographs": per}
    with atomic_text(os.path.join(out, "sigmas.json")) as fh:
        json.dump(summary, fh, indent=1)
    with atomic_text(os.path.join(out, "opt_params_all_groups.txt")) as fh:
        fh.write("%g %g %g\n" % tuple(summary["geometric_mean"]))
    log.info("sigmas chosen per micrograph (vel/div/acc): geometric mean %s, spread over %d "
             "micrographs x%s (max/min x%s), median evidence width x%s",
             "/".join("%.4g" % v for v in summary["geometric_mean"]), len(per),
             "/".join("%.2f" % v for v in summary["geometric_sd_over_micrographs"]),
             "/".join("%.2f" % v for v in summary["max_over_min"]),
             "/".join("%.2f" % v for v in summary["median_evidence_spread"]))
    return summary


def run(args):
    with setup_without_gc():        # until freeze_setup() in polish_all
        return _run(args)


def _run(args):
    check_args(args)
    args.backend = resolve_backend(args.backend)
    comm = get_comm()
    set_blas_threads(1)     # the work is split over --threads by the program itself
    out = os.path.abspath(args.out)
    args.sigma_mode, sigmas = resolve_sigmas(args)
    inputs = load_polish_inputs(args.particles, args.mics, args.postprocess, args.half1,
                                args.half2, args.mask, root=args.root,
                                allow_missing=args.allow_missing, skip_outside=args.skip_outside)
    args.defect_mask = None
    if args.defect_map:
        from ..io.movies import read_gain
        args.defect_mask = read_gain(args.defect_map) != 0
        for m in inputs.micrographs:
            if args.defect_mask.shape != m.shape:
                raise InputError(args.defect_map, "defect map is %dx%d but movie %s is %dx%d"
                                 % (args.defect_mask.shape[1], args.defect_mask.shape[0],
                                    m.movie, m.shape[1], m.shape[0]))
    args.patch_px = args.patch or auto_patch(inputs, args.data_resolution)
    args.max_ring = data_max_ring(args, inputs)
    check_sizes(args, inputs, sigmas)
    with claim_output(comm, out, "polish", job_settings(args, inputs, sigmas),
                      input_paths(args, inputs), OUTPUTS, args.fresh) as folder:
        return polish_all(args, inputs, sigmas, out, comm, folder)


def worker_processes(args, comm, count):
    """Processes polishing ``count`` micrographs on this rank: min(--processes (0: 2), --threads,
    count); 1 under MPI (the ranks are the processes), with the OpenCL backend (its context is
    not forked) or once numba's threads run in this process (a fork would kill the workers:
    :func:`polishplugin.programs.parallel.numba_threads_started`)."""
    want = min(args.processes or 2, args.threads or 1, count)
    if want < 2 or comm.size > 1 or backend_name(args.backend) == "opencl":
        return 1
    if numba_threads_started():
        log.info("numba's threads already run in this process: one process of %d threads",
                 args.threads)
        return 1
    return want


def backend_name(backend):
    return getattr(backend, "NAME", backend)


def preload(backend, mics):
    """What the first micrograph would load, loaded in the setup (before :func:`freeze_setup`
    and before the workers are forked: once, shared, ~1.5 s and ~40 MB per process): scipy's
    L-BFGS, the thread helpers, numba's compiler with the fit's serial kernel from its cache
    (numba's threads are not started) and the gain reference of ``mics`` (a bad one fails its
    micrographs later, as without it)."""
    from .micrographs import shared_gain
    for gain in {m.gain for m in mics if m.gain}:
        try:
            shared_gain(gain)
        except Exception:   # noqa: BLE001 - reported by the micrographs that use it
            pass
    import scipy.optimize  # noqa: F401
    from ..backends import threads  # noqa: F401
    from ..core import binning, dose  # noqa: F401
    if backend_name(backend) == "numba":
        from ..backends.numba_backend import load_serial_kernels
        load_serial_kernels()


def shared_projectors(inputs, backend, r_max):
    """Start the two half projectors for worker processes: their transforms computed by a
    process forked for it into memory that the workers will share, while this one goes on
    (:func:`preload`: both on 2 cores in the time of the longer, where the preload in a thread
    beside the projector setup slowed it by its hold on the GIL; BENCHMARKS.md, wt-fork).
    Returns a function that returns the projectors once that process has ended without error
    (the workers are forked later: they never see a half-built transform). The maps of
    ``inputs`` may be dropped here as soon as this returns."""
    from ..core.predict import make_projectors, projector_shape, projectors_around
    n = inputs.half1.shape[0]
    half1, half2, mask = inputs.half1, inputs.half2, inputs.mask

    def build(arrays):
        make_projectors(half1, half2, mask, backend=backend, r_max=r_max,
                        out=dict(zip((1, 2), arrays)))
    built = fill_in_process([(projector_shape(n, r_max=r_max), np.complex64)] * 2, build)
    return lambda: projectors_around(dict(zip((1, 2), built())), n, backend=backend,
                                     r_max=r_max)


def polish_all(args, inputs, sigmas, out, comm, folder=None):
    """Polish the micrographs not done yet (this rank's share), then combine on rank 0. With
    --threads T >= 2 and one rank, :func:`worker_processes` processes forked after the projector
    setup take the micrographs one at a time (each T // processes threads); ``folder``: the
    claimed output folder, whose lock the workers drop."""
    from ..core.predict import make_projectors
    todo = pending(inputs.micrographs,
                   lambda m: os.path.isfile(output_paths(out, m.name)["tracks"]), comm)
    if comm.rank == 0:
        log.info("%d micrographs, %d to do (%d already done), %d particles; sigmas %s; %d rank(s)",
                 len(inputs.micrographs), len(todo), len(inputs.micrographs) - len(todo),
                 sum(len(m.centres) for m in inputs.micrographs),
                 "chosen per micrograph (auto)" if sigmas is None else sigmas, comm.size)
    mine = my_share(todo, comm)
    procs = worker_processes(args, comm, len(mine))
    if procs > 1:            # each process its share of the threads and of --spectra-memory
        args = argparse.Namespace(**vars(args))
        args.threads = max(1, args.threads // procs)
        args.spectra_memory = args.spectra_memory / procs
    # slices only up to the data term's highest ring (the spectra hold no more)
    r_max = 0.5 if args.max_ring is None else min(0.5, (args.max_ring + 1.0) / args.patch_px)
    if procs > 1:
        building = shared_projectors(inputs, args.backend, r_max)
    else:
        projectors = make_projectors(inputs.half1, inputs.half2, inputs.mask,
                                     backend=args.backend, r_max=r_max)
    inputs.half1 = inputs.half2 = inputs.mask = None   # in the projectors now: memory back
    preload(args.backend, mine[:1])     # after: its objects do not pin the maps' heap
    if procs > 1:
        projectors = building()
    t0 = time.time()

    def work(i, mic):
        d = polish_one(mic, inputs, projectors, sigmas, args, out)
        eta = (time.time() - t0) / (i + 1) * (len(mine) - i - 1)
        log.info("[rank %d%s] %d/%d %s: %d particles, %d iterations%s, %.1f s (eta %.0f s)%s",
                 comm.rank, "" if procs == 1 else ", pid %d" % os.getpid(), i + 1, len(mine),
                 mic.name, d["particles"], d["iterations"],
                 "" if d["converged"] else " (NOT converged)", d["seconds"], eta,
                 "" if not d["sigma_choice"] else "; sigmas %s (evidence width x%s)" % (
                     "/".join("%.4g" % v for v in d["sigmas"]),
                     "/".join("%.2f" % v for v in d["sigma_choice"]["spread"])))

    failed_path = lambda name: output_paths(out, name)["failed"]  # noqa: E731
    freeze_setup()
    if procs == 1:
        set_threads(args.threads)
        for_each_micrograph(mine, work, failed_path, comm.rank)
    else:
        def one(i):
            for_each_micrograph([mine[i]], lambda _, mic: work(i, mic), failed_path, comm.rank)

        def after_fork():
            if folder is not None:
                folder.release()        # the parent's lock: not kept alive by a worker
            set_threads(args.threads)

        log.info("%d worker processes of %d thread(s) over the micrographs", procs, args.threads)
        if numba_threads_started():     # the setup must not start them (workers would die)
            raise RuntimeError("numba's threads started before the workers were forked")
        lost = for_each_in_processes(len(mine), one, procs, after_fork=after_fork,
                                     before_work=lambda: set_threads(args.threads))

        def record(_, mic, reasons={mine[i].name: r for i, r in lost.items()}):
            raise RuntimeError(reasons[mic.name])
        for_each_micrograph([mine[i] for i in sorted(lost)], record, failed_path, comm.rank)
    comm.barrier()
    if comm.rank != 0:
        return 0
    n_ok, failed = combine(out, inputs)
    if sigmas is None:
        summarise_sigmas(out, inputs)
    if not args.no_figures and n_ok:
        job_figures().polish_figures(out, os.path.join(out, "figures"))
    log.info("done: %d particles with tracks in %.1f s -> %s", n_ok, time.time() - t0, out)
    return finish_status("polish", failed, args.allow_partial, n_ok)


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
