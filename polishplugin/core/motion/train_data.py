"""In-memory training data of one micrograph for motion-parameter training (§2.2 of Zivanov 2019).

From one pass over a movie, keep what every evaluation of a triplet needs (no re-reading):

* the CC maps (eq. 15-16) of each particle and frame against its OWN half map, restricted to the
  *alignment circle* |k| < T_align: the whitened, damaged prediction is zeroed outside the circle
  (:func:`.tcc.alignment_circle_mask`) before the CC, so the CC maps carry no information from the
  evaluation ring; they are scaled by the contrast sign and amplitude of :mod:`.micrograph`
  (both estimated on the alignment circle too) and stored in 16-bit block floating point
  (:mod:`.compact`, one block per map: within 1/131070 of the map's range, far below what moves
  a fitted track);
* the *evaluation ring* of the observed frames and of the predictions from the OPPOSITE half map
  (:class:`.tcc.EvalRingData`: their weighted products in 8-bit block floating point, one
  pixel per Friedel pair), both whitened with the micrograph's noise spectrum as the CC maps
  are, with the damage filters as per-frame weights of eq. 19 (as RELION's
  MotionParamEstimator).

:meth:`TrainingMicrograph.align` refits the tracks for a triplet with :func:`.fit.fit_tracks` on the
stored CC maps and returns them relative to the patches (what :func:`.tcc.tcc_sums` expects);
:func:`make_align` turns a list of micrographs into the ``align(m, triplet)`` of
:func:`.training.make_tcc_objective`.
"""
import logging
from dataclasses import dataclass

import numpy as np

from ...backends import get_backend
from ...backends.threads import particle_threads
from .compact import Blocks, quantise
from .fit import MotionFitError, fit_tracks
from .micrograph import (_amplitude, _auto_cc, _particle_inputs, _resolve_sign, outside_window,
                         read_spectra)
from .observation import (cc_maps_from_spectra, inverse_noise_weights, noise_power_from_spectra,
                          ring_power, whitening_filter)
from .tcc import EvalRingData, alignment_circle_mask
from .units import MotionParams

log = logging.getLogger(__name__)


