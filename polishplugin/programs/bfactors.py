"""Per-frame B-factor weighting and frame recombination ("shiny" particles), Zivanov et al.
(2019) section 2.3, eq. 20-22; no Scipion needed.

    python -m polishplugin.programs.bfactors --polish Polish --particles run_data.star \\
        --mics MotionCorr/job002/corrected_micrographs.star \\
        --postprocess PostProcess/postprocess.star --out Shiny \\
        [--bfac-minres 20 --bfac-maxres -1 --box N --scale N --float16]
    mpirun -np 4 python -m polishplugin.programs.bfactors ...   # micrographs split over ranks

Steps:
1. FCC (eq. 20): the sums fcc/<mic>_FCC_{cc,w0,w1}.mrc that the polishing program wrote under
   --polish are added over all polished micrographs. Where they are missing, they are computed
   here from the stored tracks (movie frames at the tracks against the opposite half map; the
   movie read once as polish reads it, its defects found from that read and kept for step 3,
   the spectra in memory up to --spectra-memory MB, else on scratch disk) and written under
   --out/fcc/.
2. Fit of eq. 21 (:func:`polishplugin.core.dose.bfactors.fit_bfactors`) between --bfac-minres
   and --bfac-maxres A (-1: the half maps' FSC = 0.143 resolution), or --bfactors FILE reuses a
   bfactors.star (ours or RELION's).
3. Recombination per micrograph (eq. 22 weights, :mod:`polishplugin.core.dose.recombine`): the
   movie is read one frame at a time; each particle is cut at its tracked position, moved back by
   the sub-pixel rest of its track, weighted and summed.

Outputs (under --out):
  bfactors.star   data_perframe_bfactors in RELION's numbers: rlnMovieFrameNumber (0-based, of
                  the polished frame range), rlnBfactorUsedForSharpening (RELION's B =
                  our B * ((box + 2) / box)^2, see core/dose/bfactors.py), rlnFittedIntercept-
                  GuinierPlot (= C_f); read back by RELION and by --bfactors
                  (relion_motion_refine --bfactors on it gives our shiny particles:
                  tests/test_relion_polish.py).
  bfactors.json   the same fit in our convention: B_f in A^2 as the amplitude factor
                  exp(B_f s^2 / 4) (B < 0 = decay, max B = 0), C_f = ln(scale) (0 for the best
                  frame), D_kappa, fitted rings, box, pixel size, resolution limits, first frame.
  fcc.mrc, fcc_model.mrc, weights.mrc   FCC data, eq. 21 model and eq. 22 ring weights
                  (frames x rings of the particle box).
  Shiny/<mic>_shiny.mrcs   shiny particles: bright (the contrast sign of the polishing run's
                  diag JSON is applied), normalised as RELION's extraction (zero mean, unit
                  standard deviation outside a circle of 0.75 x half the box).
  particles.star  the input particles of the recombined micrographs, rlnImageName pointing to the
                  shiny stacks (relative to the project folder --root or the current one, as
                  RELION writes them; absolute when outside it), optics updated
                  (rlnImageSize = --scale, rlnImagePixelSize = px * box / scale).
  logfile.pdf, figures/   FCC, fit, residual, B_f and C_f per frame, weights (paper Fig. 2 a-d).

Centring: a shiny particle is cut where the input particle was extracted (its coordinate, i.e.
the refined centre plus origin / pixel size) and every frame is moved back by the particle's
full sub-pixel track, so the refined centre sits exactly where it sat in the input image:
angles, origins (A) and CTF stay valid unchanged, and coordinates are not touched.
Micrographs whose shiny stack exists are skipped on a re-run (stacks are written atomically); a
re-run with other settings (settings.json) is refused unless --fresh. Particles are matched to
their tracks by image name (refined centre without names), not by row.
"""
import argparse
import json
import logging
import os
import time

import numpy as np

from ..constants import DEFAULT_SPECTRA_MB
from ..io.atomic import atomic_text
from ..io.errors import InputError
from ..io.paths import project_relative
from ..io.star import StarTable, read_star, read_tracks_star, write_particles_star, write_star
from .cli import (add_movie_inputs, add_output_options, at_least, check_reference_args,
                  exit_program, finish_status, job_figures, number, positive, resolve_backend,
                  run_program)
from .jobdir import RECORD, claim_output, file_digest, input_digests, input_paths
from .micrographs import (failure_list, for_each_micrograph, micrograph_defects, save_defects,
                          summed_frames, write_failure_list)
from .parallel import get_comm, my_share, pending, set_blas_threads, set_threads
from .polish import mic_stem, output_paths, particle_names

