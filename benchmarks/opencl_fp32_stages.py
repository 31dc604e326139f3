"""Where OpenCL single precision departs from numpy in a polishing run, stage by stage, on the
case of ``polishplugin/tests/test_backend_opencl_runs.py`` (3 micrographs, box 48, patch 96):
the projector slices, the CC maps, then the fit (numpy's L-BFGS on OpenCL's CC maps, OpenCL's on
numpy's) and the tracks of the whole run.

    python benchmarks/opencl_fp32_stages.py [--work /tmp/fp32stages]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from polishplugin.backends import get_backend  # noqa: E402
from polishplugin.core.motion import micrograph as mg  # noqa: E402
from polishplugin.core.projector import Projector  # noqa: E402
from polishplugin.programs import polish, simulate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default=tempfile.mkdtemp())
    a = ap.parse_args()
    sim = os.path.join(a.work, "sim")
    if not os.path.isdir(sim):
        simulate.main(["--out", sim, "--micrographs", "3", "--mic-size", "320", "--frames", "6",
                       "--particles", "5", "--box", "48", "--pixel-size", "1.5", "--snr", "0.3",
                       "--no-figures", "--seed", "5"])
    f = simulate.project_files(sim)
    inputs = ["--particles", f["particles"], "--mics", f["mics"], "--postprocess",
              f["postprocess"], "--root", sim, "--no-figures"]
    get_backend("opencl").configure(fp64=False)
    rng = np.random.default_rng(1)
    vol, ang = rng.normal(size=(48, 48, 48)), rng.uniform(-np.pi, np.pi, size=(20, 3))
    s = {be: Projector(vol, r_max=0.22, backend=be).project_many(ang, (96, 96), 44)
         for be in ("numpy", "opencl")}
    print("slices: max |opencl - numpy| / max = %.2e"
          % (np.abs(s["opencl"] - s["numpy"]).max() / np.abs(s["numpy"]).max()))
    fits, fit_tracks = {}, mg.fit_tracks

    def keep(be):
        def hook(cc, centres, sig, init, cut, **k):
            r = fit_tracks(cc, centres, sig, init, cut, **k)
            fits[be].append((np.array(cc), centres, sig, init, cut, r))
            return r
        return hook
    for be in ("numpy", "opencl"):
        fits[be], mg.fit_tracks = [], keep(be)
        out = tempfile.mkdtemp(dir=a.work)         # a fresh run (an old folder would resume)
        assert polish.main(inputs + ["--out", out, "--backend", be]) == 0
    mg.fit_tracks = fit_tracks
    for i, (x, y) in enumerate(zip(fits["numpy"], fits["opencl"])):
        cc, centres, sig, init, cut, rx = x
        ry = y[5]

        def refit(maps, be):
            return fit_tracks(maps, centres, sig, init, cut, backend=be).tracks
        print("micrograph %d: CC maps %.1e of max; tracks %.2e px (L-BFGS iterations %d numpy, "
              "%d opencl); numpy fit of opencl's maps %.1e px; opencl fit of numpy's maps %.1e px"
              % (i, np.abs(y[0] - cc).max() / np.abs(cc).max(),
                 np.abs(ry.tracks - rx.tracks).max(), rx.iterations, ry.iterations,
                 np.abs(refit(y[0], "numpy") - rx.tracks).max(),
                 np.abs(refit(cc, "opencl") - rx.tracks).max()))


if __name__ == "__main__":
    main()
