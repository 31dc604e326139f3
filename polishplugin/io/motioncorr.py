"""RELION MotionCorr outputs: corrected_micrographs.star and the per-micrograph metadata STAR.

Metadata STAR blocks: data_general (rlnImageSizeX/Y/Z, rlnMicrographMovieName,
rlnMicrographGainName, rlnMicrographBinning, rlnMicrographOriginalPixelSize,
rlnMicrographDoseRate, rlnMicrographPreExposure, rlnVoltage, rlnMicrographStartFrame,
rlnMotionModelVersion), data_global_shift (rlnMicrographFrameNumber, rlnMicrographShiftX/Y, in
unbinned movie pixels), data_local_motion_model (rlnMotionModelCoeffsIdx, rlnMotionModelCoeff)
and data_hot_pixels (rlnCoordinateX/Y).

Quirks of foreign writers tolerated (3dem/relion issues #1073, #1321): MotionCor2 1.6 writes
-9999 for shifts it has not measured (read as NaN, with a warning); MotionCor3 writes a command
line fragment such as "--gain_rot" as rlnMicrographGainName (ignored, with a warning) and a dose
of 1.0 as a placeholder (flagged in ``dose_is_placeholder``, with a warning).
"""
import dataclasses
import logging
import os

import numpy as np

from .errors import InputError
from .star import StarTable, read_star, write_star

log = logging.getLogger(__name__)

MISSING_SHIFT = -9999.0
PLACEHOLDER_DOSE = 1.0


def read_corrected_micrographs(path):
    """corrected_micrographs.star -> (optics, micrographs); micrographs need rlnMicrographName.

    rlnMicrographMetadata (the per-micrograph STAR) is what polishing needs; a file without it is
    accepted here and left for the caller to judge.
    """
    path = os.fspath(path)
    blocks = read_star(path)
    if "micrographs" not in blocks:
        raise InputError(path, "no data_micrographs block: not a corrected_micrographs STAR")
    mics = blocks["micrographs"]
    mics.require(("rlnMicrographName",), path, "micrographs")
    if len(mics) == 0:
        raise InputError(path, "data_micrographs has no rows")
    optics = blocks.get("optics")
    if optics is None:
        raise InputError(path, "no data_optics block (RELION 3.1+ MotionCorr output expected)")
    return optics, mics


def write_corrected_micrographs(path, optics, micrographs):
    """Write a corrected_micrographs.star (data_optics + data_micrographs), atomically."""
    write_star(path, {"optics": optics, "micrographs": micrographs})


@dataclasses.dataclass
class MicrographMetadata:
    """Content of one per-micrograph metadata STAR.

    general: data_general as a dict; shifts: (F, 2) global shifts in unbinned movie pixels (NaN
    where missing); frames: the frame numbers (1-based) of ``shifts``; motion_model: (idx, coeffs)
    arrays or None; hot_pixels: (N, 2) x, y; dose_is_placeholder: the dose rate looks like
    MotionCor3's placeholder 1.0.
    """
    general: dict
    shifts: np.ndarray
    frames: np.ndarray
    motion_model: tuple = None
    hot_pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    dose_is_placeholder: bool = False

    @property
    def movie_name(self):
        return self.general.get("rlnMicrographMovieName")

    @property
    def gain_name(self):
        return self.general.get("rlnMicrographGainName")