log = logging.getLogger("polishplugin.bfactors")

BG_RADIUS = 0.375  # background outside 0.75 * box / 2, RELION's extraction default


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = add_movie_inputs(p, "particles STAR given to the polishing",
                         "corrected_micrographs.star given to the polishing")
    g.add_argument("--polish", required=True,
                   help="output folder of the polishing program, or a text file listing such "
                        "folders one a line (each micrograph is taken from the first that "
                        "tracked it: the per-micrograph folders of a streaming run)")
    f = p.add_argument_group("B-factor fit")
    f.add_argument("--bfac-minres", type=positive, default=20.0,
                   help="lowest resolution fitted (A)")
    f.add_argument("--bfac-maxres", type=number, default=-1.0,
                   help="highest resolution fitted (A); -1 = FSC 0.143 of the half maps")
    f.add_argument("--bfac-smooth", type=number, default=0.0,
                   help="smoothness prior on B across frames (A^2, prior SD of the second "
                        "difference of B between neighbouring frames); 0 = independent frames "
                        "(the paper, RELION)")
    f.add_argument("--bfactors", help="reuse this bfactors.star instead of fitting")
    o = p.add_argument_group("shiny particles")
    o.add_argument("--box", type=at_least(-1), default=-1, help="box cut from the movies (px); -1 = input")
    o.add_argument("--scale", type=at_least(-1), default=-1, help="output box after Fourier rescaling; "
                                                         "-1 = --box")
    o.add_argument("--float16", action="store_true", help="write the stacks as float16")
    o.add_argument("--no-defects", action="store_true", help="do not fill hot/dead pixels")
    o.add_argument("--only-bfactors", action="store_true", help="fit and stop (no recombination)")
    c = p.add_argument_group("memory")
    c.add_argument("--spectra-memory", type=positive, default=DEFAULT_SPECTRA_MB,
                   help="MB of memory for a micrograph's patch spectra where its FCC sums are "
                        "recomputed from the tracks (polish --spectra-memory: beyond it they go "
                        "to an unlinked scratch file in --out; default %(default)s)")
    add_output_options(p)
    return p


def check_args(args):
    check_reference_args(args, "bfactors")
    if args.box != -1 and (args.box < 16 or args.box % 2):
        raise SystemExit("bfactors: --box must be even and >= 16")
    if args.scale != -1 and (args.scale < 16 or args.scale % 2):
        raise SystemExit("bfactors: --scale must be even and >= 16")
    if args.bfac_smooth < 0:
        raise SystemExit("bfactors: --bfac-smooth must be >= 0 (0 = no smoothness prior)")
    if args.bfac_maxres != -1 and args.bfac_maxres <= 0:
        raise SystemExit("bfactors: --bfac-maxres must be -1 (auto) or a resolution > 0 A")
    if args.bfac_maxres != -1 and args.bfac_maxres >= args.bfac_minres:
        raise SystemExit("bfactors: --bfac-maxres must be finer (smaller) than --bfac-minres")
    args.polish_dirs = polish_folders(args.polish)
    missing = [d for d in args.polish_dirs if not os.path.isdir(d)]
    if missing or not args.polish_dirs:
        raise SystemExit("bfactors: polishing folder not found: %s"
                         % (missing[0] if missing else args.polish))


def polish_folders(arg):
    """The polishing folders ``--polish`` names: itself, or those its lines list (relative
    ones to the list's folder)."""
    if not os.path.isfile(arg):
        return [arg]
    with open(arg) as fh:
        lines = [line.strip() for line in fh if line.strip()]
    return [os.path.join(os.path.dirname(os.path.abspath(arg)), d) for d in lines]


def polish_dir_of(args, name):
    """The polishing folder holding micrograph ``name``'s tracks (the first one when none)."""
    for d in args.polish_dirs:
        if os.path.isfile(output_paths(d, name)["tracks"]):
            return d
    return args.polish_dirs[0]


def shiny_path(out, name):
    return os.path.join(out, "Shiny", mic_stem(name) + "_shiny.mrcs")


# ------------------------------------------------------------------------ polishing results
def polished(polish_dir, mic, names):
    """(tracks (P, F, 2) px, diag dict) of a micrograph polished under ``polish_dir``, or None;
    the tracks in the order of ``mic``'s particles, matched to the polishing run's by identity:
    image name (``names``, rlnImageName) when both runs have them, else refined centre. A
    particle the polishing run did not track is refused."""
    paths = output_paths(polish_dir, mic.name)
    if not (os.path.isfile(paths["tracks"]) and os.path.isfile(paths["diag"])):
        return None
    with open(paths["diag"]) as fh:
        diag = json.load(fh)
    tracks = read_tracks_star(paths["tracks"]) / diag["pixel_size"]
    order = match_particles(paths["diag"], diag, names, mic.centres)
    # kept for the whole job: without its per-particle lists (~5 kB of Python objects per
    # particle, ~0.3 MB per micrograph of 60 particles), only read for the matching
    return tracks[order], {k: v for k, v in diag.items() if k not in PER_PARTICLE}


