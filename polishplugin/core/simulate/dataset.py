"""A simulated single-particle movie data set with known truth (motion, damage, noise, orientations).

``simulate_dataset(config)`` builds the dataset-level truth (volume, half maps, mask, detector,
contrast) once; ``SimulatedDataset.micrograph(i)`` regenerates micrograph i deterministically from
(config.seed, i), so only one movie needs to be in memory at a time.

Random streams: dataset level ``default_rng([seed, 0])``, contrast reference ``[seed, 2]``,
micrograph i ``[seed, 1, i]``.
"""
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.fft

from ..ctf import CtfParams, ctf_2d
from ..geometry import random_orientations
from ..motion.units import MotionParams
from ..projector import Projector
from . import movies, volumes
from .motion import noisy_global_track, refined_position_errors, sample_motion

log = logging.getLogger(__name__)


@dataclass
class SimulationConfig:
    """Everything that defines a simulated data set. Units: A, e-/A^2, px, kV, mm; motion sigmas in
    the paper's units (Table 2). SNR = variance over the box of the full-dose, CTF-modulated particle
    signal (no damage, no motion) / variance of the full-dose counting noise over the same box."""
    seed: int = 0
    n_micrographs: int = 4
    micrograph_shape: tuple = (1024, 1024)     # (ny, nx) px
    n_frames: int = 24
    particles_per_micrograph: int = 30
    box: int = 128                             # particle box = truth volume size, px
    pixel_size: float = 1.2                    # A/px
    dose_per_frame: float = 1.25               # e-/A^2
    pre_exposure: float = 0.0                  # e-/A^2
    voltage: float = 300.0                     # kV
    cs: float = 2.7                            # mm
    amplitude_contrast: float = 0.1
    defocus_range: tuple = (8000.0, 25000.0)   # A, mean defocus per micrograph, uniform
    astigmatism_max: float = 400.0             # A, |U - V| uniform in [0, max]
    defocus_spread: float = 50.0               # A, per-particle defocus sd around the micrograph's
    sigma_vel: float = 0.5                     # A / (e-/A^2)   (paper units, Table 2)
    sigma_div: float = 5000.0                  # A
    sigma_acc: float = 2.0                     # A / (e-/A^2); <= 0 disables
    drift_A: float = 4.0                       # stage drift path length over the movie, A
    substeps: int = 4                          # sub-steps per frame (motion blur)
    snr: float = 0.01                          # full-dose particle SNR (movies.contrast_for_snr)
    dark_particles: bool = False               # True: lambda = dose (1 - c s), dark as in real raw
                                               # data; False: frames match the predictions' sign
    model_path: Optional[str] = None           # atomic model for the truth; None = pseudo-protein
    truth_resolution: float = 3.0              # A, low-pass of a model-based truth
    half_map_resolution: float = 4.0           # A, FSC(half1, half2) = 0.143 here
    mask_extend_px: float = 3.0
    mask_soft_px: float = 6.0
    bfactors: Optional[Sequence[float]] = None  # per-frame B (A^2) replacing the exposure filter
    bfactor_scales: Optional[Sequence[float]] = None  # per-frame C_f (log amplitude scale)
    gain: bool = True
    gain_sigma: float = 0.1
    dead_columns: int = 2
    hot_pixels: int = 5
    hot_level: float = 50.0                    # hot pixel counts per frame, in units of dose_px
    mtf: Optional[str] = None                  # None or 'sinc'
    patch_factor: float = 2.0                  # rendering patch = patch_factor * box (CTF spread)
    min_distance: Optional[float] = None       # px between particles; default 0.75 * box
    refined_position_sigma: float = 0.5        # px, error of the refined centres
    refined_from_data: bool = True             # centres found by correlating the aligned
                                               # dose-weighted data with the reference (refine.py);
                                               # False: truth + refined_position_sigma noise
    global_track_noise: float = 0.3            # px, error of the earlier global motion correction
    projector_pad: int = 2

    @property
    def dose_px(self):
        """Expected electrons per pixel per frame."""
        return self.dose_per_frame * self.pixel_size ** 2

    @property
    def motion_params(self):
        return MotionParams(self.sigma_vel, self.sigma_div, self.sigma_acc)


