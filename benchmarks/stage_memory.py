"""The polish program with the peak resident memory of each of its stages (issue 14).

Runs ``polishplugin.programs.polish`` in this process (same arguments) with its main stages
wrapped: at each wrapped call's entry the kernel's high-water mark is reset
(``/proc/self/clear_refs`` 5), the enclosing calls keep the peaks seen before the reset, and
at its exit one line goes to stderr: ``stage  entry <VmRSS>  peak <VmHWM since entry>  after
<VmRSS>`` (MB = 10^3 KiB, as /usr/bin/time's %M / 1000). Stages: the inputs, the projector
setup, each micrograph (``polish_one``), its predictions, its one read of the movie with the
patch transforms (``read_spectra``, the defect search inside it), noise, CC maps, auto-CC,
amplitude, fit, FCC sums. Linux only; one process (use ``--threads 1``: with workers the
stages run in forked processes and are not wrapped). From a project folder::

    python benchmarks/stage_memory.py --particles Refine3D/job010/run_data.star \\
        --mics MotionCorr/job002/corrected_micrographs.star \\
        --postprocess PostProcess/job012/postprocess.star --no-figures --threads 1 --fresh \\
        --sigma-vel 0.5 --sigma-div 5000 --sigma-acc 2 --out Polish/stagemem
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_OPEN = []          # [label, peak so far, VmRSS at entry] of the calls under way


def _status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1000.0
    return out


def _reset():
    """Fold the current high-water mark into every open call, then reset it."""
    hwm = _status()["VmHWM"]
    for frame in _OPEN:
        frame[1] = max(frame[1], hwm)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def wrap(module, name):
    func = getattr(module, name)

    def wrapped(*args, **kwargs):
        _reset()
        frame = [name, 0.0, _status()["VmRSS"]]
        _OPEN.append(frame)
        try:
            return func(*args, **kwargs)
        finally:
            now = _status()
            _OPEN.pop()
            peak = max(frame[1], now["VmHWM"])
            for outer in _OPEN:
                outer[1] = max(outer[1], peak)
            print("%s %-28s entry %7.1f  peak %7.1f  after %7.1f" % (
                time.strftime("%H:%M:%S"), "  " * len(_OPEN) + name, frame[2], peak,
                now["VmRSS"]), file=sys.stderr, flush=True)
    setattr(module, name, wrapped)


def main():
    from polishplugin.core import predict
    from polishplugin.core.motion import micrograph
    from polishplugin.programs import micrographs, polish
    wrap(polish, "load_polish_inputs")
    wrap(predict, "make_projectors")          # imported by polish_all when it runs
    for name in ("preload", "polish_one", "particle_predictions"):
        wrap(polish, name)
    wrap(micrographs, "detect_defects")
    for name in ("align_micrograph", "read_spectra", "ring_power", "noise_power_from_spectra",
                 "cc_maps_from_spectra", "_auto_cc", "_amplitude", "fit_tracks",
                 "fcc_from_spectra"):
        wrap(micrograph, name)
    _reset()
    sys.argv = ["polish"] + sys.argv[1:]
    try:
        return polish.main()
    finally:
        now = _status()
        print("end: VmRSS %.1f, peak since the last stage's entry %.1f" % (
            now["VmRSS"], now["VmHWM"]), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