#: a polish diag's per-particle lists (json): only :func:`match_particles` reads them
PER_PARTICLE = ("rows", "images", "centres", "initial_tracks_A")


def match_particles(path, diag, names, centres):
    """Index into the polishing run's particles (``diag``) of each particle given here."""
    if names is not None and diag.get("images") is not None:
        theirs, ours, what = diag["images"], names, "image"
    else:
        def key(c):
            return "%.2f,%.2f" % tuple(c)
        theirs, ours, what = [key(c) for c in diag["centres"]], [key(c) for c in centres], \
            "centre"
    index = {k: i for i, k in enumerate(theirs)}
    if len(index) != len(theirs):
        raise InputError(path, "the polishing run has particles with the same %s" % what)
    missing = [k for k in ours if k not in index]
    if missing:
        raise InputError(path, "%d particle(s) given here were not tracked by the polishing run "
                         "(first: %s %s): give the particles STAR of the polishing run"
                         % (len(missing), what, missing[0]))
    return np.array([index[k] for k in ours], dtype=int)


def fcc_from_tracks(mic, inputs, tracks, sign, first, args, known=None, n=None, max_ring=None,
                    folder="."):
    """Eq. 20 sums of one micrograph recomputed from its tracks, its movie read once as polish
    reads it (:class:`.micrographs.MovieOnce`, :func:`~polishplugin.core.motion.micrograph.
    read_spectra`): frames cut at the tracks in ``n`` px patches (the polishing run's; default
    the particle box), the defects ``known`` ((ny, nx) bool, e.g. those the polishing run found)
    filled as the frames are read (else those found from the same read's sum, corrected in
    the spectra); the spectra kept in memory up to ``args.spectra_memory`` MB, else on scratch
    disk in ``folder`` (:func:`.polish.spectra_store`); against the opposite half map's
    prediction times the contrast ``sign``, rings up to ``max_ring`` (the polishing run's;
    default Nyquist) summed on the rings of the particle box. Returns (FccAccumulator, flat
    indices of the defects found, or None when none were searched)."""
    from ..core.motion.micrograph import fcc_from_spectra, read_spectra
    from ..core.motion.observation import crop_size
    from ..core.predict import make_projectors, predict_particles
    from .micrographs import MovieOnce
    from .polish import spectra_store
    n, px = n or inputs.box, inputs.pixel_size
    m = crop_size(n, max_ring)
    P, F = tracks.shape[:2]
    threads = max(1, args.threads or 1)
    r_max = 0.5 if max_ring is None else min(0.5, (max_ring + 1.0) / n)
    proj = make_projectors(inputs.half1, inputs.half2, inputs.mask, backend=args.backend,
                           r_max=r_max)
    opp = predict_particles(proj, mic.angles, mic.half_sets, mic.ctfs, n, px, opposite=True,
                            crop=m, dtype=np.complex64)
    del proj
    once = MovieOnce(mic, first, first + F, args.no_defects, known, threads)
    with once:
        store = spectra_store(P, F, m, n, args.spectra_memory, folder)
        try:
            # defects known from a saved search: no second search of the same sum
            late = once.late_defects if known is None else None
            spectra, cut = read_spectra(once.frames(), mic.centres, tracks, n, m, None, threads,
                                        store, late)
            acc = fcc_from_spectra(spectra, opp, tracks - cut, None, args.backend, n, max_ring,
                                   inputs.box, sign=sign)
        finally:
            store.close()
    return acc, once.found.get("flat")


def saved_defects(args, mic, diag, first, last, out=None):
    """The defects a polishing run (or this job's FCC pass, under ``out``) found in frames
    [first, last) of a micrograph (flat indices in diag/<mic>_defects.npy) as an (ny, nx) mask
    with the pixels of zero gain, or None when neither saved them for that frame range."""
    same = diag.get("first_frame") == first + 1 and diag.get("frames") == last - first
    paths = [output_paths(polish_dir_of(args, mic.name), mic.name)["defects"]]
    if out is not None:
        paths.append(output_paths(out, mic.name)["defects"])
    path = next((p for p in paths if os.path.isfile(p)), None)
    if not same or path is None:
        return None
    from ..io.movies import read_gain
    mask = np.zeros(mic.shape, dtype=bool)
    mask.ravel()[np.load(path)] = True
    if mic.gain:
        mask |= ~(read_gain(mic.gain) > 0)
    return mask


