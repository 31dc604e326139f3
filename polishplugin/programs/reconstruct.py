"""Two half-set reconstructions from particles with known alignment, their FSC and resolution
(direct Fourier inversion, :mod:`polishplugin.core.reconstruct`); no Scipion needed.

    python -m polishplugin.programs.reconstruct --particles shiny/particles.star --out Recon \\
        [--root DIR --mask mask.mrc --truth volume.mrc --batch 256 --pad 2]

Reads angles (rlnAngleRot/Tilt/Psi), origins (rlnOriginX/YAngst: the particle centre sits at
image centre - origin / pixel size), CTF (RELION convention, phase-flipped or premultiplied data
refused) and half-sets (rlnRandomSubset; alternating when absent); images are read in batches
of --batch from their stacks (memory-mapped), so any number of particles streams through.

Writes (under --out): half1.mrc, half2.mrc; fsc.star (data_general: rlnFinalResolution = FSC
0.143 of the (masked) half maps, rlnImageSize, rlnImagePixelSize; data_fsc: rlnSpectralIndex,
rlnResolution, rlnAngstromResolution, rlnFourierShellCorrelation (half maps) and, with --truth,
rlnFscAgainstTruth = FSC(mean of the half maps, truth)); reconstruct.json with the
resolutions (A): half maps at 0.143, vs truth at 0.5, and the NaN/infinite pixels filled
(images without any finite pixel are left out). A non-finite FSC is an error, never a
resolution.
"""
import argparse
import json
import logging
import os
import time
import warnings

import mrcfile
import numpy as np

from ..io.atomic import atomic_text
from ..io.errors import InputError
from ..io.paths import star_path
from ..io.star import StarTable, optics_of, read_particles_star, write_star
from ..core.defects import fill_nonfinite
from ..io.polish_inputs import check_numbers
from .cli import at_least, exit_program, job_figures, run_program

log = logging.getLogger("polishplugin.reconstruct")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--particles", required=True, help="particles STAR with alignment and CTF")
    p.add_argument("--root", default=None, help="project folder the image paths are relative "
                   "to (default: current directory; else the STAR file's folder is tried)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mask", help="mask applied to both half maps before the FSC")
    p.add_argument("--truth", help="true volume: FSC of the reconstruction against it")
    p.add_argument("--batch", type=at_least(1), default=256,
                   help="images per back-projection batch")
    p.add_argument("--pad", type=at_least(1), default=2, help="Fourier oversampling")
    p.add_argument("--no-ctf", action="store_true", help="ignore the CTF (CTF = 1)")
    p.add_argument("--no-figures", action="store_true")
    return p


def _location(name, star_file, root):
    idx, path = str(name).split("@", 1)
    return int(idx) - 1, star_path(path, star_file, root)


def _folder_tried(root):
    return ("--root %s" % os.path.abspath(root)) if root is not None else \
        "the current directory %s (no --root)" % os.getcwd()


class StackReader:
    """Particle images by (index, path), stacks memory-mapped once each; NaN/infinite pixels are
    filled with the image's finite mean and counted (``nonfinite``: pixels); an image without
    any finite pixel is None (counted in ``empty``)."""

    def __init__(self, root=None):
        self._open, self.root = {}, root
        self.nonfinite, self.empty = 0, 0

    def image(self, index, path):
        if path not in self._open:
            if not os.path.exists(path):
                raise InputError(path, "particle stack not found (image names are taken "
                                 "relative to %s)" % _folder_tried(self.root))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._open[path] = mrcfile.mmap(path, mode="r", permissive=True)
        data = self._open[path].data
        if data.ndim == 2:
            data = data[None]
        if not 0 <= index < len(data):
            raise InputError(path, "image %d requested but the stack holds %d" % (index + 1,
                                                                                  len(data)))
        image = np.array(data[index], dtype=np.float64)
        n = fill_nonfinite(image)
        self.nonfinite += n
        if n == image.size:
            self.empty += 1
            return None
        return image

    def close(self):
        for m in self._open.values():
            m.close()
        self._open = {}