@dataclass
class SimulatedMicrograph:
    """One simulated movie with its truth. Positions are (x, y) px in the micrograph, pixel index =
    coordinate; tracks are displacements of the content (+x: content moved towards +x), zero at
    frame 0. The refined centre (coords - origins_A / pixel_size) is the particle's frame-averaged
    position in the micrograph aligned with the noisy global track, plus a refinement error."""
    name: str
    frames: np.ndarray             # (F, ny, nx) uint16 raw counts
    gain: Optional[np.ndarray]     # (ny, nx) float32, multiply raw by it; None = no gain
    defect_mask: np.ndarray        # (ny, nx) bool dead pixels
    hot_pixels: np.ndarray         # (K, 2) (x, y) truth
    positions: np.ndarray          # (P, F, 2) true mid-frame (x, y) px
    velocities: np.ndarray         # (P, F-1, 2) px/frame
    substeps: np.ndarray           # (P, F, S, 2) px
    coords: np.ndarray             # (P, 2) integer (x, y) px, refined centre = coords - origins/px
    origins_A: np.ndarray          # (P, 2) A (RELION rlnOriginX/YAngst sign)
    angles: np.ndarray             # (P, 3) rot, tilt, psi radians (true)
    defocus_u: np.ndarray          # (P,) A
    defocus_v: np.ndarray          # (P,) A
    defocus_angle: np.ndarray      # (P,) degrees
    half_set: np.ndarray           # (P,) 1 or 2
    global_track: np.ndarray       # (F, 2) px noisy whole-frame track, zero at frame 0
    global_track_true: np.ndarray  # (F, 2) px stage drift, zero at frame 0
    expected: Optional[np.ndarray] = None  # (F, ny, nx) float32 noiseless expected counts
    pixel_size: float = 1.0

    @property
    def centres(self):
        """Refined particle centres (P, 2) px in the motion-corrected micrograph."""
        return self.coords - self.origins_A / self.pixel_size


@dataclass
class SimulatedDataset:
    config: SimulationConfig
    volume: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    mask: np.ndarray
    contrast: float
    detector: movies.Detector
    projector: Projector = field(repr=False)

    @property
    def pixel_size(self):
        return self.config.pixel_size

    @property
    def optics(self):
        c = self.config
        return {"voltage": c.voltage, "cs": c.cs, "amplitude_contrast": c.amplitude_contrast,
                "pixel_size": c.pixel_size}

    @property
    def motion_params(self):
        return self.config.motion_params

    @property
    def motion_sigmas_px(self):
        c = self.config
        return c.motion_params.to_pixels(c.dose_per_frame, c.pixel_size)

    def __len__(self):
        return self.config.n_micrographs

    def __iter__(self):
        return (self.micrograph(i) for i in range(len(self)))

    @property
    def patch_size(self):
        return scipy.fft.next_fast_len(int(np.ceil(self.config.patch_factor * self.config.box)))

    def micrograph(self, i, keep_expected=False):
        """Micrograph i, regenerated deterministically from (seed, i)."""
        if not 0 <= i < len(self):
            raise IndexError("micrograph %d of %d" % (i, len(self)))
        return _simulate_micrograph(self, i, keep_expected)


def _truth_volume(c, rng):
    if c.model_path:
        return volumes.volume_from_model(c.model_path, c.box, c.pixel_size, c.truth_resolution)
    return volumes.pseudo_protein(c.box, c.pixel_size, rng)


def _reference_signal_variance(projector, c, rng, nref=8):
    """Mean variance over the box of CTF-filtered projections (mid-range defocus, no damage, no
    motion) for ``nref`` random orientations: the 'particle signal' of the SNR definition."""
    rot, tilt, psi = random_orientations(nref, rng)
    d = 0.5 * sum(c.defocus_range)
    ctf = ctf_2d(CtfParams(d, d, 0.0, c.voltage, c.cs, c.amplitude_contrast), c.box, c.pixel_size)
    proj = projector.project_many(np.stack([rot, tilt, psi], axis=1))
    imgs = np.fft.ifft2(proj * ctf).real
    return float(np.mean(imgs.var(axis=(1, 2))))


def simulate_dataset(config):
    """Build the dataset-level truth for ``config`` (deterministic from config.seed)."""
    c = config
    rng = np.random.default_rng([c.seed, 0])
    truth = _truth_volume(c, rng)
    h1, h2 = volumes.half_maps(truth, rng, c.half_map_resolution, c.pixel_size)
    mask = volumes.soft_mask(truth, 0.1 * float(truth.max()), c.mask_extend_px, c.mask_soft_px)
    det = movies.make_detector(c.micrograph_shape, rng, c.gain_sigma, c.dead_columns, c.hot_pixels,
                               c.hot_level, c.gain)
    proj = Projector(truth, pad=c.projector_pad)
    var = _reference_signal_variance(proj, c, np.random.default_rng([c.seed, 2]))
    contrast = movies.contrast_for_snr(c.snr, c.dose_px, c.n_frames, var)
    log.info("simulated truth %d^3 at %.3f A/px, contrast %.4g for SNR %g", c.box, c.pixel_size,
             contrast, c.snr)
    return SimulatedDataset(c, truth, h1, h2, mask, contrast, det, proj)


