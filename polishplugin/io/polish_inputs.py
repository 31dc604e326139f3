"""Gather and check the inputs of a movie-level job (polishing, B-factors, training) from RELION
files: particles STAR, corrected_micrographs.star with per-movie metadata, half maps (or
postprocess.star) and a mask.

Everything is checked before any work starts and each problem is reported with the file it
comes from: missing or truncated files, frame counts and pixel sizes that disagree, particles of
micrographs the MotionCorr STAR does not list, particles outside their micrograph, NaN values,
empty inputs, half maps of different shapes or pixel sizes.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..core.ctf import CtfParams
from .errors import InputError
from .motioncorr import read_corrected_micrographs, read_micrograph_metadata
from .movies import Movie
from .mrc import read_mrc, read_mrc_header
from .paths import star_path
from .star import optics_of, read_particles_star, read_postprocess

log = logging.getLogger(__name__)

PARTICLE_LABELS = ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot",
                   "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU", "rlnDefocusV")

#: every numeric column the jobs use, checked (numbers, finite) before any work
USED_NUMBERS = {
    "particles": ("rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot", "rlnAngleTilt",
                  "rlnAnglePsi", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                  "rlnPhaseShift", "rlnOriginXAngst", "rlnOriginYAngst", "rlnRandomSubset"),
    "optics": ("rlnImagePixelSize", "rlnImageSize", "rlnVoltage", "rlnSphericalAberration",
               "rlnAmplitudeContrast"),
    "metadata": ("rlnImageSizeZ", "rlnMicrographBinning", "rlnMicrographOriginalPixelSize",
                 "rlnMicrographDoseRate", "rlnMicrographPreExposure", "rlnVoltage",
                 "rlnMicrographStartFrame"),
}
#: of those, the ones that must be > 0
POSITIVE = ("rlnImagePixelSize", "rlnImageSize", "rlnVoltage", "rlnMicrographBinning",
            "rlnMicrographOriginalPixelSize", "rlnMicrographDoseRate")


@dataclass
class MicrographInput:
    """One movie and its particles (positions in movie pixels, angles in radians)."""
    name: str
    movie: str
    gain: Optional[str]
    nframes: int
    shape: tuple                 # (ny, nx) movie pixels
    pixel_size: float            # movie A/px
    dose_per_frame: float
    pre_exposure: float
    voltage: float
    shifts: np.ndarray           # (F, 2) MotionCor global shifts, movie px (NaN: not measured)
    motion_model: Optional[tuple]
    hot_pixels: np.ndarray       # (K, 2) x, y listed by the motion correction
    index: np.ndarray            # (P,) rows of the particles table
    centres: np.ndarray          # (P, 2) refined centres (x, y), movie px
    angles: np.ndarray           # (P, 3) rot, tilt, psi (radians)
    ctfs: List[CtfParams] = field(default_factory=list)
    half_sets: np.ndarray = None  # (P,) 1 or 2

    start_frame: int = 1         # rlnMicrographStartFrame of the metadata

    @property
    def initial_tracks(self):
        """(P, F, 2) particle displacements from the MotionCorr metadata: the corrected micrograph
        sums frame f shifted by shift_f, so a particle centred at c there sits at c - shift_f in
        raw frame f (track = -shift), plus RELION's third-order local motion model at the
        particle's position when the metadata has one. Frames without a measured shift take the
        previous frame's (RELION's behaviour)."""
        from ..core.motion.init import NOT_OBSERVED, initial_tracks_from_local_model
        coeffs = None
        if self.motion_model is not None:
            idx, values = self.motion_model
            coeffs = np.zeros(36)
            coeffs[np.asarray(idx, dtype=int)] = values
        shifts = np.where(np.isnan(self.shifts), NOT_OBSERVED, self.shifts)
        return initial_tracks_from_local_model(self.centres, shifts, coeffs, self.shape[1],
                                               self.shape[0], np.arange(1, self.nframes + 1),
                                               self.start_frame)


@dataclass
class PolishInputs:
    micrographs: List[MicrographInput]
    optics: object
    particles: object
    half1: np.ndarray
    half2: np.ndarray
    mask: Optional[np.ndarray]
    pixel_size: float            # particles / reference A/px
    box: int
    fsc: Optional[np.ndarray] = None          # per shell, from postprocess.star
    resolution: Optional[float] = None        # A, FSC = 0.143


def _located(name, star, root):
    """The file ``name`` written in ``star`` (:func:`polishplugin.io.paths.star_path`: project-
    relative, else beside the STAR file), or an InputError naming the folders tried."""
    path = star_path(name, star, root)
    if not os.path.exists(path):
        where = ("--root %s" % os.path.abspath(root)) if root is not None else \
            "the current directory %s (no --root)" % os.getcwd()
        raise InputError(path, "no such file; it is named in %s and was looked for relative to "
                         "%s and to that STAR file's folder" % (star, where))
    return path


def _load_reference(postprocess, half1, half2, mask, root):
    fsc = res = None
    if postprocess:
        pp = read_postprocess(postprocess)
        # a missing map's message names the folders tried, as for the movies (_located)
        half1 = half1 or _located(pp["half1"], postprocess, root)
        half2 = half2 or _located(pp["half2"], postprocess, root)
        if mask is None and pp["mask"]:
            mask = _located(pp["mask"], postprocess, root)
        fsc = np.asarray(pp["fsc"]["rlnFourierShellCorrelationCorrected"], dtype=np.float64)
        res = pp["final_resolution"]
    if not half1 or not half2:
        raise InputError(postprocess or "(arguments)",
                         "two half maps are needed (give --half1 and --half2 or a postprocess "
                         "STAR that names them)")
    maps = []
    for path in (half1, half2) + ((mask,) if mask else ()):
        data, px = read_mrc(path)
        if data.ndim != 3 or len(set(data.shape)) != 1:
            raise InputError(path, "a cubic 3D map is needed, got shape %s" % (data.shape,))
        if not np.all(np.isfinite(data)):
            raise InputError(path, "map contains NaN or infinite values")
        maps.append((path, data, px))
    (p1, h1, px1), (p2, h2, px2) = maps[:2]
    if h1.shape != h2.shape:
        raise InputError(p2, "half map shape %s differs from %s (%s)" % (h2.shape, h1.shape, p1))
    if abs(px1 - px2) > 1e-3 * px1:
        raise InputError(p2, "half map pixel size %.4f A differs from %.4f A (%s)" % (px2, px1, p1))
    m = None
    if len(maps) == 3:
        pm, m, _ = maps[2]
        if m.shape != h1.shape:
            raise InputError(pm, "mask shape %s differs from the half maps' %s" % (m.shape, h1.shape))
    return h1, h2, m, px1, fsc, res


def check_numbers(path, table, kind):
    """Refuse a table (StarTable or dict of a data_general block) whose used numeric columns
    (:data:`USED_NUMBERS` [kind]) hold text, NaN or infinities, or a value <= 0 where only a
    positive one makes sense; the message names the column and the first bad row."""
    what = {"particles": "particles", "optics": "optics groups", "metadata": "data_general"}
    for lb in USED_NUMBERS[kind]:
        if lb not in table:
            continue
        raw = np.atleast_1d(np.asarray(table[lb], dtype=object))
        try:
            v = raw.astype(np.float64)
        except (TypeError, ValueError):
            v = np.array([_to_float(x) for x in raw])
        bad = ~np.isfinite(v)
        problem = "NaN, infinite or non-numeric"
        if not bad.any() and lb in POSITIVE:
            bad, problem = v <= 0, "zero or negative"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(path, "%s: column %s has %s values (first: %r in row %d of %d)"
                             % (what[kind], lb, problem, raw[i], i + 1, len(raw)))


def _to_float(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return np.nan


def load_polish_inputs(particles_star, mics_star, postprocess=None, half1=None, half2=None,
                       mask=None, root=None, allow_missing=False, skip_outside=False):
    """Read and check everything a movie-level job needs; see :class:`PolishInputs`.

    Paths inside the STAR files are relative to the project directory ``root`` (default: the
    current directory, where RELION runs), falling back to the STAR file's folder
    (:func:`polishplugin.io.paths.star_path`). ``allow_missing``: drop (with a warning) particles whose micrograph is not
    in ``mics_star`` instead of failing; ``skip_outside``: drop particles whose centre lies
    outside their micrograph instead of failing.
    """
    optics, parts = read_particles_star(particles_star)
    if len(parts) == 0:
        raise InputError(particles_star, "no particles")
    missing = [lb for lb in PARTICLE_LABELS if lb not in parts]
    if missing:
        raise InputError(particles_star, "particles lack %s (3D alignment, CTF and coordinates "
                         "are needed)" % ", ".join(missing))
    check_numbers(particles_star, parts, "particles")
    if optics is not None:
        check_numbers(particles_star, optics, "optics")
    pixel = optics_of(optics, parts, "rlnImagePixelSize").astype(float)
    if np.ptp(pixel) > 1e-4 * pixel[0]:
        raise InputError(particles_star, "optics groups with different pixel sizes (%s) are not "
                         "supported in one job: split by optics group" % sorted(set(pixel)))
    px = float(pixel[0])
    box = int(optics_of(optics, parts, "rlnImageSize")[0]) if "rlnImageSize" in optics else None
    volt = optics_of(optics, parts, "rlnVoltage").astype(float)
    cs = optics_of(optics, parts, "rlnSphericalAberration").astype(float)
    q0 = optics_of(optics, parts, "rlnAmplitudeContrast").astype(float)

    h1, h2, m, ref_px, fsc, res = _load_reference(postprocess, half1, half2, mask, root)
    if abs(ref_px - px) > 1e-3 * px:
        raise InputError(half1 or postprocess, "reference pixel size %.4f A differs from the "
                         "particles' %.4f A (%s)" % (ref_px, px, particles_star))
    box = box or h1.shape[0]

    mic_optics, mics = read_corrected_micrographs(mics_star)
    mics.require(("rlnMicrographMetadata",), mics_star, "micrographs")
    known = {str(n): i for i, n in enumerate(mics["rlnMicrographName"])}
    names = np.asarray([str(n) for n in parts["rlnMicrographName"]])
    absent = sorted(set(names) - set(known))
    if absent:
        n_abs = int(np.isin(names, absent).sum())
        msg = ("%d particles belong to %d micrograph(s) not listed in %s (e.g. %s)"
               % (n_abs, len(absent), mics_star, absent[0]))
        if not allow_missing:
            raise InputError(particles_star, msg + "; fix the inputs or allow dropping them")
        log.warning("%s: %s; they are DROPPED", particles_star, msg)

    half = np.asarray(parts["rlnRandomSubset"], dtype=int) if "rlnRandomSubset" in parts \
        else 1 + (np.arange(len(parts)) % 2)
    if "rlnRandomSubset" not in parts:
        log.warning("%s: no rlnRandomSubset; alternating half-sets assigned", particles_star)
    if not set(np.unique(half)) <= {1, 2}:
        raise InputError(particles_star, "rlnRandomSubset must be 1 or 2, found %s"
                         % sorted(set(np.unique(half))))
    ox = np.asarray(parts["rlnOriginXAngst"], float) if "rlnOriginXAngst" in parts else 0.0 * px
    oy = np.asarray(parts["rlnOriginYAngst"], float) if "rlnOriginYAngst" in parts else 0.0 * px
    phase = np.asarray(parts.get("rlnPhaseShift", np.zeros(len(parts))), float)
    dangle = np.asarray(parts.get("rlnDefocusAngle", np.zeros(len(parts))), float)

    out = []
    for name in [n for n in known if n in set(names)]:
        meta_path = _located(mics["rlnMicrographMetadata"][known[name]], mics_star, root)
        meta = read_micrograph_metadata(meta_path)
        g = meta.general
        check_numbers(meta_path, g, "metadata")
        movie_path = _located(meta.movie_name, meta_path, root)
        gain = _located(meta.gain_name, meta_path, root) if meta.gain_name else None
        with Movie(movie_path, gain=gain) as mov:
            nframes, shape = mov.nframes, mov.shape
            if gain:
                ghdr = read_mrc_header(gain) if gain.endswith(".mrc") else None
                if ghdr is not None and (ghdr.ny, ghdr.nx) != shape:
                    raise InputError(gain, "gain reference is %dx%d but movie %s is %dx%d"
                                     % (ghdr.nx, ghdr.ny, movie_path, shape[1], shape[0]))
        if "rlnImageSizeZ" in g and int(g["rlnImageSizeZ"]) != nframes:
            raise InputError(movie_path, "movie has %d frames but its metadata %s says %d"
                             % (nframes, meta_path, int(g["rlnImageSizeZ"])))
        if len(meta.shifts) != nframes:
            raise InputError(meta_path, "%d global shifts for a movie of %d frames (%s)"
                             % (len(meta.shifts), nframes, movie_path))
        binning = float(g.get("rlnMicrographBinning", 1.0))
        movie_px = float(g.get("rlnMicrographOriginalPixelSize", px))
        if abs(movie_px - px) > 1e-3 * px:
            raise InputError(meta_path, "movie pixel size %.4f A differs from the particles' "
                             "%.4f A (%s); re-extract at the movie pixel size"
                             % (movie_px, px, particles_star))
        dose = g.get("rlnMicrographDoseRate")
        if dose is None or float(dose) <= 0:
            raise InputError(meta_path, "no positive rlnMicrographDoseRate (dose per frame)")
        idx = np.flatnonzero(names == name)
        cx = np.asarray(parts["rlnCoordinateX"], float)[idx] * binning - ox[idx] / px
        cy = np.asarray(parts["rlnCoordinateY"], float)[idx] * binning - oy[idx] / px
        outside = (cx < 0) | (cy < 0) | (cx >= shape[1]) | (cy >= shape[0])
        if outside.any():
            msg = ("%d particle(s) of %s have centres outside the %dx%d micrograph (first: row %d"
                   " at x=%.1f, y=%.1f)" % (outside.sum(), name, shape[1], shape[0],
                                            idx[outside][0] + 1, cx[outside][0], cy[outside][0]))
            if not skip_outside:
                raise InputError(particles_star, msg)
            log.warning("%s: %s; they are skipped", particles_star, msg)
            idx, cx, cy = idx[~outside], cx[~outside], cy[~outside]
        if len(idx) == 0:
            continue
        ctfs = [CtfParams(float(parts["rlnDefocusU"][i]), float(parts["rlnDefocusV"][i]),
                          float(dangle[i]), float(volt[i]), float(cs[i]), float(q0[i]),
                          float(phase[i])) for i in idx]
        angles = np.deg2rad(np.stack([np.asarray(parts[lb], float)[idx] for lb in
                                      ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], axis=1))
        out.append(MicrographInput(
            name=name, movie=movie_path, gain=gain, nframes=nframes, shape=shape,
            pixel_size=px, dose_per_frame=float(dose),
            pre_exposure=float(g.get("rlnMicrographPreExposure", 0.0)),
            voltage=float(g.get("rlnVoltage", volt[idx[0]])), shifts=meta.shifts,
            motion_model=meta.motion_model, hot_pixels=meta.hot_pixels, index=idx,
            start_frame=int(g.get("rlnMicrographStartFrame", 1)),
            centres=np.stack([cx, cy], axis=1), angles=angles, ctfs=ctfs, half_sets=half[idx]))
    if not out:
        raise InputError(particles_star, "no micrograph with particles to process")
    nf = {m.nframes for m in out}
    if len(nf) > 1:
        raise InputError(mics_star, "movies have different frame counts %s: process them in "
                         "separate jobs or give a common frame range" % sorted(nf))
    return PolishInputs(out, optics, parts, h1, h2, m, px, box, fsc, res)