def particle_geometry(optics, parts, path):
    """Per-particle angles (N, 3) rad, centre shifts (N, 2) px, CTF params, half-sets, pixel
    size and box from a particles table."""
    from ..core.ctf import CtfParams
    px_all = optics_of(optics, parts, "rlnImagePixelSize").astype(float)
    if np.ptp(px_all) > 1e-4 * px_all[0]:
        raise InputError(path, "optics groups with different pixel sizes are not supported")
    px = float(px_all[0])
    if "rlnCtfDataAreCtfPremultiplied" in optics and np.any(
            optics_of(optics, parts, "rlnCtfDataAreCtfPremultiplied").astype(int)):
        raise InputError(path, "CTF-premultiplied images are not supported")
    n = len(parts)
    angles = np.deg2rad(np.stack([np.asarray(parts.get(lb, np.zeros(n)), float) for lb in
                                  ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], axis=1))
    ox = np.asarray(parts.get("rlnOriginXAngst", np.zeros(n)), float)
    oy = np.asarray(parts.get("rlnOriginYAngst", np.zeros(n)), float)
    shifts = -np.stack([ox, oy], axis=1) / px
    half = np.asarray(parts["rlnRandomSubset"], int) if "rlnRandomSubset" in parts \
        else 1 + np.arange(n) % 2
    ctfs = None
    if "rlnDefocusU" in parts:
        volt = optics_of(optics, parts, "rlnVoltage").astype(float)
        cs = optics_of(optics, parts, "rlnSphericalAberration").astype(float)
        q0 = optics_of(optics, parts, "rlnAmplitudeContrast").astype(float)
        du, dv = (np.asarray(parts[k], float) for k in ("rlnDefocusU", "rlnDefocusV"))
        da = np.asarray(parts.get("rlnDefocusAngle", np.zeros(n)), float)
        ph = np.asarray(parts.get("rlnPhaseShift", np.zeros(n)), float)
        ctfs = [CtfParams(du[i], dv[i], da[i], volt[i], cs[i], q0[i], ph[i]) for i in range(n)]
    return angles, shifts, ctfs, half, px


def reconstruct_particles(particles_star, root=None, batch=256, pad=2, use_ctf=True):
    """(half1, half2, pixel size, particles per half) from a particles STAR, streaming the
    images through one :class:`~polishplugin.core.reconstruct.Backprojector` per half-set."""
    from ..core.ctf import ctf_2d
    from ..core.geometry import euler_to_matrix
    from ..core.reconstruct import Backprojector, centered_fft
    optics, parts = read_particles_star(particles_star)
    check_numbers(particles_star, parts, "particles")
    if optics is not None:
        check_numbers(particles_star, optics, "optics")
    angles, shifts, ctfs, half, px = particle_geometry(optics, parts, particles_star)
    if not set(np.unique(half)) <= {1, 2}:
        raise InputError(particles_star, "rlnRandomSubset must be 1 or 2")
    reader = StackReader(root)
    locs = [_location(nm, particles_star, root) for nm in parts["rlnImageName"]]
    first = next((im for im in (reader.image(*loc) for loc in locs) if im is not None), None)
    if first is None:
        raise InputError(particles_star, "no particle image has a finite pixel")
    n = first.shape[-1]
    reader.nonfinite, reader.empty = 0, 0
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    halves, counts = [], []
    try:
        for h in (1, 2):
            bp = Backprojector(n, pad)
            idx = np.flatnonzero(half == h)
            kept = 0
            for i0 in range(0, len(idx), batch):
                sel = idx[i0:i0 + batch]
                imgs = [reader.image(*locs[i]) for i in sel]
                sel = sel[[im is not None for im in imgs]]
                if not len(sel):
                    continue
                imgs = np.stack([im for im in imgs if im is not None])
                kept += len(sel)
                c = np.stack([ctf_2d(ctfs[i], n, px) for i in sel]) \
                    if (use_ctf and ctfs is not None) else None
                bp.insert(centered_fft(imgs, shifts[sel]), rots[sel], c)
            halves.append(bp.reconstruct())
            counts.append(kept)
    finally:
        reader.close()
    if reader.nonfinite:
        log.warning("%d NaN/infinite pixels filled; %d image(s) without any finite pixel left "
                    "out", reader.nonfinite, reader.empty)
    return halves[0], halves[1], px, counts, {"nonfinite_pixels": reader.nonfinite,
                                              "images_left_out": reader.empty}