def read_micrograph_metadata(path):
    """Per-micrograph metadata STAR -> :class:`MicrographMetadata` (quirks: see module doc)."""
    path = os.fspath(path)
    blocks = read_star(path)
    if "general" not in blocks or len(blocks["general"]) == 0:
        raise InputError(path, "no data_general block: not a micrograph metadata STAR")
    blocks["general"].require(("rlnMicrographMovieName",), path, "general")
    general = blocks["general"].row(0)
    gain = general.get("rlnMicrographGainName")
    if gain is not None and (not str(gain).strip() or str(gain).startswith("-")):
        log.warning("%s: ignoring rlnMicrographGainName %r (not a file name; MotionCor3 quirk)",
                    path, gain)
        del general["rlnMicrographGainName"]
    dose = general.get("rlnMicrographDoseRate")
    placeholder = dose is not None and float(dose) == PLACEHOLDER_DOSE
    if placeholder:
        log.warning("%s: dose rate 1.0 e/A2/frame looks like a MotionCor3 placeholder; give the "
                    "real dose", path)
    if "global_shift" not in blocks:
        raise InputError(path, "no data_global_shift block")
    shift_t = blocks["global_shift"]
    shift_t.require(("rlnMicrographShiftX", "rlnMicrographShiftY"), path, "global_shift")
    if len(shift_t) == 0:
        raise InputError(path, "data_global_shift has no rows")
    shifts = np.stack([shift_t["rlnMicrographShiftX"], shift_t["rlnMicrographShiftY"]], axis=1)
    shifts = shifts.astype(np.float64)
    missing = np.isclose(shifts, MISSING_SHIFT)
    if missing.any():
        log.warning("%s: %d shift values are -9999 (not measured; MotionCor2 1.6 quirk), "
                    "read as NaN", path, int(missing.sum()))
        shifts[missing] = np.nan
    start = int(general.get("rlnMicrographStartFrame", 1))
    frames = shift_t.get("rlnMicrographFrameNumber")
    frames = np.arange(start, start + len(shifts)) if frames is None else frames
    model = None
    if "local_motion_model" in blocks and len(blocks["local_motion_model"]):
        mt = blocks["local_motion_model"]
        mt.require(("rlnMotionModelCoeffsIdx", "rlnMotionModelCoeff"), path, "local_motion_model")
        model = (mt["rlnMotionModelCoeffsIdx"], mt["rlnMotionModelCoeff"].astype(np.float64))
    hot = np.zeros((0, 2))
    if "hot_pixels" in blocks and len(blocks["hot_pixels"]):
        ht = blocks["hot_pixels"]
        ht.require(("rlnCoordinateX", "rlnCoordinateY"), path, "hot_pixels")
        hot = np.stack([ht["rlnCoordinateX"], ht["rlnCoordinateY"]], axis=1).astype(float)
    return MicrographMetadata(general, shifts, np.asarray(frames), model, hot, placeholder)


def write_micrograph_metadata(path, general, shifts, motion_model=None, hot_pixels=None):
    """Write a per-micrograph metadata STAR atomically.

    ``general``: dict of data_general values (rlnMicrographMovieName at least; rlnImageSizeX/Y/Z,
    rlnMicrographOriginalPixelSize, rlnMicrographDoseRate, ... as known); ``shifts``: (F, 2) in
    unbinned movie pixels, one row per movie frame from frame 1 as RELION writes them (NaN written
    as -9999); rlnMicrographStartFrame (default 1) is the first aligned frame, time zero of the
    local motion model; ``motion_model``: (idx, coeffs) or None; ``hot_pixels``: (N, 2) x, y or
    None.
    """
    general = dict(general)
    general.setdefault("rlnMicrographStartFrame", 1)
    general.setdefault("rlnMotionModelVersion", 1 if motion_model is not None else 0)
    shifts = np.asarray(shifts, dtype=np.float64)
    shifts = np.where(np.isnan(shifts), MISSING_SHIFT, shifts)
    blocks = {
        "general": StarTable({k: [v] for k, v in general.items()}, loop=False),
        "global_shift": StarTable({
            "rlnMicrographFrameNumber": np.arange(1, 1 + len(shifts)),
            "rlnMicrographShiftX": shifts[:, 0], "rlnMicrographShiftY": shifts[:, 1]}),
    }
    if motion_model is not None:
        idx, coeffs = motion_model
        blocks["local_motion_model"] = StarTable({
            "rlnMotionModelCoeffsIdx": np.asarray(idx, dtype=np.int64),
            "rlnMotionModelCoeff": np.asarray(coeffs, dtype=np.float64)})
    if hot_pixels is not None and len(hot_pixels):
        hot = np.asarray(hot_pixels, dtype=np.float64)
        blocks["hot_pixels"] = StarTable({"rlnCoordinateX": hot[:, 0],
                                          "rlnCoordinateY": hot[:, 1]})
    write_star(path, blocks)
