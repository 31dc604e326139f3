"""Regularised reconstruction for ``relion_refine --external_reconstruct`` (Kimanius et al. 2021):
a drop-in for RELION's ``relion_external_reconstruct``, with the Gaussian prior (eq. 11) or a
denoiser prior (RED, eq. 17; CW-RED, §4.3).

    export RELION_EXTERNAL_RECONSTRUCT_EXECUTABLE="python -m polishplugin.programs.external_reconstruct --mode cw-red"
    relion_refine_mpi ... --auto_refine --split_random_halves --external_reconstruct

RELION appends the STAR it wrote (data_external_reconstruct_general, data_external_reconstruct_tau2)
as the last argument; paths in it are relative to the directory RELION runs in. Reads B
(data_real + i data_imag) and K (weight) on the padded half grid, tau^2, the gold-standard FSC,
rlnTau2FudgeFactor, rlnPaddingFactor, rlnOriginalImageSize and rlnCurrentImageSize; writes the
real-space map at the original box to rlnExtReconsResult. The division by K + tau^-2 goes
through iterative gridding weights as RELION's default (--skip-gridding: voxel by voxel). Modes:
  tikhonov  x = B / (K + tau^-2)                                   (= RELION's own M-step)
  red       x = (B + lambda f(x~) tau^-2) / (K + tau^-2), x~ = B / K, lambda = --lambda
  cw-red    red with lambda from the half-map FSC = 0.143 resolution: 0 worse than --cw-low A,
            1 better than --cw-high A, linear between (default the denoiser's thresholds,
            core/refine/confidence.THRESHOLDS; needs the pixel size: rlnPixelSize in the STAR,
            which RELION 3.1 does not write, or --angpix)
--cw-shells none|all|final (red / cw-red): the prior mean lambda f(x~) weighted per shell by the
rlnGoldStandardFsc of the STAR (clipped to [0, 1]; 0: the Gaussian prior there): nowhere (eq. 17
as published), in every call, or (default) only in the last iteration's call for both halves
joined (RELION's file names without _half1/_half2; weighted there by the joined map's FSC,
sqrt(2 FSC / (1 + FSC)), as refine does).

RELION runs the variable's text through the shell with the STAR appended, so options may be
written into it; a launcher that calls the program with fixed arguments (a wrapper script, a
Scipion configuration naming only the program) can set $POLISHPLUGIN_EXTERNAL_RECONSTRUCT_ARGS
instead, e.g. "--mode cw-red --angpix 1.5 --denoiser unet --unet-weights /data/unet3d.npz": those
options come first, so the command line's own override them.
"""
import argparse
import logging
import os
import re
import shlex
import sys

import numpy as np

from ..core.refine.confidence import (cw_red_lambda, nominal_resolution, shell_confidence,
                                      weights_shells)
from ..core.refine.denoisers import get_denoiser
from ..core.refine.update import regularised_map
from ..io.errors import InputError
from ..io.mrc import read_mrc, write_mrc
from ..io.star import read_block
from .cli import add_prior_arguments, check_prior_arguments, exit_program, positive, run_program

log = logging.getLogger("polishplugin.external_reconstruct")

GENERAL = ("rlnExtReconsDataReal", "rlnExtReconsDataImag", "rlnExtReconsWeight",
           "rlnExtReconsResult", "rlnTau2FudgeFactor", "rlnPaddingFactor",
           "rlnReferenceDimensionality", "rlnOriginalImageSize", "rlnCurrentImageSize")
TAU2 = ("rlnSpectralIndex", "rlnReferenceTau2", "rlnGoldStandardFsc")
ARGS_VAR = "POLISHPLUGIN_EXTERNAL_RECONSTRUCT_ARGS"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("star", help="the STAR file relion_refine wrote (its last argument)")
    add_prior_arguments(p)
    p.add_argument("--angpix", type=positive,
                   help="pixel size (A) when the STAR has no rlnPixelSize")
    p.add_argument("--skip-gridding", action="store_true",
                   help="divide by K + tau^-2 voxel by voxel (RELION's --skip_gridding) instead "
                        "of through iterative gridding weights")
    return p


