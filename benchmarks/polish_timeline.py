"""Wall-clock seconds of each stage of the real polish program (issue 14, thread scaling).

Runs ``polishplugin.programs.polish`` with its own arguments after wrapping its stage functions
(projector setup, predictions, the one read of the movie with the patch spectra, defect search,
CC maps, MAP fit, FCC sums, diagnostics and outputs) with wall-clock timers; prints the total
per stage when the program ends (stderr). The stage sum against the total shows what is left
(start-up, logging). Compare ``--threads 1`` with ``--threads 2`` on a quiet machine: a stage
whose time does not halve is serial. From a project folder::

    python benchmarks/polish_timeline.py --particles ... --threads 2 --out Polish/tl2
"""
import atexit
import collections
import importlib
import sys
import time

T0 = time.perf_counter()
TOTAL = collections.defaultdict(float)
CALLS = collections.Counter()
STAGES = [("polishplugin.core.predict", "make_projectors"),
          ("polishplugin.programs.polish", "load_polish_inputs"),
          ("polishplugin.core.predict", "predict_particles"),
          ("polishplugin.core.motion.patches", "damage_filters"),
          ("polishplugin.core.motion.micrograph", "extract_spectra"),
          ("polishplugin.programs.micrographs", "detect_defects"),
          ("polishplugin.core.motion.micrograph", "correct_defect_spectra"),
          ("polishplugin.core.motion.micrograph", "ring_power"),
          ("polishplugin.core.motion.micrograph", "cc_maps_from_spectra"),
          ("polishplugin.core.motion.micrograph", "_auto_cc"),
          ("polishplugin.core.motion.micrograph", "fit_tracks"),
          ("polishplugin.core.motion.micrograph", "fcc_from_spectra"),
          ("polishplugin.core.binning", "binned"),
          ("polishplugin.io.mrc", "write_mrc"),
          ("polishplugin.programs.polish", "write_tracks_star"),
          ("polishplugin.programs.polish", "combine"),
          ("polishplugin.programs.polish", "polish_one"),
          ("polishplugin.programs.polish", "polish_all")]


def timed(module, name):
    mod = importlib.import_module(module)
    func = getattr(mod, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return func(*a, **k)
        finally:
            TOTAL[name] += time.perf_counter() - t
            CALLS[name] += 1
    setattr(mod, name, wrapper)


def report():
    print("total %.2f s wall (stage sums below; nested: polish_all > polish_one > the rest)"
          % (time.perf_counter() - T0), file=sys.stderr)
    for name, t in sorted(TOTAL.items(), key=lambda x: -x[1]):
        print("%-24s %7.3f s  x%d" % (name, t, CALLS[name]), file=sys.stderr)


if __name__ == "__main__":
    import polishplugin.programs.polish as polish
    for mod, name in STAGES:
        timed(mod, name)
    atexit.register(report)
    sys.exit(polish.main(sys.argv[1:]))
