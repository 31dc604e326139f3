"""How broad the posteriors of a refinement are: from a saved state of a pp_refine run, redo the
E-step of half 1 on 100 of its particles and count, per image, the poses that hold 99.9 % of
the posterior (the back-projected ones) and the mass of the 100 most probable (what the former
cap of 100 poses kept). BENCHMARKS.md, "The back-projection keeps every significant pose".

    python benchmarks/refine_significant_poses.py RUN_FOLDER ITERATION
        (RUN_FOLDER: the pp_refine --out folder, e.g. .../pseudo_snr0.02/cw-red_unet, whose
         parent holds particles.star and ref.mrc as refine_vs_relion.py writes them;
         ITERATION: a state saved in RUN_FOLDER/state, e.g. 010)
"""
import os
import sys

import numpy as np

from polishplugin.core.reconstruct import Backprojector
from polishplugin.core.refine import loop
from polishplugin.programs import refine as program


def main(run, iteration, count=100):
    os.chdir(os.path.dirname(os.path.abspath(run)))
    args = program.build_parser().parse_args(
        ["--particles", "particles.star", "--ref", "ref.mrc", "--out", os.path.abspath(run)])
    _, _, particles, _, _, _, _ = program.read_inputs(args)
    settings = program.settings_of(args, particles.n, particles.pixel_size)
    state = loop.State.load(os.path.join(run, "state", "iter_%s.npz" % iteration))
    counts, top = [], []
    significant = loop.significant

    def spy(weights, mass=loop.MASS, max_poses=None):
        kept = significant(weights, mass, max_poses)
        if max_poses is None:                 # the back-projection's call, one image at a time
            w = np.asarray(weights, float)[0]
            counts.append(int(np.count_nonzero(kept[0])))
            top.append(float(np.sort(w)[::-1][:100].sum() / w.sum()))
        return kept

    loop.significant = spy
    n, px = particles.n, particles.pixel_size
    solvent = loop.sphere_mask(n, loop._particle_radius_px(settings, n, px))
    idx = np.flatnonzero(particles.half_sets == 1)[:count]
    bp = Backprojector(n, settings.pad, r_max=min(n // 2 - 1, state.current_size // 2))
    loop.estep_half(state.refs[0] * solvent, idx, particles, state, settings,
                    loop.inverse_sigma2(state.sigma2, n, state.current_size), False, bp, None)
    loop.significant = significant
    k, f = np.array(counts), np.array(top)
    print("iteration %s: order %d (%s), %d images" % (
        iteration, state.order, "local" if state.order >= settings.local_order else "global",
        len(k)))
    print("poses holding 99.9 %%: median %d (10-90 %%: %d-%d); mass in the top 100: median %.3f "
          "(10 %%: %.3f)" % (np.median(k), np.percentile(k, 10), np.percentile(k, 90),
                             np.median(f), np.percentile(f, 10)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