@dataclass
class TrainingMicrograph:
    """Training data of one micrograph.

    cc: :class:`.compact.Blocks` (P, F, W, W) of the alignment-circle CC maps, already times
    sign * amplitude (:attr:`cc_maps` gives them as float32);
    centres (P, 2) px; initial_tracks, cut_shifts (P, F, 2) px (as in :func:`.fit.fit_tracks`);
    eval_data: evaluation ring vs the opposite half map; dose_per_frame (e/A^2) and pixel_size
    (A/px) convert a triplet in paper units to pixels (:class:`.units.MotionParams`).
    """
    cc: Blocks
    centres: np.ndarray
    initial_tracks: np.ndarray
    cut_shifts: np.ndarray
    eval_data: EvalRingData
    dose_per_frame: float
    pixel_size: float
    sign: int = 1
    amplitude: float = 1.0
    name: str = ""
    curvature: np.ndarray = None    # (P, F) CC peak curvature (:func:`.evidence.peak_curvature`)

    @property
    def n_particles(self):
        return self.cc.q.shape[0]

    @property
    def cc_maps(self):
        """(P, F, W, W) float32 CC maps (a new array each time)."""
        return self.cc.values()

    @property
    def nbytes(self):
        """Bytes held: evaluation ring + CC maps + the small per-particle arrays."""
        return int(self.eval_data.nbytes + self.cc.nbytes + self.centres.nbytes
                   + self.initial_tracks.nbytes + self.cut_shifts.nbytes
                   + (0 if self.curvature is None else self.curvature.nbytes))

    def evidence(self, triplet, backend=None, max_dims=None):
        """The marginal likelihood of :mod:`.evidence` around the MAP tracks at ``triplet`` (paper
        units; ``max_dims`` as in :meth:`align`) on the stored alignment-circle CC maps: a
        function of a paper-unit triplet."""
        from .evidence import Evidence, pseudo_observations
        tracks = self.align(triplet, backend, max_dims=max_dims) + self.cut_shifts
        be = get_backend(backend)
        y = pseudo_observations(self.cc_maps, tracks, self.cut_shifts, self.curvature, be)
        ev = Evidence(self.centres, y, self.curvature)
        conv = lambda t: MotionParams(*t).to_pixels(self.dose_per_frame, self.pixel_size)  # noqa
        return lambda t: ev(*conv(t))

    def align(self, triplet, backend=None, mode="gp", max_dims=None):
        """Tracks (P, F, 2) relative to the patches (fit - cut) after fitting the stored CC maps
        with ``triplet`` = (sigma_vel, sigma_div, sigma_acc) in paper units (eq. 17-18), a GP basis
        of at most ``max_dims`` dimensions (None: all; :func:`.prior.gp_basis`). A fit that
        fails (MotionFitError, e.g. diverging at an extreme triplet, or tracks leaving the stored
        CC window, which would be read from its opposite edge) keeps the initial tracks."""
        sig_px = MotionParams(*triplet).to_pixels(self.dose_per_frame, self.pixel_size)
        try:
            tracks = fit_tracks(self.cc_maps, self.centres, sig_px, self.initial_tracks,
                                self.cut_shifts, mode=mode, backend=backend,
                                max_dims=max_dims).tracks
            n_out = outside_window(tracks - self.cut_shifts, self.cc_maps.shape[-1] // 2)
            if n_out:  # the bicubic read wrapped to the window's opposite edge: not a fit
                raise MotionFitError("%d particle-frame positions left the %d px CC window"
                                     % (n_out, self.cc_maps.shape[-1] // 2))
        except MotionFitError as exc:
            log.warning("%s: fit failed at %s (%s); initial tracks kept", self.name, triplet, exc)
            tracks = self.initial_tracks
        return tracks - self.cut_shifts


def make_align(micrographs, backend=None, max_dims=None):
    """align(m, triplet) over a list of :class:`TrainingMicrograph` (for make_tcc_objective)."""
    def align(m, triplet):
        return micrographs[m].align(triplet, backend=backend, max_dims=max_dims)
    return align


def eval_ring_from_spectra(spectra, opposite_predictions, noise_power, damage, t_eval, k_max,
                           sign=1, bits=8):
    """:class:`EvalRingData` of the patches' rfft2 half-planes (P, F, n, n//2+1) vs sign *
    opposite predictions (P, n, n) (fft2), both whitened by 1/sqrt(noise_power), damage
    (F, n, n) or None as per-frame weights; built one particle at a time; bits as
    :meth:`.tcc.EvalRingData.from_fourier`."""
    P, F, n = spectra.shape[:3]
    white_half = whitening_filter(n, noise_power)
    white_full = np.sqrt(inverse_noise_weights(n, n, noise_power))
    parts = []
    for p in range(P):
        obs = spectra[p] * white_half
        pred = sign * np.asarray(opposite_predictions[p]) * white_full
        parts.append(EvalRingData.from_fourier(obs[None], pred[None], t_eval, k_max, damage, bits))
    return EvalRingData.concatenate(parts)


def build_training_micrograph(frames, centres, predictions, opposite_predictions, damage,
                              initial_tracks, t_align, t_eval, k_max, dose_per_frame, pixel_size,
                              window=8, invert="auto", cc_scale="likelihood", defects=None,
                              noise_power=None, name="", bits=8, cc_bits=16, backend=None,
                              late_defects=None, workers=1):
    """Read the F frames once and keep a :class:`TrainingMicrograph`.

    frames: iterable of gain-corrected (ny, nx) frames; centres (P, 2) px; predictions and
    opposite_predictions (P, n, n) fft2 of the own / opposite half map (core.predict);
    damage (F, n, n) or None; initial_tracks (P, F, 2) px (e.g. the MotionCorr global track);
    t_align, t_eval, k_max: px of the n-box (:func:`.tcc.split_threshold`); window: CC radius px;
    invert, cc_scale, defects, noise_power, late_defects, workers as in
    :func:`.micrograph.align_micrograph` (the frames are read as polishing reads them:
    :func:`.micrograph.read_spectra`, one transform per particle-frame); bits, cc_bits: of the
    stored evaluation-ring products and CC maps (:mod:`.compact`); backend: of the CC maps.
    Raises MotionFitError for non-finite frames or when no signal is found.
    """
    centres, predictions = _particle_inputs(centres, predictions)
    P, n = predictions.shape[:2]
    if np.shape(opposite_predictions) != (P, n, n):
        raise ValueError("opposite predictions %s do not match %d particles of box %d"
                         % (np.shape(opposite_predictions), P, n))
    init = np.asarray(initial_tracks, dtype=np.float64)
    if init.ndim != 3 or init.shape[0] != P or init.shape[2] != 2:
        raise ValueError("initial tracks %s do not match %d particles" % (init.shape, P))
    if not np.all(np.isfinite(init)):
        raise MotionFitError("initial tracks contain NaN or infinite values")
    spectra, cut = read_spectra(frames, centres, init, n, n, defects, workers,
                                late_defects=late_defects)
    be = particle_threads(get_backend(backend), workers)
    noise = noise_power_from_spectra(spectra, ring_power(spectra, be)) if noise_power is None \
        else np.asarray(noise_power)
    circle = predictions * alignment_circle_mask(n, t_align)
    cc = cc_maps_from_spectra(spectra, circle, damage, window, noise, cc_scale, backend=be)
    sign = _resolve_sign(invert, cc, min(3, window))
    amp = _amplitude(cc, _auto_cc(circle, damage, noise, cc_scale), min(3, window), sign)
    if not np.isfinite(amp) or amp <= 0:
        raise MotionFitError("no particle signal on the alignment circle (amplitude %g)" % amp)
    from .evidence import peak_curvature
    curv = peak_curvature(circle, damage, noise, amp, cc_scale).astype(np.float32)
    cc = quantise(cc * np.float32(sign * amp), cc_bits, block_ndim=2)
    ring = eval_ring_from_spectra(spectra, opposite_predictions, noise, damage, t_eval, k_max,
                                  sign, bits)
    return TrainingMicrograph(cc=cc, centres=centres, initial_tracks=init, cut_shifts=cut,
                              eval_data=ring, dose_per_frame=float(dose_per_frame),
                              pixel_size=float(pixel_size), sign=sign, amplitude=amp, name=name,
                              curvature=curv)


def simulated_training_micrograph(dataset, mic, t_align, t_eval, k_max, window=8, n=None,
                                  invert="auto", bits=8):
    """:class:`TrainingMicrograph` of a simulated micrograph
    (:class:`~polishplugin.core.simulate.dataset.SimulatedMicrograph`; tests, benchmarks), set up as :func:`.micrograph.polish_simulated_micrograph` with its
    defaults: frames raw * gain, defects detected from the movie, the simulation's earlier global
    track as initial tracks, predictions at the true angles and CTFs, exposure-filter damage."""
    from ..ctf import CtfParams
    from ..defects import detect_defects
    from ..predict import make_projectors, predict_particles
    from .patches import damage_filters

    c = dataset.config
    F, px = mic.positions.shape[1], c.pixel_size
    n = c.box if n is None else n
    gain = mic.gain
    frames = (mic.frames[f] * gain if gain is not None else mic.frames[f] for f in range(F))
    defects = detect_defects(mic.frames.sum(axis=0, dtype=np.float64), F, gain)
    projectors = make_projectors(dataset.half1, dataset.half2, dataset.mask, c.projector_pad)
    ctfs = [CtfParams(u, v, a, c.voltage, c.cs, c.amplitude_contrast)
            for u, v, a in zip(mic.defocus_u, mic.defocus_v, mic.defocus_angle)]
    own = predict_particles(projectors, mic.angles, mic.half_set, ctfs, n, px)
    opp = predict_particles(projectors, mic.angles, mic.half_set, ctfs, n, px, opposite=True)
    damage = damage_filters(n, px, F, c.dose_per_frame, c.pre_exposure, c.voltage)
    init = np.repeat(mic.global_track[None], len(mic.centres), axis=0)
    return build_training_micrograph(frames, mic.centres, own, opp, damage, init, t_align, t_eval,
                                     k_max, c.dose_per_frame, px, window=window, invert=invert,
                                     defects=defects, name=mic.name, bits=bits)
