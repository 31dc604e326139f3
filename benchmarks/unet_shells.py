"""Per Fourier shell, what the RED denoiser does to a held-out map (issue 12): FSC vs truth of the
noisy half map x~ and of f(x~), the power of f(x~) and of the §3.1 target (truth x half-map FSC)
relative to x~'s, and the mean FSC 10-4 A and MSE vs truth of the eq. 17 update applied to x~
(``unet_pairs.red_blend``: FSC x~ + (1 - FSC) lambda f(x~)) beside Tikhonov's (FSC x~).

    python benchmarks/unet_shells.py [--weights W] [--structure 5me2] [--seed 5]

Coloured-noise half maps (``unet_pairs.gaussian_pair``) whose half-map FSC crosses 0.143 at 8 A
(B 0), 12 A (B 100) and 6 A (B 0), at box 64 / 2.0 A/px (the refinement benchmark's) and at
box 80 / 1.5 A/px (the model card's), the structure in its own orientation.
"""
import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from polishplugin.core.fourier import fsc  # noqa: E402
from polishplugin.core.refine.denoisers import get_denoiser  # noqa: E402
from polishplugin.core.fourier import shell_band  # noqa: E402
from polishplugin.core.refine.unet_pairs import gaussian_pair, red_blend  # noqa: E402
from polishplugin.core.simulate.volumes import _shell_index, volume_from_model  # noqa: E402


def shell_power(v):
    n = v.shape[0]
    s = np.rint(_shell_index(n) * n).astype(int)
    return np.bincount(s.ravel(), (np.abs(np.fft.fftn(v)) ** 2).ravel())[:n // 2 + 1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", default=None, help="U-Net weights (default: the shipped ones)")
    p.add_argument("--structure", default="5me2")
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    f = get_denoiser("unet", unet_weights=args.weights)
    models = os.path.join(REPO, "..", "shared", "data", "models")
    path = [os.path.join(models, args.structure + e) for e in (".pdb", ".cif")
            if os.path.isfile(os.path.join(models, args.structure + e))][0]
    rng = np.random.default_rng(args.seed)
    for box, px in ((64, 2.0), (80, 1.5)):
        truth = volume_from_model(path, box, px, 2 * px).astype(np.float64)
        truth /= truth.std()
        band = shell_band(box, px)
        for res, b in ((8.0, 0.0), (12.0, 100.0), (6.0, 0.0)):
            x, t, curve = gaussian_pair(truth, px, rng, res, bfactor=b)
            y = f(x)
            fi, fo = fsc(x, truth), fsc(y, truth)
            pf, pt = shell_power(y) / shell_power(x), shell_power(t) / shell_power(x)
            print("\n%s, box %d, %.1f A/px, half-map FSC 0.143 at %g A, B %g: mean FSC 10-4 A "
                  "x~ %.3f, f(x~) %.3f" % (args.structure, box, px, res, b, fi[band].mean(),
                                           fo[band].mean()))
            for lam in (0.36, 1.0):
                tik, red = red_blend(x, 0 * x, curve, lam), red_blend(x, y, curve, lam)
                print("  eq. 17, lambda %.2f: mean FSC 10-4 A %.3f (Tikhonov %.3f), MSE vs truth "
                      "%.3f (Tikhonov %.3f)" % (lam, fsc(red, truth)[band].mean(),
                                                fsc(tik, truth)[band].mean(),
                                                ((red - truth) ** 2).mean(),
                                                ((tik - truth) ** 2).mean()))
            print("  shell  res(A)  FSC-half  FSC x~  FSC f(x~)  |f|^2/|x~|^2  |t|^2/|x~|^2")
            for s in range(4, box // 2 + 1, 2):
                print("  %5d %7.1f %9.3f %7.3f %10.3f %13.3g %13.3g"
                      % (s, box * px / s, curve[s], fi[s], fo[s], pf[s], pt[s]))


if __name__ == "__main__":
    main()
