"""Our masked, phase-randomisation-corrected FSC (core/masked_fsc.py) against relion_postprocess
3.1.3 on the same half maps and mask: per curve the largest difference from RELION's, for the
random curves beside the largest difference between two of our seeds; the randomisation shell;
the 0.143 resolution (ours interpolated, ours in RELION's convention: the last shell before the
first below 0.143, RELION's); the CPU of one call against RELION's wall time.

Cases: simulated half maps (a low-passed pseudo-protein + white noise with a tight mask; coloured
noise with a soft mask; EMD-3488 with a soft mask of its own, 100^3) and, with --refine, the unregularised
halves of a small pp_refine --mask run (its fsc.star's columns against RELION on those halves).

    python benchmarks/masked_fsc_vs_relion.py --out /tmp/mfsc_bench [--refine]
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np

from _common import child_env, refine_command, write_project
from polishplugin.core.fourier import resolution_at
from polishplugin.core.masked_fsc import SHELL_OFFSET, masked_fsc
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import half_maps, lowpass, pseudo_protein, soft_mask
from polishplugin.io.mrc import read_mrc, write_mrc
from polishplugin.io.star import read_star

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "maps")
LABELS = {"unmasked": "rlnFourierShellCorrelationUnmaskedMaps",
          "masked": "rlnFourierShellCorrelationMaskedMaps",
          "randomised": "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps",
          "corrected": "rlnFourierShellCorrelationCorrected"}


def relion_shell(curve):
    """RELION's resolution shell: the last before the first below 0.143."""
    below = np.flatnonzero(np.asarray(curve)[1:] < 0.143)
    return int(below[0]) if len(below) else len(curve) - 1


def simulated(name):
    rng = np.random.default_rng(5)
    if name == "lowpass8_white_tight":
        n, px = 64, 1.5
        signal = lowpass(pseudo_protein(n, px, rng, radius_A=0.2 * n * px), 8.0, px)
        h = [signal + signal.std() * rng.standard_normal(signal.shape) for _ in range(2)]
        return h[0], h[1], soft_mask(lowpass(signal, 12.0, px), 0.15 * signal.max(), 1, 2), px
    if name == "coloured6A_soft":
        n, px = 64, 1.5
        truth = pseudo_protein(n, px, rng, radius_A=0.18 * n * px)
        h1, h2 = half_maps(truth, rng, 6.0, px)
        low = lowpass(truth, 15.0, px)
        return h1, h2, soft_mask(low, 0.1 * low.max(), 3, 5), px
    truth, px = read_mrc(os.path.join(DATA, "emd_3488.mrc"))   # its contour mask is 91x91x100
    h1, h2 = half_maps(truth, rng, 4.0, px)
    low = lowpass(truth, 15.0, px)
    return h1, h2, soft_mask(low, 0.2 * low.max(), 3, 6), px


def compare(name, h1, h2, mask, px, folder, ours_fixed=None, seeds=4):
    os.makedirs(os.path.join(folder, "pp"), exist_ok=True)
    for f, v in (("half1.mrc", h1), ("half2.mrc", h2), ("mask.mrc", mask)):
        write_mrc(os.path.join(folder, f), v, px)
    t0 = time.time()
    subprocess.run(["relion_postprocess", "--i", "half1.mrc", "--i2", "half2.mrc", "--mask",
                    "mask.mrc", "--angpix", str(px), "--auto_bfac", "false", "--adhoc_bfac", "0",
                    "--o", "pp/postprocess"], cwd=folder, check=True, capture_output=True)
    relion_wall = time.time() - t0
    blocks = read_star(os.path.join(folder, "pp", "postprocess.star"))
    rel = {k: np.asarray(blocks["fsc"][v], float) for k, v in LABELS.items()}
    t0 = time.process_time()
    runs = [masked_fsc(h1, h2, mask, np.random.default_rng(s)) for s in range(1, seeds + 1)]
    cpu = (time.process_time() - t0) / seeds
    a, b = runs[:2]
    n = h1.shape[0]
    k0 = a.randomize_shell
    start = {"unmasked": 0, "masked": 0, "randomised": 0, "corrected": k0 + SHELL_OFFSET}
    row = {"case": name, "box": n, "px": px, "k0_ours": k0,
           "randomise_from_ours_A": round(a.randomise_from(px), 3),
           "randomise_from_relion_A": float(blocks["general"]["rlnRandomiseFrom"][0]),
           "ours_cpu_s": round(cpu, 3), "relion_wall_s": round(relion_wall, 3)}
    for key in LABELS:
        s = start[key]
        row["max_diff_" + key] = float(np.abs(getattr(a, key) - rel[key])[s:].max())
        if key in ("randomised", "corrected"):
            row["max_seed_spread_" + key] = float(np.abs(getattr(a, key) - getattr(b, key))[
                s:].max())
    if ours_fixed is not None:      # the columns pp_refine wrote, against RELION
        for key in LABELS:
            row["refine_star_max_diff_" + key] = float(np.abs(ours_fixed[key] - rel[key])[
                start[key]:].max())
    row["res_relion_A"] = float(blocks["general"]["rlnFinalResolution"][0])
    row["res_ours_A"] = [round(resolution_at(r.corrected, n, px), 2) for r in runs]
    row["res_ours_relion_shell"] = [relion_shell(r.corrected) for r in runs]
    row["res_relion_shell"] = int(round(n * px / row["res_relion_A"]))
    print(json.dumps(row))
    return row


def refine_case(out):
    """A small pp_refine --mask run (box 40, 3 A/px, 400 particles, SNR 0.1, 5 iterations);
    returns its last iteration's unregularised halves, the mask and its fsc.star columns."""
    folder = os.path.join(out, "refine")
    rng = np.random.default_rng(8)
    n, px = 40, 3.0
    truth = pseudo_protein(n, px, rng)
    ps = simulate_particles(truth, 400, px, 0.1, rng)
    write_project(folder, truth, ps, px)
    mask = soft_mask(lowpass(truth, 15.0, px), 0.1 * truth.max(), 2, 4)
    write_mrc(os.path.join(folder, "mask.mrc"), mask, px)
    cmd = refine_command("--out", "Refine", "--mask", "mask.mrc", "--max-iter", 5, "--fresh")
    subprocess.run(cmd, cwd=folder, check=True, env=child_env(one_thread=True))
    state = sorted(f for f in os.listdir(os.path.join(folder, "Refine", "state")))[-1]
    with np.load(os.path.join(folder, "Refine", "state", state)) as z:
        unreg = z["unregularised"]
    t = read_star(os.path.join(folder, "Refine", "fsc.star"))["fsc"]
    return unreg[0], unreg[1], mask, px, {k: np.asarray(t[v], float) for k, v in LABELS.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--refine", action="store_true", help="also a small pp_refine --mask run")
    a = p.parse_args()
    for name in ("lowpass8_white_tight", "coloured6A_soft", "emd3488_soft"):
        compare(name, *simulated(name), os.path.join(a.out, name))
    if a.refine:
        h1, h2, mask, px, cols = refine_case(a.out)
        compare("pp_refine_box40", h1, h2, mask, px, os.path.join(a.out, "refine_pp"), cols)


if __name__ == "__main__":
    main()