def _simulate_micrograph(ds, i, keep_expected):
    c = ds.config
    rng = np.random.default_rng([c.seed, 1, i])
    nf, npart, m = c.n_frames, c.particles_per_micrograph, ds.patch_size
    sv, _, _ = ds.motion_sigmas_px
    move = 4.0 * sv * np.sqrt(nf) + c.drift_A / c.pixel_size + 2.0
    s0 = movies.place_particles(c.micrograph_shape, npart, c.min_distance or 0.75 * c.box,
                                c.box / 2 + move, rng)
    mot = sample_motion(s0, nf, c.motion_params, c.dose_per_frame, c.pixel_size, rng,
                        c.drift_A, c.substeps)
    rot, tilt, psi = random_orientations(npart, rng)
    dmean = rng.uniform(*c.defocus_range)
    astig = rng.uniform(0.0, c.astigmatism_max)
    dang = rng.uniform(0.0, 180.0)
    dpart = dmean + c.defocus_spread * rng.standard_normal(npart)
    du, dv = dpart + 0.5 * astig, dpart - 0.5 * astig
    half = 1 + rng.permutation(npart) % 2

    filters = movies.frame_filters(m, c.pixel_size, nf, c.dose_per_frame, c.pre_exposure,
                                   c.voltage, c.bfactors, c.bfactor_scales)
    mtf = movies.detector_mtf(m, c.mtf)
    signal = np.zeros((nf,) + tuple(c.micrograph_shape), dtype=np.float32)
    centres = np.rint(mot.positions.mean(axis=1)).astype(int)
    for p in range(npart):
        fproj = ds.projector.project(rot[p], tilt[p], psi[p], shape=(m, m))
        ctf = ctf_2d(CtfParams(du[p], dv[p], dang, c.voltage, c.cs, c.amplitude_contrast), m,
                     c.pixel_size)
        patch = movies.render_particle(fproj, ctf, filters, mot.substeps[p] - centres[p], mtf)
        movies.add_patch(signal, patch, (centres[p, 1] - m // 2, centres[p, 0] - m // 2))
    expected = signal
    expected *= c.dose_px * ds.contrast * (-1.0 if c.dark_particles else 1.0)
    expected += c.dose_px
    raw = movies.count_frames(expected, ds.detector, c.dose_px, rng)

    whole = mot.positions - s0[:, None, :]
    glob = noisy_global_track(whole.mean(axis=0) if npart else mot.global_track, rng,
                              c.global_track_noise)
    refined = (mot.positions - glob[None]).mean(axis=1) + refined_position_errors(
        npart, rng, c.refined_position_sigma)
    if c.refined_from_data and npart:
        from ..predict import make_projectors
        from .refine import ctf_params_of, data_refined_centres
        refined = data_refined_centres(
            raw, ds.detector.gain, (mot.positions - glob[None]).mean(axis=1), glob,
            np.stack([rot, tilt, psi], axis=1), half,
            ctf_params_of(du, dv, np.full(npart, dang), c.voltage, c.cs, c.amplitude_contrast),
            make_projectors(ds.half1, ds.half2, ds.mask), c.box, c.pixel_size, c.dose_per_frame,
            c.voltage, sign=-1.0 if c.dark_particles else 1.0)
    coords = np.rint(refined)
    origins = (coords - refined) * c.pixel_size
    return SimulatedMicrograph(
        name="sim_%04d" % i, frames=raw, gain=ds.detector.gain, defect_mask=ds.detector.defect_mask,
        hot_pixels=ds.detector.hot_pixels, positions=mot.positions, velocities=mot.velocities,
        substeps=mot.substeps, coords=coords, origins_A=origins,
        angles=np.stack([rot, tilt, psi], axis=1), defocus_u=du, defocus_v=dv,
        defocus_angle=np.full(npart, dang), half_set=half, global_track=glob,
        global_track_true=mot.global_track, expected=expected if keep_expected else None,
        pixel_size=c.pixel_size)
