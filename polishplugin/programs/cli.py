"""What every command-line program shares: logging to stderr with time stamps, and bad input
reported as one line naming the file and the problem (exit status 2) instead of a traceback."""
import logging

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