class Job:
    """What the STAR file says: paths, sizes, tau^2 and FSC, checked before any work."""

    def __init__(self, path, angpix=None):
        g = read_block(path, "external_reconstruct_general", GENERAL)
        t = read_block(path, "external_reconstruct_tau2", TAU2)
        self.data_real, self.data_imag, self.weight, self.result = (
            str(g[label][0]) for label in GENERAL[:4])
        self.fudge = float(g["rlnTau2FudgeFactor"][0])
        self.pad = float(g["rlnPaddingFactor"][0])
        self.ori = int(g["rlnOriginalImageSize"][0])
        self.current = int(g["rlnCurrentImageSize"][0])
        self.pixel_size = angpix if angpix else (float(g["rlnPixelSize"][0])
                                                 if "rlnPixelSize" in g else None)
        order = np.argsort(t["rlnSpectralIndex"])
        self.tau2 = np.asarray(t["rlnReferenceTau2"], dtype=np.float64)[order]
        self.fsc = np.asarray(t["rlnGoldStandardFsc"], dtype=np.float64)[order]
        if int(g["rlnReferenceDimensionality"][0]) != 3:
            raise InputError(path, "only 3D references are supported (rlnReferenceDimensionality "
                             "= %d)" % int(g["rlnReferenceDimensionality"][0]))
        if self.pad < 1 or abs(self.pad - round(self.pad)) > 1e-6:
            raise InputError(path, "rlnPaddingFactor must be a whole number >= 1, got %g"
                             % self.pad)
        if self.fudge <= 0:
            raise InputError(path, "rlnTau2FudgeFactor must be positive, got %g" % self.fudge)
        if not 0 < self.current <= self.ori:
            raise InputError(path, "rlnCurrentImageSize %d outside 1..rlnOriginalImageSize %d"
                             % (self.current, self.ori))
        if np.any(self.tau2 < 0):
            raise InputError(path, "negative rlnReferenceTau2")
        # RELION names the files <root>_external_reconstruct_*, root <o>_itNNN[_half1|2]_classNNN
        # (or _bodyNNN); no _half: the last iteration's reconstruction of both halves joined
        self.joined = not re.search(r"_half[12]_(class|body)\d+_external_reconstruct",
                                    os.path.basename(self.data_real))

    def sums(self):
        """B (complex) and K from the three MRC files, checked against the padded box."""
        re, _ = read_mrc(self.data_real)
        im, _ = read_mrc(self.data_imag)
        w, _ = read_mrc(self.weight)
        size = int(round(self.pad * self.ori))
        shape = (size, size, size // 2 + 1)
        for path, arr in ((self.data_real, re), (self.data_imag, im), (self.weight, w)):
            if arr.shape != shape:
                raise InputError(path, "shape %s, expected %s for box %d x padding %g"
                                 % (arr.shape, shape, self.ori, self.pad))
        return re.astype(np.float64) + 1j * im.astype(np.float64), w.astype(np.float64)


def run(args):
    check_prior_arguments(args, "external_reconstruct")
    job = Job(args.star, args.angpix)
    if args.mode == "cw-red" and job.pixel_size is None:
        raise InputError(args.star,
                         "mode cw-red needs the pixel size: no rlnPixelSize, give --angpix")
    data, weight = job.sums()
    lam, denoiser = 0.0, None
    if args.mode == "red":
        lam = args.lam
    elif args.mode == "cw-red":
        res = nominal_resolution(job.fsc, job.ori, job.pixel_size)
        lam = cw_red_lambda(res, args.cw_low, args.cw_high)
        log.info("half-map FSC 0.143 resolution %.2f A -> lambda %.3f", res, lam)
    if args.mode != "tikhonov":
        denoiser = get_denoiser(args.denoiser, tv_weight=args.tv_weight,
                                unet_weights=args.unet_weights, tta=args.unet_tta,
                                unet_precision=args.unet_precision or "auto")
    weight_per_shell = (shell_confidence(job.fsc, job.joined)
                        if weights_shells(args.cw_shells, job.joined) else None)
    vol, _ = regularised_map(data, weight, job.tau2, job.ori, job.pad, job.current, job.fudge,
                             mode="tikhonov" if denoiser is None else "red",
                             denoiser=denoiser, lam=lam, gridding=not args.skip_gridding,
                             shell_weight=weight_per_shell)
    write_mrc(job.result, vol.astype(np.float32), job.pixel_size or 1.0)
    used = "" if denoiser is None else ", denoiser %s%s%s%s%s" % (
        args.denoiser, " " + args.unet_weights if args.unet_weights else "",
        " averaged over %d cube symmetries" % args.unet_tta
        if args.denoiser == "unet" and args.unet_tta != 1 else "",
        " in bfloat16" if args.denoiser == "unet" and args.unet_precision == "bfloat16" else "",
        ", prior mean weighted per shell by the FSC" if weight_per_shell is not None else "")
    log.info("%s%s (lambda %.3f%s): wrote %s", args.mode, " joined halves" if job.joined else "",
             lam, used, os.path.abspath(job.result))


def main(argv=None):
    """Runs with ``argv`` (default: the command line) after the options in $ARGS_VAR."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_program(build_parser, run, shlex.split(os.environ.get(ARGS_VAR, "")) + argv)


if __name__ == "__main__":
    exit_program(main())