def defects_of(args, mic, diag, first, last, out=None):
    """Defect mask of a micrograph for frames [first, last) for its recombination: the pixels of
    zero gain and those its polishing run (or this job's FCC pass) found in the same frames
    (:func:`saved_defects`); with --no-defects the pixels of zero gain (or None); else None: the
    recombination finds them from the sum of its own read (:func:`shiny_micrograph`)."""
    if args.no_defects:
        return micrograph_defects(mic, first, last, True)
    return saved_defects(args, mic, diag, first, last, out)


def read_fcc(paths, box):
    """The eq. 20 sums of one micrograph, on the rings of the particle ``box`` (box//2 + 1
    rings, as polish writes them and RELION reads them); files of another width (a polishing run
    before the FCC was put on the particle box wrote the rings of its even patch) are read on
    the rings of that patch."""
    from ..core.dose.fcc import FccAccumulator
    from ..io.mrc import read_mrc
    sums = [np.atleast_2d(read_mrc(paths[k])[0]).astype(np.float64) for k in ("cc", "w0", "w1")]
    nr = sums[0].shape[1]
    return FccAccumulator.from_sums(*sums, box=box if nr == box // 2 + 1 else 2 * (nr - 1))


def write_fcc(paths, acc, px):
    from ..io.mrc import write_mrc
    for key, arr in (("cc", acc.num), ("w0", acc.wobs), ("w1", acc.wpred)):
        os.makedirs(os.path.dirname(paths[key]), exist_ok=True)
        write_mrc(paths[key], arr.astype(np.float32), px)


# ------------------------------------------------------------------------ B-factor files
def write_bfactors(out, fit, first_frame, low_res, high_res, box):
    """bfactors.star (RELION numbers) and bfactors.json (our convention), see module doc."""
    from ..core.dose.bfactors import to_relion
    b_rel, c_rel = to_relion(fit.bfactors, fit.scales, box)  # the particle box, as read back
    frames = np.arange(len(fit.bfactors))
    write_star(os.path.join(out, "bfactors.star"), {"perframe_bfactors": StarTable({
        "rlnMovieFrameNumber": frames, "rlnBfactorUsedForSharpening": b_rel,
        "rlnFittedInterceptGuinierPlot": c_rel})})
    info = {"convention": "amplitude of frame f scaled by exp(C_f + B_f s^2 / 4), s in 1/A; "
                          "B < 0 = decay; gauge max B = 0, C = 0 for that frame (Zivanov 2019 "
                          "eq. 21); bfactors.star holds RELION's numbers",
            "bfactors_A2": fit.bfactors.tolist(), "scales": fit.scales.tolist(),
            "ring_scales": fit.ring_scales.tolist(), "rings": list(fit.rings), "box": fit.box,
            "pixel_size": fit.pixel_size, "low_res_A": low_res, "high_res_A": high_res,
            "first_frame": first_frame}
    with atomic_text(os.path.join(out, "bfactors.json")) as fh:
        json.dump(info, fh, indent=1)


def read_bfactors(path, box):
    """(B_f, C_f) in our convention from a bfactors.star (RELION's numbers, reference ``box``)."""
    from ..core.dose.bfactors import from_relion, normalise_gauge
    blocks = read_star(path)
    if "perframe_bfactors" not in blocks:
        raise InputError(path, "no data_perframe_bfactors block")
    t = blocks["perframe_bfactors"]
    t.require(("rlnBfactorUsedForSharpening", "rlnFittedInterceptGuinierPlot"), path,
              "perframe_bfactors")
    b, c = from_relion(t["rlnBfactorUsedForSharpening"], t["rlnFittedInterceptGuinierPlot"], box)
    return normalise_gauge(b, c)


def resolution_limit(args, inputs):
    """--bfac-maxres, else the half maps' FSC = 0.143 resolution (postprocess STAR or computed)."""
    if args.bfac_maxres > 0:
        return args.bfac_maxres
    if inputs.resolution:
        return float(inputs.resolution)
    from ..core.fourier import fsc, resolution_at
    m = inputs.mask if inputs.mask is not None else 1.0
    return float(resolution_at(fsc(inputs.half1 * m, inputs.half2 * m), inputs.box,
                               inputs.pixel_size))


# ------------------------------------------------------------------------ recombination
def normalise_background(images, radius=BG_RADIUS):
    """Zero mean and unit standard deviation of the pixels outside radius * box (RELION)."""
    n = images.shape[-1]
    y, x = np.mgrid[:n, :n] - n // 2
    bg = np.hypot(y, x) > radius * n
    vals = images[..., bg]
    mean, std = vals.mean(axis=-1), vals.std(axis=-1)
    return (images - mean[..., None, None]) / np.maximum(std, 1e-12)[..., None, None]


class _ShinyDefects:
    """What :func:`~polishplugin.core.motion.patches.correct_defect_spectra` corrects, seen in a
    :class:`~polishplugin.core.dose.recombine.ShinySum`: a change dX of the spectrum of patch
    (p, f) (the (n, n//2+1) half-plane) adds w_f dX exp(+2 pi i k.t_pf) to particle p's sum,
    by linearity (``shifts`` (P, F, 2): t, the track less the cut shift)."""
    dtype = np.dtype(np.complex64)

    def __init__(self, shiny, shifts, weights, frame):
        self.shiny, self.shifts, self.weights, self.frame = shiny, shifts, weights, frame
        self.shape = (shifts.shape[0], 1, shiny.n, shiny.nh)       # frame ``frame`` only

    def add(self, p, f, delta):
        f = self.frame
        self.shiny.add(delta[None], self.shifts[p, f][None], self.weights[f], slice(p, p + 1))


#: a pixel above fill + BRIGHT sqrt(fill + 1) in a frame has its value kept during the read
#: (Poisson counts of mean <= fill exceed it with probability < 1e-20): hot pixels' values are
#: then known frame by frame, not only as their mean
BRIGHT = 10.0


def _late_values(ys, xs, means, bright, F, nx):
    """(F, D) per-frame values of the defects (ys, xs) found after the read: those kept in
    ``bright`` (per frame, (flat indices, values) of the pixels above the :data:`BRIGHT`
    threshold), the others set to the mean of the frames not kept (their sum F x ``means``
    known exactly from the raw sum)."""
    flat = np.asarray(ys, dtype=np.int64) * nx + np.asarray(xs, dtype=np.int64)
    vals = np.full((F, len(flat)), np.nan)
    for f, (idx, v) in enumerate(bright):
        pos = np.searchsorted(idx, flat)
        hit = (pos < len(idx)) & (idx[np.minimum(pos, len(idx) - 1)] == flat)
        vals[f, hit] = v[pos[hit]]
    kept = np.isfinite(vals)
    rest = F * np.asarray(means, dtype=np.float64) - np.where(kept, vals, 0.0).sum(axis=0)
    n_rest = F - kept.sum(axis=0)
    fill = np.divide(rest, n_rest, out=np.zeros_like(rest), where=n_rest > 0)
    return np.where(kept, vals, fill[None])


def shiny_micrograph(mic, tracks, weights, first, sign, box, scale, origins_px, defects,
                     workers=1, search_defects=False):
    """Shiny particles (P, scale, scale) float32 of one micrograph: frame f is cut (patch of
    the size of ``weights``) at extraction position + track, moved back by the rest of the
    track, weighted by eq. 22 and summed; then contrast ``sign``, Fourier rescaling, background
    normalisation. ``defects``: (ny, nx) bool filled as the frames are read; with
    ``search_defects`` (no saved search) the movie is still read once, as polish reads it
    (:class:`.micrographs.MovieOnce`): the defects found from that read's raw sum are corrected
    in the sums afterwards (:class:`_ShinyDefects`), with their per-frame values where they were
    bright (:data:`BRIGHT`: a hot pixel's every frame), else the mean of their other frames."""
    from ..core.dose.recombine import ShinySum, fourier_resize
    from ..core.motion.patches import correct_defect_spectra, cut_positions, patch_blocks
    from ..io.movies import Movie, read_gain
    from .micrographs import MovieOnce
    P, F = tracks.shape[:2]
    patch = weights.shape[-1]
    extract_at = mic.centres + origins_px
    shiny = ShinySum(P, patch, workers)
    fills = np.zeros(F)

    def add_all(frames):
        # a block of particles at a time: the frame's transients do not grow with the particles
        for f, rows, pt, cut in patch_blocks(frames, extract_at, tracks, patch, None,
                                             block=16):
            shiny.add(pt, tracks[rows, f] - cut, weights[f], rows)

    bright = []

    def measured(frames):           # each frame's fill value (its mean) and bright pixels
        for f, (frame, mean) in enumerate(frames):
            fills[f] = mean
            flat = frame.reshape(-1)
            idx = np.flatnonzero(flat > fills[f] + BRIGHT * np.sqrt(abs(fills[f]) + 1.0))
            bright.append((idx, flat[idx].astype(np.float64)))
            yield frame, mean
    if search_defects:
        once = MovieOnce(mic, first, first + F, False, defects, workers)
        with once:
            add_all(measured(once.frames()))
        ys, xs, means = once.late_defects()
        values = _late_values(ys, xs, means, bright, F, mic.shape[1])
        q = cut_positions(extract_at, tracks)
        shifts = tracks - (q - extract_at[:, None])
        k = sum(correct_defect_spectra(_ShinyDefects(shiny, shifts, weights, f), q[:, f:f + 1],
                                       patch, ys, xs, values[f], fills[f:f + 1])
                for f in range(F))
        log.info("%s: %d defect pixels found in the recombination's read: %d particle-frames "
                 "corrected", mic.name, len(ys), k)
    else:
        gain = read_gain(mic.gain) if mic.gain else None
        with Movie(mic.movie, workers=workers) as movie:
            # frames read as polish reads them (one pass per decoded strip: gain, the defects
            # filled with the mean of the other pixels, that mean; the raw sum is not needed)
            add_all(summed_frames(movie, first, first + F, gain, None, known=defects))
    out = np.empty((P, scale, scale), dtype=np.float32)
    for a in range(0, P, 16):   # one inverse transform per particle, not per particle-frame
        rows = slice(a, min(P, a + 16))
        acc = shiny.images(box, rows)
        acc *= sign
        if scale != box:
            acc = fourier_resize(acc, scale)
        out[rows] = normalise_background(acc)
    return out


def shiny_table(inputs, done, out, root, box, scale):
    """(optics, particles) of the shiny particles of the micrographs in ``done``."""
    rows, names = [], []
    for mic in done:
        rel = project_relative(shiny_path(out, mic.name), root)
        rows.extend(mic.index.tolist())
        names.extend("%06d@%s" % (i + 1, rel) for i in range(len(mic.index)))
    parts = inputs.particles.take(np.asarray(rows, dtype=int)).copy()
    parts["rlnImageName"] = np.asarray(names, dtype=object)
    optics = inputs.optics.copy()
    optics["rlnImageSize"] = np.full(len(optics), scale, dtype=int)
    optics["rlnImagePixelSize"] = np.full(len(optics), inputs.pixel_size * box / scale)
    optics["rlnCtfDataAreCtfPremultiplied"] = np.zeros(len(optics), dtype=int)
    return optics, parts


# ------------------------------------------------------------------------ whole job
def gather_fcc(args, inputs, work, out, comm):
    """Sum the FCC of all polished micrographs (recomputing missing ones on this rank's share)."""
    missing = [m for m, (tr, dg) in work if not all(
        os.path.exists(p) for p in output_paths(polish_dir_of(args, m.name), m.name)["fcc"]
        .values())]
    for mic in my_share(pending(missing, lambda m: all(
            os.path.exists(p) for p in output_paths(out, m.name)["fcc"].values()), comm), comm):
        tracks, diag = dict((m.name, v) for m, v in work)[mic.name]
        first = diag["first_frame"] - 1
        known = None if args.no_defects else saved_defects(args, mic, diag, first,
                                                           first + diag["frames"])
        acc, found = fcc_from_tracks(mic, inputs, tracks, diag["sign"], first, args, known,
                                     diag.get("patch_px"), diag.get("max_ring"), out)
        paths = output_paths(out, mic.name)
        if found is not None and known is None:     # for the recombination: no new search
            save_defects(paths["defects"], found)
        write_fcc(paths["fcc"], acc, inputs.pixel_size)
        log.info("[rank %d] FCC of %s recomputed from its tracks", comm.rank, mic.name)
    comm.barrier()
    total = None
    names = {m.name for m in missing}
    for mic, _ in work:
        acc = read_fcc(output_paths(out if mic.name in names else
                                    polish_dir_of(args, mic.name), mic.name)["fcc"], inputs.box)
        total = acc if total is None else total.merge(acc)
    return total, len(missing)


def fit_or_read(args, inputs, work, out, comm):
    """(B_f, C_f, exposure-filter fallback) of the job: fitted on rank 0 (files written) or
    read (a table whose fit fell back to the exposure filter, said by the bfactors.json beside
    it, is read back as that fallback); broadcast to all."""
    from ..core.dose.bfactors import fit_bfactors
    if args.bfactors:
        b, c = read_bfactors(args.bfactors, inputs.box)
        info = os.path.join(os.path.dirname(os.path.abspath(args.bfactors)), "bfactors.json")
        fallback = False
        if os.path.exists(info):
            with open(info) as fh:
                fallback = "weights" in json.load(fh)
        if fallback:
            log.warning("%s was fitted to an FCC without signal: the frames are weighted with the "
                        "exposure filter, as that fit was", args.bfactors)
        return b, c, fallback
    total, n_missing = gather_fcc(args, inputs, work, out, comm)
    fit = None
    if comm.rank == 0:
        high = resolution_limit(args, inputs)
        fit = fit_bfactors(total.fcc(), total.box, inputs.pixel_size, high, args.bfac_minres,
                           smooth=args.bfac_smooth)
        write_bfactors(out, fit, work[0][1][1]["first_frame"], args.bfac_minres, high,
                       inputs.box)
        from ..core.dose.weights import ring_weights
        from ..io.mrc import write_mrc
        write_mrc(os.path.join(out, "fcc.mrc"), total.fcc().astype(np.float32), inputs.pixel_size)
        write_mrc(os.path.join(out, "fcc_model.mrc"), fit.model().astype(np.float32),
                  inputs.pixel_size)
        write_mrc(os.path.join(out, "weights.mrc"), ring_weights(
            fit.bfactors, fit.scales, total.nrings, total.box, inputs.pixel_size).astype(
            np.float32), inputs.pixel_size)
        log.info("B-factors fitted on %d micrographs (%d FCC recomputed) between %.1f and %.2f A:"
                 " B %s A^2", len(work), n_missing, args.bfac_minres, high,
                 np.array2string(fit.bfactors, precision=1))
        from ..core.dose.bfactors import fcc_is_informative
        n_particles = sum(len(m.centres) for m, _ in work)
        patch = work[0][1][1].get("patch_px") or total.box       # the sums' pixel grid
        fallback = not fcc_is_informative(total.fcc(), fit.rings, n_particles,
                                          oversampling=patch / total.box)
        if fallback:
            log.warning("the FCC holds too little signal between %.1f and %.2f A for %d particles "
                        "(fewer than 3 rings at 5 sigma): the B-factor fit would follow noise, so "
                        "the frames are weighted with the exposure filter (Grant & Grigorieff) "
                        "instead; more particles or a lower --bfac-maxres help",
                        args.bfac_minres, high, n_particles)
            path = os.path.join(out, "bfactors.json")
            with open(path) as fh:
                info = json.load(fh)
            info["weights"] = "exposure filter (FCC not informative)"
            with atomic_text(path) as fh:
                json.dump(info, fh, indent=1)
    b, c, fallback = comm.bcast(None if fit is None else (fit.bfactors, fit.scales, fallback),
                                root=0)
    return b, c, fallback


#: names written at the top of the output folder (what --fresh deletes)
OUTPUTS = ("fcc", "diag", "Shiny", "failed", "figures", "bfactors.star", "bfactors.json", "fcc.mrc",
           "fcc_model.mrc", "weights.mrc", "particles.star", "failed.txt", "logfile.pdf")


def job_settings(args, inputs):
    """What defines the B-factors and shiny particles (recorded in the output folder; the
    smoothness prior only when used, so that folders written before it existed still match)."""
    smooth = {"bfac_smooth": args.bfac_smooth} if args.bfac_smooth else {}
    return dict(smooth, **{"box": args.box, "scale": args.scale, "float16": args.float16,
            "bfac_minres": args.bfac_minres, "bfac_maxres": args.bfac_maxres,
            "bfactors": file_digest(args.bfactors), "no_defects": args.no_defects,
            "polish": [file_digest(os.path.join(d, RECORD)) for d in args.polish_dirs]
            if os.path.isfile(args.polish) else file_digest(os.path.join(args.polish, RECORD)),
            "inputs": input_digests(args, inputs)})


def run(args):
    check_args(args)
    args.backend = resolve_backend(args.backend)
    from ..io.polish_inputs import load_polish_inputs
    comm = get_comm()
    set_threads(args.threads)
    set_blas_threads(args.threads)   # no BLAS inside its threads: at most --threads
    out = os.path.abspath(args.out)
    inputs = load_polish_inputs(args.particles, args.mics, args.postprocess, args.half1,
                                args.half2, args.mask, root=args.root, allow_missing=True,
                                skip_outside=True)
    work = [(m, r) for m in inputs.micrographs
            for r in [polished(polish_dir_of(args, m.name), m, particle_names(inputs, m))] if r]
    if not work:
        raise InputError(args.polish, "no polished micrograph (tracks + diag) for these particles")
    if len({r[0].shape[1] for _, r in work}) > 1:
        raise InputError(args.polish, "polished micrographs have different frame counts")
    with claim_output(comm, out, "bfactors", job_settings(args, inputs),
                      input_paths(args, inputs) + [args.polish, args.bfactors] +
                      args.polish_dirs, OUTPUTS,
                      args.fresh):
        return weigh_and_recombine(args, inputs, work, out, comm)


def weigh_and_recombine(args, inputs, work, out, comm):
    """Fit (or read) the B-factors, then recombine the micrographs without a shiny stack yet
    (this rank's share); rank 0 writes particles.star and failed.txt."""
    if comm.rank == 0:
        log.info("%d of %d micrographs polished; %d rank(s)", len(work), len(inputs.micrographs),
                 comm.size)
    t0 = time.time()
    b, c, fallback = fit_or_read(args, inputs, work, out, comm)
    if len(b) != work[0][1][0].shape[1]:
        raise InputError(args.bfactors or out, "%d B-factors for tracks of %d frames"
                         % (len(b), work[0][1][0].shape[1]))
    if args.only_bfactors:
        return _finish(args, out, comm, t0, None)
    from ..core.dose.weights import weight_maps
    from ..io.mrc import write_mrc
    px = inputs.pixel_size
    box = inputs.box if args.box == -1 else args.box
    scale = box if args.scale == -1 else args.scale
    patch = box + 2 * max(8, box // 8)  # margin: the frequency weights spread the box edges
    weights = weight_maps(b, c, patch, px, dtype=np.float64)

    def weights_of(mic, first, nframes):
        if not fallback:
            return weights
        from ..core.damage import frame_doses
        from ..core.dose.weights import exposure_weight_maps
        doses = frame_doses(nframes, mic.dose_per_frame,
                            mic.pre_exposure + first * mic.dose_per_frame)
        return exposure_weight_maps(doses, patch, px, mic.voltage, dtype=np.float64)
    ox = np.asarray(inputs.particles.get("rlnOriginXAngst", np.zeros(len(inputs.particles))), float)
    oy = np.asarray(inputs.particles.get("rlnOriginYAngst", np.zeros(len(inputs.particles))), float)
    polished_of = {m.name: r for m, r in work}
    todo = pending([m for m, _ in work], lambda m: os.path.isfile(shiny_path(out, m.name)), comm)

    def recombine(i, mic):
        t1 = time.time()
        tracks, diag = polished_of[mic.name]
        first = diag["first_frame"] - 1
        defects = defects_of(args, mic, diag, first, first + tracks.shape[1], out)
        origins = np.stack([ox[mic.index], oy[mic.index]], axis=1) / px
        imgs = shiny_micrograph(mic, tracks, weights_of(mic, first, tracks.shape[1]), first,
                                diag["sign"], box, scale, origins, defects,
                                max(1, args.threads or 1),
                                search_defects=defects is None and not args.no_defects)
        if not np.all(np.isfinite(imgs)):
            raise ValueError("shiny particles with NaN or infinite pixels (not written)")
        path = shiny_path(out, mic.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_mrc(path, imgs.astype(np.float16 if args.float16 else np.float32),
                  px * box / scale, stack=True)
        log.info("[rank %d] %s: %d shiny particles, %.1f s", comm.rank, mic.name, len(imgs),
                 time.time() - t1)
    for_each_micrograph(my_share(todo, comm), recombine, lambda n: failed_path(out, n),
                        comm.rank)
    comm.barrier()
    return _finish(args, out, comm, t0, (inputs, [m for m, _ in work], box, scale))


def failed_path(out, name):
    return os.path.join(out, "failed", mic_stem(name) + ".txt")


def _finish(args, out, comm, t0, shiny):
    if comm.rank != 0:
        return 0
    failed, n_done = [], 1
    if shiny is not None:
        inputs, mics, box, scale = shiny
        done = [m for m in mics if os.path.isfile(shiny_path(out, m.name))]
        optics, parts = shiny_table(inputs, done, out, args.root, box, scale)
        write_particles_star(os.path.join(out, "particles.star"), optics, parts)
        log.info("%d shiny particles of %d micrographs", len(parts), len(done))
        n_done = len(done)
        failed = failure_list([m.name for m in mics],
                              lambda n: os.path.isfile(shiny_path(out, n)),
                              lambda n: failed_path(out, n))
        write_failure_list(out, failed)
    if not args.no_figures and os.path.exists(os.path.join(out, "bfactors.json")):
        job_figures().bfactor_figures(out, os.path.join(out, "figures"))
    log.info("done in %.1f s -> %s", time.time() - t0, out)
    return finish_status("bfactors", failed, args.allow_partial, n_done)


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
