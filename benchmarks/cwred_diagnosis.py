"""Where CW-RED's gain goes at box 64 (issue 12): diagnostics on a `refine_vs_relion.py` run folder
(seed 1 data: FOLDER holds particles.star, ref.mrc, truth.mrc), FSC vs truth, mean 10-4 A.

  trace  FOLDER STRUCT MODE OUT [pp_refine options]: pp_refine's loop in-process, per iteration
         the median angular error vs the true poses, lambda, the half-map resolution and the
         references' truth FSC; every state saved in OUT.
  final  FOLDER STATE.npz: one iteration (the final pass) from a saved state, then the joined map
         under variants of the prior (Tikhonov; CW-RED, U-Net, per-shell weight or none, lambda).
  oracle FOLDER STATE.npz STRUCT: the final pass with both references replaced by the truth
         (what perfect references could give the poses), Tikhonov joined map.
"""
import dataclasses
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from refine_vs_relion import truth_volume  # noqa: E402
from polishplugin.core.fourier import fsc  # noqa: E402
from polishplugin.core.refine import loop  # noqa: E402
from polishplugin.core.refine.sampling import angular_distance  # noqa: E402
from polishplugin.core.simulate.particles import simulate_particles  # noqa: E402
from polishplugin.io.mrc import read_mrc  # noqa: E402
from polishplugin.programs import refine as prog  # noqa: E402

BAND = slice(13, 33)    # 10-4 A at box 64, 2 A/px


def true_angles(struct):
    """The simulated poses of refine_vs_relion.py --seed 1 (one structure per invocation)."""
    rng = np.random.default_rng(1)
    truth = truth_volume(struct, 64, 2.0, rng)
    return truth, simulate_particles(truth, 400, 2.0, 0.05, rng).angles


def inputs(folder, mode, extra=()):
    args = prog.build_parser().parse_args(
        ["--particles", os.path.join(folder, "particles.star"), "--ref",
         os.path.join(folder, "ref.mrc"), "--out", "unused", "--mode", mode,
         "--particle-diameter", "102.4", "--root", folder]
        + (["--denoiser", "unet"] if mode != "tikhonov" else []) + list(extra))
    parts, optics, particles, ref, mask, angles, shifts = prog.read_inputs(args)
    return particles, ref, angles, shifts, prog.settings_of(args, particles.n,
                                                            particles.pixel_size)


def trace(folder, struct, mode, out, *extra):
    truth, angles_true = true_angles(struct)
    particles, ref, angles, shifts, settings = inputs(folder, mode, extra)
    os.makedirs(out, exist_ok=True)
    rows = []

    def after(st, rec):
        err = angular_distance(st.angles, angles_true)      # degrees
        row = dict(it=rec["iteration"], size=rec["current_size"], res=rec["resolution"],
                   lam=rec["lambda"], med_err=float(np.median(err)), gross=int((err > 20).sum()),
                   ref_fsc=float(np.mean([fsc(r, truth)[BAND].mean() for r in st.refs])))
        if st.final_map is not None:
            row["final_fsc"] = float(fsc(st.final_map, truth)[BAND].mean())
        rows.append(row)
        print(row, flush=True)
        st.save(os.path.join(out, "iter_%03d.npz" % st.iteration))
    loop.refine(particles, loop.initial_state(particles, ref, settings, angles, shifts),
                settings, None, after)
    json.dump(rows, open(os.path.join(out, "trace.json"), "w"), indent=1)


def _show(name, vol, truth):
    c = fsc(vol, truth)
    print("%-30s %.3f | %s" % (name, c[BAND].mean(), " ".join("%.2f" % v for v in c[10:33])),
          flush=True)


def final(folder, path):
    truth = read_mrc(os.path.join(folder, "truth.mrc"))[0]
    particles, _, _, _, settings = inputs(folder, "cw-red", ["--cw-shells", "final"])
    captured, update = {}, loop._update

    def spy(*a, **k):
        if k.get("final"):
            captured["args"] = a
        return update(*a, **k)
    loop._update = spy
    new, rec = loop.iterate(loop.State.load(path), particles, settings)
    loop._update = update
    data, weight, full, n, _, m, lam = captured["args"]
    print("iteration %d, lambda %.3f, half-map %.2f A" % (rec["iteration"], lam,
                                                          rec["resolution"]))
    print("half-map FSC, shells 10-32:", " ".join("%.2f" % v for v in new.fsc[10:33]))
    _show("as run (cw-red, shells final)", new.final_map, truth)
    variant = lambda **kw: dataclasses.replace(settings, **kw)     # noqa: E731
    _show("tikhonov", update(data, weight, full, n, variant(mode="tikhonov"), m, 0.0,
                             final=True)[0], truth)
    for lam_ in (lam, 0.5, 1.0):
        for shells in ("final", "none"):
            _show("cw shells=%s lam %.2f" % (shells, lam_),
                  update(data, weight, full, n, variant(cw_shells=shells), m, lam_,
                         final=True)[0], truth)


def oracle(folder, path, struct):
    truth, angles_true = true_angles(struct)
    particles, _, _, _, settings = inputs(folder, "tikhonov")
    state = loop.State.load(path)
    e0 = angular_distance(state.angles, angles_true)
    state.refs = np.stack([truth, truth]).astype(np.float32)
    new, _ = loop.iterate(state, particles, settings)
    e = angular_distance(new.angles, angles_true)
    print("state: median error %.2f deg, %d gross; truth references: %.2f deg, %d gross"
          % (np.median(e0), (e0 > 20).sum(), np.median(e), (e > 20).sum()))
    _show("joined map (tikhonov)", new.final_map, truth)


if __name__ == "__main__":
    {"trace": trace, "final": final, "oracle": oracle}[sys.argv[1]](*sys.argv[2:])
