"""What every command-line program shares: logging to stderr with time stamps; bad input and bad
options reported as one line naming the file or option and the problem (exit status 2) before
any work; under MPI, an error on one rank aborts every rank with its reason instead of leaving
the others waiting; figures drawn headless. The reason of a failure is also written to the file
named by ``$POLISHPLUGIN_ERROR_FILE`` when set, so that the Scipion protocol shows it as its
error."""
import argparse
import logging
import math
import os
import sys

import numpy as np

from ..io.errors import InputError

log = logging.getLogger("polishplugin")

#: exit status of a job that finished with some micrographs failed (see --allow-partial)
PARTIAL = 3
ERROR_FILE_VAR = "POLISHPLUGIN_ERROR_FILE"


def report_error(message):
    """Write the program's one-line error to ``$POLISHPLUGIN_ERROR_FILE`` (when set)."""
    path = os.environ.get(ERROR_FILE_VAR)
    if path:
        from ..io.atomic import atomic_text
        with atomic_text(path) as fh:  # several MPI ranks may report: the file stays whole
            fh.write(" ".join(str(message).split()) + "\n")


def no_hugepage_advice():
    """Stop numpy advising transparent huge pages for its large arrays, unless the user set
    NUMPY_MADVISE_HUGEPAGE. The movie programs allocate and first touch hundreds of MB of
    patches per micrograph; with THP in "madvise" mode each of those faults may compact memory,
    and system time then exceeded user time (BENCHMARKS.md, "Huge-page advice")."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:           # numpy without the switch: nothing to do
        return
    _set_madvise_hugepage(False)


def few_malloc_arenas(n=1):
    """At most ``n`` glibc malloc arena(s) (unless the user set MALLOC_ARENA_MAX): with the
    default 8 per core, every thread of --threads (frame read-ahead, defect search, particle
    blocks) keeps its own arena of freed frame-sized buffers, 100 MB more peak memory at 2
    threads (BENCHMARKS.md, issue 14); the programs allocate few, large arrays, so one shared
    arena costs no measurable lock contention. No-op without glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-8, int(n))     # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_program(build_parser, run, argv=None):
    """Parse ``argv`` with ``build_parser()``, call ``run(args)``; returns the exit status:
    ``run``'s return value when it is an int, else 0; 2 on :class:`InputError`. Under MPI with
    several ranks any error (bad input included: a check that fails on one rank only would
    leave the others at their next collective call forever) is logged with its rank and aborts
    every rank (``MPI_Abort``). The reason of a failure (bad input, a refused option, an
    unexpected exception) goes to :func:`report_error` too."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    no_hugepage_advice()
    few_malloc_arenas()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            report_error("refused options: exit status %s (see the log)" % exc.code)
        raise
    try:
        status = run(args)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        from .parallel import get_comm
        comm = get_comm()
        reason = exc.code if isinstance(exc, SystemExit) else "%s: %s" % (
            "bad input" if isinstance(exc, InputError) else type(exc).__name__, exc)
        report_error(reason if isinstance(reason, str) else
                     "exit status %s (see the log)" % reason)
        if comm.size > 1:
            log.error("[rank %d] %s; aborting all %d ranks", comm.rank, reason, comm.size,
                      exc_info=not isinstance(exc, (InputError, SystemExit)))
            comm.Abort(2 if isinstance(exc, (InputError, SystemExit)) else 1)
        if isinstance(exc, InputError):
            log.error("%s", reason)
            return 2
        raise
    return status if isinstance(status, int) else 0


def exit_program(status):
    """End a program's process with ``status`` (``sys.exit``), first moving every live object
    to the collector's permanent generation (``gc.freeze``): the interpreter's final
    collections then skip them, 0.3 s of walking numba's ~10^5 registry objects in every job
    that ran a kernel (BENCHMARKS.md, wt-fork). Only for ``__main__``: in a process that goes
    on, frozen objects are never collected."""
    import gc
    gc.freeze()
    sys.exit(status)


# ------------------------------------------------------------------------ option types
def _number(text, kind):
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError("%r is not %s" % (text, "an integer" if kind is int
                                                            else "a number"))
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError("%r is not a finite number" % text)
    return v


def number(text):
    """argparse type: a finite float (NaN and infinities refused)."""
    return _number(text, float)


def positive(text):
    """argparse type: a finite float > 0."""
    v = _number(text, float)
    if v <= 0:
        raise argparse.ArgumentTypeError("%r must be > 0" % text)
    return v


def at_least(low):
    """argparse type factory: an integer >= ``low``."""
    def check(text):
        v = _number(text, int)
        if v < low:
            raise argparse.ArgumentTypeError("%r must be an integer >= %d" % (text, low))
        return v
    check.__name__ = "integer >= %d" % low
    return check


def backend_name(text):
    """argparse type: the name of a compute backend (whether OpenCL can run is checked by
    :func:`resolve_backend`, before any work)."""
    from ..backends import available_backends
    name = text.strip().lower()
    if name not in available_backends():
        raise argparse.ArgumentTypeError("unknown backend %r; available: %s"
                                         % (text, ", ".join(available_backends())))
    return name


# ------------------------------------------------------------------------ shared options
def add_movie_inputs(parser, particles_help="particles STAR (3D alignment, CTF, coords)",
                     mics_help="corrected_micrographs.star of the motion correction (movies, "
                               "gain, dose, global shifts)"):
    """The input options of the movie programs (polish, train, bfactors); returns the group."""
    g = parser.add_argument_group("inputs")
    g.add_argument("--particles", required=True, help=particles_help)
    g.add_argument("--mics", required=True, help=mics_help)
    g.add_argument("--postprocess", help="postprocess STAR naming the half maps and mask")
    g.add_argument("--half1")
    g.add_argument("--half2")
    g.add_argument("--mask")
    g.add_argument("--root", default=None,
                   help="project folder the STAR paths are relative to, as RELION writes them "
                        "(default: current directory; else each STAR file's folder is tried)")
    return g


def check_reference_args(args, program):
    """Refuse a run that names neither a postprocess STAR nor both half maps."""
    if not args.postprocess and not (args.half1 and args.half2):
        raise SystemExit("%s: give --postprocess or both --half1 and --half2" % program)


def unit_interval(text):
    """argparse type: a finite float in [0, 1]."""
    v = _number(text, float)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("%r must lie in [0, 1]" % text)
    return v


def max_ed(text):
    """argparse type of --max-ed: -1 (all) or an integer >= 1."""
    v = _number(text, int)
    if v != -1 and v < 1:
        raise argparse.ArgumentTypeError("%r must be -1 (all eigendeformations) or an integer "
                                         ">= 1" % text)
    return v


def add_max_ed(group):
    """--max-ed K of the motion programs (polish, train): the GP basis keeps at most the K
    leading eigendeformations of Sigma_V (RELION's --max_ed; :func:`..core.motion.prior.gp_basis`,
    no P x P array then); read it with :func:`max_dims`."""
    group.add_argument("--max-ed", type=max_ed, default=-1,
                       help="GP motion basis: at most this many eigendeformations per micrograph "
                            "(the largest; as RELION's --max_ed); -1 = all (default). With K "
                            "below the particles per micrograph the basis is made without a "
                            "P x P matrix: memory O(P K) instead of 24 P^2 bytes")


def max_dims(args):
    """The ``max_dims`` of :func:`..core.motion.prior.gp_basis` for --max-ed (None: all)."""
    return None if args.max_ed == -1 else args.max_ed


def max_ed_setting(args):
    """--max-ed in a job's recorded settings (jobdir): only when given, so that folders of the
    default job made before the option existed still resume."""
    return {} if args.max_ed == -1 else {"max_ed": args.max_ed}


def add_prior_arguments(parser):
    """The prior options of refine and external_reconstruct (Kimanius et al. 2021, eq. 11 / 17,
    §4.3), the same types and help in both; returns the group. Check them with
    :func:`check_prior_arguments` before any work."""
    from ..core.refine.confidence import CW_SHELLS, HIGH_A, LOW_A, THRESHOLDS
    from ..core.refine.denoisers import DENOISERS, TTA, TV_WEIGHT, UNET_TTA
    from ..core.refine.unet import PRECISIONS
    r = parser.add_argument_group("prior (M-step)")
    r.add_argument("--mode", choices=("tikhonov", "red", "cw-red"), default="tikhonov",
                   help="tikhonov: eq. 11; red: eq. 17 with --lambda; cw-red: eq. 17 with lambda "
                        "from the half-map FSC 0.143 resolution (0 worse than --cw-low, 1 better "
                        "than --cw-high, linear between)")
    r.add_argument("--denoiser", choices=DENOISERS, default=None,
                   help="for red / cw-red; default unet where torch (the unet extra) is "
                        "installed, else tv")
    r.add_argument("--tv-weight", type=positive, default=TV_WEIGHT,
                   help="denoiser tv: TV weight on the standardised map")
    r.add_argument("--unet-weights", default=None,
                   help="denoiser unet: weights file of train_denoiser (default: the shipped one)")
    r.add_argument("--unet-tta", type=int, choices=TTA, default=None,
                   help="denoiser unet: average it over this many symmetries of the cube (8: "
                        "the axis flips; 48: also the axis permutations), each undone on the "
                        "output (test-time augmentation; that many times the CPU); 1: none; "
                        "default %d" % UNET_TTA)
    r.add_argument("--unet-precision", choices=PRECISIONS, default=None,
                   help="denoiser unet: arithmetic of the network (bfloat16: its correction to "
                        "the input rounded to 8 bits, ~6x faster where the CPU has AVX-512 BF16 "
                        "or AMX, much slower where not); default auto, bfloat16 where the CPU "
                        "has it natively, else float32")
    r.add_argument("--lambda", dest="lam", type=unit_interval, default=1.0,
                   help="lambda of mode red, in [0, 1]")
    own = ", ".join("%s %g / %g" % (d, lo, hi) for d, (lo, hi) in sorted(THRESHOLDS.items()))
    r.add_argument("--cw-low", type=positive, default=None,
                   help="cw-red: lambda 0 at/worse (A); default the denoiser's: %s, derived from "
                        "its single-pass gain; others the paper's %g" % (own, LOW_A))
    r.add_argument("--cw-high", type=positive, default=None,
                   help="cw-red: lambda 1 at/better (A); default the denoiser's (see --cw-low), "
                        "others the paper's %g" % HIGH_A)
    r.add_argument("--cw-shells", choices=CW_SHELLS, default="final",
                   help="red / cw-red: weight the denoised prior mean per shell by the "
                        "gold-standard FSC (0 where the halves disagree: Tikhonov there), in "
                        "every update (all) or in the final map (both halves joined) only "
                        "(final, the default: the setting of every benchmark against RELION); "
                        "none: the paper's unweighted prior mean")
    return r


def check_prior_arguments(args, program):
    """Refuse prior options that contradict each other, and a missing weights file; fill in
    CW-RED's thresholds the options leave unset with the denoiser's
    (:func:`..core.refine.confidence.thresholds_for`), the U-Net's test-time augmentation with
    its default and its precision with the one auto picks on this CPU; without --denoiser, the
    default denoiser (the U-Net where torch is installed)."""
    from ..core.refine.confidence import thresholds_for
    from ..core.refine.denoisers import UNET_TTA, default_denoiser
    if args.denoiser is None:
        args.denoiser = default_denoiser()
        if args.mode != "tikhonov":
            log.info("denoiser %s (the default%s)", args.denoiser, "" if args.denoiser == "unet"
                     else ": torch is not installed, so not the U-Net, which needs the unet "
                          "extra and was measured better")
    low, high = thresholds_for(args.denoiser)
    args.cw_low = low if args.cw_low is None else args.cw_low
    args.cw_high = high if args.cw_high is None else args.cw_high
    if args.cw_high >= args.cw_low:
        raise SystemExit("%s: --cw-high (%g A) must be finer than --cw-low (%g A)"
                         % (program, args.cw_high, args.cw_low))
    if args.unet_weights and args.denoiser != "unet":
        raise SystemExit("%s: --unet-weights is for --denoiser unet (got --denoiser %s)"
                         % (program, args.denoiser))
    if args.unet_tta is not None and args.denoiser != "unet":
        raise SystemExit("%s: --unet-tta is for --denoiser unet (got --denoiser %s)"
                         % (program, args.denoiser))
    if args.unet_precision is not None and args.denoiser != "unet":
        raise SystemExit("%s: --unet-precision is for --denoiser unet (got --denoiser %s)"
                         % (program, args.denoiser))
    if args.denoiser == "unet" and args.unet_tta is None:
        args.unet_tta = UNET_TTA
    if args.denoiser == "unet":
        from ..core.refine.unet import resolve_precision
        args.unet_precision = resolve_precision(args.unet_precision or "auto")
    if args.unet_weights and not os.path.isfile(args.unet_weights):
        raise InputError(args.unet_weights, "no such U-Net weights file")


def resolve_backend(name):
    """The backend module for --backend ``name`` (None: env POLISHPLUGIN_BACKEND, else numba),
    chosen once before any work; an unknown name or an unusable OpenCL is a one-line exit."""
    from ..backends import BackendError, get_backend
    from ..constants import BACKEND_VAR
    try:
        be = get_backend(name)
    except (BackendError, ValueError) as exc:
        where = "backend" if name is not None or not os.environ.get(BACKEND_VAR) else BACKEND_VAR
        raise SystemExit("%s: %s" % (where, exc)) from None
    log.info("compute backend: %s", be.NAME)
    return be


def add_output_options(parser):
    """--backend (kernels: numba | numpy | opencl | auto), --threads, --out, --fresh,
    --allow-partial and --no-figures, the same in every program."""
    c = parser.add_argument_group("compute")
    c.add_argument("--backend", default=None, type=backend_name,
                   help="numba (default) | numpy | opencl | auto (OpenCL if a device is usable, "
                        "else numba); default: env POLISHPLUGIN_BACKEND")
    c.add_argument("--threads", type=at_least(1), default=1)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--fresh", action="store_true",
                        help="discard what an earlier run with other settings left in --out "
                             "(default: refuse to mix results of different settings)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 although some micrographs failed (they are listed in "
                             "failed.txt); default: exit status %d" % PARTIAL)
    parser.add_argument("--no-figures", action="store_true")


def finish_status(program, failed, allow_partial, n_done=1):
    """Exit status of a job that ran: 0; :data:`PARTIAL` when micrographs failed and the user
    did not allow partial results; 1 when nothing succeeded (``n_done`` 0). Failures logged."""
    if not failed:
        return 0
    if not n_done:
        log.error("%s: every micrograph failed (see failed.txt)", program)
        report_error("%s: no micrograph could be processed (%d failed, see failed.txt); first: %s"
                     % (program, len(failed), failed[0]))
        return 1
    if allow_partial:
        log.warning("%s: %d micrograph(s) failed (see failed.txt); partial results allowed",
                    program, len(failed))
        return 0
    log.error("%s: %d micrograph(s) failed (see failed.txt): exit status %d (--allow-partial "
              "accepts partial results)", program, len(failed), PARTIAL)
    report_error("%s: %d micrograph(s) failed (see failed.txt); first: %s"
                 % (program, len(failed), failed[0]))
    return PARTIAL


def job_figures():
    """:mod:`polishplugin.figures.jobs` with matplotlib on the Agg backend: programs draw
    without a display and never import a GUI toolkit."""
    import matplotlib
    matplotlib.use("Agg")
    from ..figures import jobs
    return jobs


def auto_window(sigma_vel_px, n_frames, box):
    """CC search radius (px) around the initial track when --window is 0: four prior standard
    deviations of a random walk of sigma_vel px per frame over the frames plus 4 px, at least 4
    and at most a quarter of the box. Polishing and training use the same rule, so training
    aligns over the range that polishing will search."""
    return max(4, min(box // 4, int(np.ceil(4 * sigma_vel_px * np.sqrt(n_frames))) + 4))