def fsc_report(half1, half2, px, mask=None, truth=None):
    """dict: curves and resolutions (half maps at 0.143; mean map vs ``truth`` at 0.5)."""
    from ..core.fourier import fsc, resolution_at
    n = half1.shape[0]
    m = 1.0 if mask is None else mask
    curve = fsc(half1 * m, half2 * m)
    rep = {"fsc": curve, "resolution_0143": float(resolution_at(curve, n, px))}
    if truth is not None:
        if truth.shape != half1.shape:
            raise ValueError("truth volume %s differs from the reconstruction %s"
                             % (truth.shape, half1.shape))
        ct = fsc(0.5 * (half1 + half2) * m, truth * m)
        rep.update(fsc_truth=ct, resolution_truth_05=float(resolution_at(ct, n, px, 0.5)))
    return rep


def write_outputs(out, half1, half2, px, rep, counts):
    from ..io.mrc import write_mrc
    os.makedirs(out, exist_ok=True)
    write_mrc(os.path.join(out, "half1.mrc"), half1, px)
    write_mrc(os.path.join(out, "half2.mrc"), half2, px)
    n = half1.shape[0]
    shells = np.arange(len(rep["fsc"]))
    cols = {"rlnSpectralIndex": shells, "rlnResolution": shells / (n * px),
            "rlnAngstromResolution": np.where(shells > 0, n * px / np.maximum(shells, 1), 999.0),
            "rlnFourierShellCorrelation": rep["fsc"]}
    if "fsc_truth" in rep:
        cols["rlnFscAgainstTruth"] = rep["fsc_truth"]
    general = StarTable({"rlnFinalResolution": [rep["resolution_0143"]], "rlnImageSize": [n],
                         "rlnImagePixelSize": [px]}, loop=False)
    write_star(os.path.join(out, "fsc.star"), {"general": general, "fsc": StarTable(cols)})
    summary = {k: v for k, v in rep.items() if not k.startswith("fsc")}
    summary.update(particles_half1=counts[0], particles_half2=counts[1], box=n, pixel_size=px)
    with atomic_text(os.path.join(out, "reconstruct.json")) as fh:
        json.dump(summary, fh, indent=1)
    return summary


def run(args):
    from ..io.mrc import read_mrc
    t0 = time.time()
    h1, h2, px, counts, filled = reconstruct_particles(args.particles, args.root, args.batch,
                                                       args.pad, not args.no_ctf)
    mask = read_mrc(args.mask)[0] if args.mask else None
    truth = read_mrc(args.truth)[0] if args.truth else None
    for name, vol in (("mask", mask), ("truth", truth)):
        if vol is not None and vol.shape != h1.shape:
            raise InputError(getattr(args, name), "shape %s differs from the reconstruction %s"
                             % (vol.shape, h1.shape))
    try:
        rep = fsc_report(h1, h2, px, mask, truth)
    except ValueError as exc:
        raise SystemExit("reconstruct: %s" % exc)
    rep.update(filled)
    summary = write_outputs(os.path.abspath(args.out), h1, h2, px, rep, counts)
    log.info("%d + %d particles, box %d, %.3f A/px: half-map FSC 0.143 at %.2f A%s (%.1f s)",
             counts[0], counts[1], h1.shape[0], px, rep["resolution_0143"],
             ", vs truth FSC 0.5 at %.2f A" % rep["resolution_truth_05"] if truth is not None
             else "", time.time() - t0)
    if not args.no_figures:
        figures = job_figures()
        figures.plots.save_figure(figures.reconstruct_fsc_figure(args.out),
                                  os.path.join(args.out, "fsc"))
    return summary


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
