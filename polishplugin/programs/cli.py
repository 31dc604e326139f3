"""What every command-line program shares: logging to stderr with time stamps, and bad input
reported as one line naming the file and the problem (exit status 2) instead of a traceback."""
import logging

import numpy as np

from ..io.errors import InputError

log = logging.getLogger("polishplugin")


def run_program(build_parser, run, argv=None):
    """Parse ``argv`` with ``build_parser()``, call ``run(args)``; returns the exit status:
    ``run``'s return value when it is an int, else 0; 2 on :class:`InputError`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        status = run(build_parser().parse_args(argv))
    except InputError as exc:
        log.error("bad input: %s", exc)
        return 2
    return status if isinstance(status, int) else 0


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


def add_output_options(parser, backend=True):
    """--backend (kernels: numba | numpy | opencl), --threads, --out and --no-figures, the same
    in every program."""
    c = parser.add_argument_group("compute")
    if backend:
        c.add_argument("--backend", default=None, help="numba (default) | numpy | opencl")
    c.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-figures", action="store_true")


def auto_window(sigma_vel_px, n_frames, box):
    """CC search radius (px) around the initial track when --window is 0: four prior standard
    deviations of a random walk of sigma_vel px per frame over the frames plus 4 px, at least 4
    and at most a quarter of the box. Polishing and training use the same rule, so training
    aligns over the range that polishing will search."""
    return max(4, min(box // 4, int(np.ceil(4 * sigma_vel_px * np.sqrt(n_frames))) + 4))
