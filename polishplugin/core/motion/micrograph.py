"""Bayesian polishing of one micrograph (seed zivanov2019 §2.1): patches -> whitening and CC maps
(eq. 12-16) -> contrast sign and amplitude -> initial tracks -> MAP tracks (eq. 17-18) -> FCC
sums (eq. 20, opposite half-set predictions).

Amplitude. The likelihood behind -2 CC (see :mod:`.energy`) assumes that the prediction V is the
expected signal of one frame, in the frames' units. Predictions come from half maps in arbitrary
units with the contrast sign of the reconstruction (bright particles), while raw movies have dark
particles. Both are fixed with one factor a per micrograph, the least-squares amplitude of the
damaged, whitened prediction in the data at the initial alignment: a = sum_f max_s sum_p CC_{p,f}
/ sum_{p,f} |D_f V_p|^2_w (the CC peak of the particle-summed map near the initial track, which
absorbs a small global misalignment; slightly biased upwards by noise at very low SNR). With
``invert="auto"`` the sign of a is the sign of the largest-magnitude value of the
particle-and-frame-summed CC map near the initial track.

Without initial tracks, a global track is estimated from the data as RELION's ``--gi`` does: patches
cut at the centres, CC maps in a wide window, :func:`.init.global_track_from_cc`; the patches are
then re-cut at that track (from a larger patch cut once, so the movie is read only once).
"""
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...backends import get_backend
from ...backends.threads import particle_threads
from ..dose.fcc import FccAccumulator
from .cc_store import CCStore
from .fit import FitResult, MotionFitError, fit_tracks
from .init import global_track_from_cc
from .observation import (cc_maps_from_spectra, cc_scale_factor, crop_plane, crop_rows,
                          crop_size, inverse_noise_weights, max_ring_of, noise_power_from_spectra,
                          rfft_rings, ring_power)
from .patches import (correct_defect_spectra, cut_positions, extract_patches, extract_spectra,
                      fill_patch_defects)
from .spectra_store import SpectraStore, spectra_chunks

log = logging.getLogger(__name__)


@dataclass
class MicrographAlignment:
    tracks: np.ndarray              # (P, F, 2) px, displacement in raw frame f from the centre
    initial_tracks: np.ndarray      # (P, F, 2) px, where the fit started
    fit: FitResult
    noise_power: np.ndarray         # (nrings,) ring-averaged power of the patches
    sign: int                       # +1: frames match the predictions' contrast, -1: inverted
    amplitude: float                # |a|: per-frame signal amplitude relative to the predictions
    cut_shifts: np.ndarray          # (P, F, 2) px
    fcc: Optional[FccAccumulator] = None
    sigma_choice: Optional[object] = None   # :class:`.evidence.SigmaChoice` when chosen here


def _crop(big, big_q, q, n):
    """n-patches at integer positions q (P, F, 2) from larger patches cut at big_q; offsets beyond
    the margin are clipped. Returns (patches, q actually used)."""
    m = (big.shape[-1] - n) // 2
    d = np.clip(q - big_q, -m, m)
    out = np.empty(big.shape[:2] + (n, n), dtype=big.dtype)
    for p in range(big.shape[0]):
        for f in range(big.shape[1]):
            y0, x0 = m + d[p, f, 1], m + d[p, f, 0]
            out[p, f] = big[p, f, y0:y0 + n, x0:x0 + n]
    if np.any(d != q - big_q):
        log.warning("initial tracks move beyond the %d px margin; patches clipped", m)
    return out, big_q + d


def _auto_cc(predictions, damage, noise_power, cc_scale, max_ring=None, n=None):
    """CC_{p,f}(0) of the damaged prediction with itself on the scale of cc_maps_from_spectra:
    scale sum_k D_f^2 |V_p|^2 / S (DC and beyond ring ``max_ring``, default Nyquist, excluded)
    for n x n patches (default the predictions' size; predictions and damage may be cut to a
    smaller grid, :func:`.observation.crop_plane`). Returns (P, F)."""
    m = predictions.shape[-1]
    n = m if n is None else n
    w = inverse_noise_weights(m, n, noise_power, max_ring) * cc_scale_factor(n, cc_scale)
    dmg2 = np.ones((1, m, m)) if damage is None else crop_plane(np.asarray(damage), m) ** 2
    return particle_blocks(lambda v: np.einsum("pyx,fyx->pf", np.abs(v) ** 2 * w, dmg2),
                           predictions, len(dmg2))


#: particles per block of the per-particle sums over predictions (bounded temporaries)
BLOCK = 64


def particle_blocks(func, planes, F):
    """(P, F) float64 of ``func`` (P_block, m, m) -> (P_block, F) applied to ``planes`` (an array
    or anything whose particle slices are arrays) :data:`BLOCK` particles at a time."""
    P = planes.shape[0]
    out = np.empty((P, F))
    for a in range(0, P, BLOCK):
        out[a:a + BLOCK] = func(planes[a:a + BLOCK])
    return out


def _contrast_sign(cc_maps, radius):
    """Sign of the largest-magnitude value of sum_{p,f} CC within ``radius`` of the window centre."""
    total = cc_maps.sum(axis=(0, 1), dtype=np.float64)
    W = total.shape[0]
    yy, xx = np.mgrid[:W, :W] - W // 2
    near = np.where(np.hypot(xx, yy) <= radius, total, 0.0)
    peak = near.flat[np.argmax(np.abs(near))]
    return 1 if peak >= 0 else -1, float(peak)


def _amplitude(cc_maps, auto, radius, sign=1):
    """Least-squares amplitude from the per-frame peaks of the particle-summed CC times ``sign``
    (see module doc; the sign applied to the sums, exactly, not to a copy of the maps)."""
    per_frame = cc_maps.sum(axis=0, dtype=np.float64)              # (F, W, W)
    if sign < 0:
        per_frame = -per_frame
    W = per_frame.shape[-1]
    yy, xx = np.mgrid[:W, :W] - W // 2
    near = np.hypot(xx, yy) <= radius
    peaks = per_frame[:, near].max(axis=1)
    den = float(auto.sum())
    return float(peaks.sum()) / den if den > 0 else 0.0


def _resolve_sign(invert, cc_maps, radius):
    sign, peak = _contrast_sign(cc_maps, radius)
    if invert == "auto":
        log.info("contrast: summed CC extreme %.4g near the initial track -> %s particles", peak,
                 "dark (inverted)" if sign < 0 else "bright")
        return sign
    forced = -1 if invert else 1
    if forced != sign:
        log.warning("invert=%s but the data suggest the opposite contrast (summed CC %.4g)",
                    invert, peak)
    return forced


def _particle_inputs(centres, predictions):
    """centres as (P, 2) float64 and predictions as an array, checked to be (P, n, n) with P > 0
    (MotionFitError without particles, ValueError on a shape mismatch)."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if not hasattr(predictions, "shape"):
        predictions = np.asarray(predictions)
    P = len(centres)
    if P == 0:
        raise MotionFitError("no particles in this micrograph")
    n = predictions.shape[-1]
    if predictions.ndim != 3:
        raise ValueError("predictions %s do not match %d particles" % (predictions.shape, P))
    if predictions.shape != (P, n, n):
        raise ValueError("predictions %s do not match %d particles" % (predictions.shape, P))
    return centres, predictions


def align_micrograph(frames, centres, predictions, damage, sigmas_px, initial_tracks=None,
                     window=8, mode="gp", invert="auto", opposite_predictions=None, backend=None,
                     global_window=None, cc_scale="likelihood", n_frames=None, defects=None,
                     noise_power=None, prior_mean="zero", max_ring=None, patch_size=None,
                     workers=1, spectra_store=None, fcc_box=None, late_defects=None,
                     sigma_search=None, sigma_rounds=1, cc_backing=None, max_dims=None):
    """Motion of the particles of one micrograph.

    frames: sequence/iterable of F gain-corrected, defect-filled (ny, nx) frames (read once);
    centres (P, 2) refined positions px; predictions (P, n, n) own-half predictions
    (:func:`polishplugin.core.predict.predict_particles`); damage (F, n, n) or None;
    sigmas_px: (sigma_vel, sigma_div, sigma_acc) from MotionParams.to_pixels; initial_tracks
    (P, F, 2) or None (global track estimated from the data in a ``global_window`` px radius,
    default n//4); window: CC window radius px (doubled, up to the patch, while tracks reach
    its edge; MotionFitError beyond); mode: "gp" | "none" | "global" (fit_tracks);
    invert: "auto" | True | False; opposite_predictions (P, n, n): FCC sums when given, on the
    rings of an ``fcc_box`` px box (the particle box, as RELION; default the patch n);
    n_frames: F when there are neither initial tracks nor damage filters to tell it; defects
    (ny, nx) bool: pixels to fill (see :func:`.patches.extract_patches`); cc_scale: see
    :mod:`.observation`; noise_power (nrings,): replaces the estimate from the patches.
    max_ring: highest Fourier ring (of the patch) the data term and the FCC sums use (default
    Nyquist); the spectra are kept only on the m x m grid that holds it
    (:func:`.observation.crop_size`), one rfft2 per particle-frame as the frames are read.
    patch_size: n when ``predictions`` (and ``damage``) are already cut to that grid;
    workers: threads of the transforms and of the per-particle kernels
    (:mod:`polishplugin.backends.threads`); spectra_store: a
    :class:`.spectra_store.SpectraStore` of (P, F, m) that receives the spectra (in memory with a
    reused buffer, or on scratch disk; default: a new in-memory one; the caller closes it).
    late_defects: callable, called once every frame has
    been read, returning None or (ys, xs, values): defects found only then (e.g. from the sum
    of the frames just read, so the movie is read once), filled in the patches' spectra
    (:func:`.patches.correct_defect_spectra`) before any use.
    sigma_search: a :class:`.evidence.SigmaSearch` to choose the sigmas from this micrograph's
    CC maps (``sigmas_px`` is then ignored; ``sigma_rounds`` expansions, see
    :func:`.evidence.choose_for_micrograph`).
    cc_backing: None (the CC maps in memory) or a callable (P, F, W) -> a backing that holds
    the whole (P, F, W, W) maps elsewhere, only their centres then kept in memory
    (:class:`.cc_store.CCStore`; tracks equal up to rounding).
    max_dims: GP basis dimensions at most (None: all; :func:`.prior.gp_basis`), in the pilot fit
    of the sigma search too.
    Raises MotionFitError without particles or with non-finite data.
    """
    centres, predictions = _particle_inputs(centres, predictions)
    P = predictions.shape[0]
    n = predictions.shape[-1] if patch_size is None else int(patch_size)
    m = crop_size(n, max_ring)
    if predictions.shape[-1] not in (n, m):
        raise ValueError("predictions of %d px for patches of %d px" % (predictions.shape[-1], n))
    predictions = crop_plane(predictions, m)
    if damage is not None:
        damage = crop_plane(damage, m)
    if opposite_predictions is not None:
        opposite_predictions = crop_plane(opposite_predictions, m)
    backend = particle_threads(get_backend(backend), workers)
    if initial_tracks is not None:
        F = np.shape(initial_tracks)[1]
    elif damage is not None:
        F = np.shape(damage)[0]
    elif n_frames is not None:
        F = int(n_frames)
    else:
        raise ValueError("the number of frames is unknown: give initial_tracks, damage or n_frames")
    if invert not in ("auto", True, False):
        raise ValueError("invert must be 'auto', True or False, got %r" % (invert,))

    if initial_tracks is None:
        gw = n // 4 if global_window is None else int(global_window)
        zeros = np.zeros((P, F, 2))
        fills = np.zeros(F)
        big, big_cut = extract_patches(frames, centres, zeros, n + 2 * gw, defects, fills=fills)
        big_q = cut_positions(centres, zeros)
        late = late_defects() if late_defects is not None else None
        if late is not None:
            fill_patch_defects(big, big_q, late[0], late[1], fills)
        _check_patches(big)
        patches0, _ = _crop(big, big_q, big_q, n)
        spectra0 = crop_spectra(backend.patch_spectra(patches0), m)
        del patches0
        noise0 = noise_power if noise_power is not None else noise_power_from_spectra(spectra0)
        cc_wide = cc_maps_from_spectra(spectra0, predictions, damage, gw, noise0, cc_scale,
                                       backend=backend, n=n, max_ring=max_ring)
        del spectra0
        sign = _resolve_sign(invert, cc_wide, gw)
        glob = global_track_from_cc(sign * cc_wide)
        init = glob[None] + big_cut
        log.info("global track from the data: path %.2f px", float(
            np.sum(np.linalg.norm(np.diff(glob, axis=0), axis=1))))
        patches, q = _crop(big, big_q, cut_positions(centres, init), n)
        del big
        cut = q - centres[:, None, :]
        spectra = crop_spectra(backend.patch_spectra(patches), m)
        del patches
    else:
        init = np.asarray(initial_tracks, dtype=np.float64)
        if init.shape != (P, F, 2):
            raise ValueError("initial tracks %s do not match (%d, %d, 2)" % (init.shape, P, F))
        if not np.all(np.isfinite(init)):
            raise MotionFitError("initial tracks contain NaN or infinite values")
        spectra, cut = read_spectra(frames, centres, init, n, m, defects, workers,
                                    spectra_store, late_defects)
        sign = None
    power = ring_power(spectra, backend)
    noise = noise_power_from_spectra(spectra, power) if noise_power is None \
        else np.asarray(noise_power)

    def cc_maps(radius):
        backing = None if cc_backing is None else cc_backing(P, F, 2 * radius + 1)
        return cc_maps_from_spectra(spectra, predictions, damage, radius, noise, cc_scale,
                                    backend=backend, n=n, max_ring=max_ring,
                                    out=CCStore(P, F, radius, backing))
    cc = cc_maps(window)
    near = min(3, window)
    if sign is None:
        sign = _resolve_sign(invert, cc.centre(near), near)
    auto = _auto_cc(predictions, damage, noise, cc_scale, max_ring, n)
    amp = _amplitude(cc.centre(near), auto, near, sign)
    if not np.isfinite(amp) or amp <= 0:
        cc.close()
        raise MotionFitError("no particle signal found in the CC maps (amplitude %g)" % amp)
    log.info("signal amplitude %.4g x the predictions (sign %+d)", amp, sign)
    cc.scale(sign * amp)        # what the fit uses (in place: no second set of maps)
    choice = None
    if sigma_search is not None and mode == "gp":
        from .evidence import choose_for_micrograph, peak_curvature
        curv = peak_curvature(predictions, damage, noise, amp, cc_scale, max_ring, n)
        try:
            choice = choose_for_micrograph(cc, centres, init, cut, curv,
                                           sigma_search, backend, prior_mean, sigma_rounds,
                                           max_dims=max_dims)
        except (ValueError, MotionFitError) as exc:    # e.g. a particle without signal
            log.warning("sigmas could not be chosen from the data (%s): the search's start "
                        "%s px/frame is used", exc, tuple(sigma_search.start))
            sigmas_px = tuple(sigma_search.start)
        else:
            sigmas_px = choice.sigmas_px
            log.info("sigmas chosen from the data (px/frame): %.4g / %.4g / %.4g, spread x%s",
                     *(sigmas_px + ("/".join("%.2g" % v for v in choice.spread()),)))
    radius = window
    while True:
        try:
            fit = fit_tracks(cc, centres, sigmas_px, init, cut, mode=mode,
                             backend=backend, prior_mean=prior_mean, max_dims=max_dims)
        finally:
            if cc.backing is not None:
                log.info("CC maps: %d of %d particle-frames read beyond the %d px kept in "
                         "memory", cc.backing_reads, P * F, cc.core_radius)
            cc.close()
        n_out = outside_window(fit.tracks - cut, radius)
        if not n_out:
            break
        wider = min(2 * radius, (n - 1) // 2)
        if wider <= radius:
            raise MotionFitError(
                "%d particle-frame positions left the CC search window (radius %d px, the most a "
                "%d px patch allows): the motion is larger than the patches hold; start from "
                "initial tracks closer to it (a global alignment)" % (n_out, radius, n))
        log.warning("%d particle-frame positions reached the edge of the %d px CC search window; "
                    "refitting in a %d px window", n_out, radius, wider)
        radius = wider
        del cc                  # before its wider replacement is made
        cc = cc_maps(radius)
        cc.scale(sign * amp)
    result = MicrographAlignment(fit.tracks, init, fit, noise, sign, amp, cut,
                                 sigma_choice=choice)
    if opposite_predictions is not None:
        result.fcc = fcc_from_spectra(spectra, opposite_predictions, fit.tracks - cut, power,
                                      backend, n, max_ring, fcc_box, sign=sign)
    return result


def read_spectra(frames, centres, tracks, n, m=None, defects=None, workers=1, store=None,
                 late_defects=None):
    """The one read of a movie for the motion programs (polish, train): the patch spectra of
    :func:`.patches.extract_spectra` (non-finite patches: MotionFitError), then the defects
    that ``late_defects()`` (None or (ys, xs, values), called once every frame has been read)
    reports filled in the spectra (:func:`.patches.correct_defect_spectra`). ``store``: a
    :class:`.spectra_store.SpectraStore` that receives the spectra (default: in memory). Returns
    (spectra (P, F, m, m//2+1) complex64 store, cut shifts (P, F, 2))."""
    fills = np.zeros(np.shape(tracks)[1])
    spectra, cut = extract_spectra(frames, centres, tracks, n, m, defects, workers,
                                   check=_check_patches, fills=fills, store=store)
    late = late_defects() if late_defects is not None else None
    if late is not None:
        centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
        k = correct_defect_spectra(spectra, np.rint(centres[:, None, :] + cut).astype(np.int64),
                                   n, late[0], late[1], late[2], fills)
        log.info("%d defect pixels found after reading: %d particle-frame spectra corrected",
                 len(late[0]), k)
    return spectra, cut


def crop_spectra(spectra, m):
    """rfft2 half-planes (P, F, n, n//2+1) cut to the frequencies of an m x m grid."""
    n = spectra.shape[2]
    if m == n:
        return spectra
    return np.ascontiguousarray(spectra[..., crop_rows(n, m), :][..., :m // 2 + 1])


def outside_window(shifts, radius):
    """Number of shifts (..., 2) where the bicubic CC read (4 x 4 samples around the point, see
    :mod:`polishplugin.backends.numpy_backend`) would leave a window of ``radius`` and wrap to its
    opposite edge: the safe range is -(radius - 1) <= s < radius - 1 on both axes."""
    s = np.asarray(shifts)
    bad = (s < -(radius - 1)) | (s >= radius - 1)
    return int(np.count_nonzero(bad.any(axis=-1)))


def _check_patches(patches):
    """MotionFitError when any patch pixel is NaN or infinite. One float64 sum instead of an
    isfinite mask of the whole stack (hundreds of MB to allocate and first-touch): a NaN or an
    infinity anywhere makes the sum non-finite, and finite float32 pixels cannot overflow it."""
    if not np.isfinite(np.sum(patches, dtype=np.float64)):
        raise MotionFitError("frames contain NaN or infinite values under the particles")


def fcc_sums(patches, predictions, shifts, backend=None):
    """FCC sums (eq. 20) of patches (P, F, n, n) against predictions (P, n, n) (fft2 of real
    images) moved to ``shifts`` (P, F, 2); see :func:`fcc_from_spectra`."""
    be = get_backend(backend)
    return fcc_from_spectra(be.patch_spectra(np.asarray(patches)), predictions, shifts,
                            backend=be)


def fcc_from_spectra(spectra, predictions, shifts, power=None, backend=None, n=None,
                     max_ring=None, box=None, sign=1):
    """FCC sums (eq. 20) from the patches' rfft2 half-planes (P, F, m, mh) against predictions
    (P, n, n) or (P, m, m) (fft2 of real images, so Hermitian) moved to ``shifts`` (P, F, 2).
    ``n``: the patch size when the spectra are cut to an m x m grid
    (:func:`.patches.extract_spectra`); rings beyond ``max_ring`` (default Nyquist) stay zero.

    ``box`` (default n): the sums are binned on the rings of a box x box grid, ring j holding
    the patch frequencies |k| in [j - 1/2, j + 1/2) / (box px), box//2 + 1 rings: with the
    particle box, RELION's rings (its ``_FCC_*`` files are sh = box/2 + 1 rings of the particle
    box; its fit takes rings int(box px / res)). Only the rings wholly inside ``max_ring`` of
    the patch are summed.

    The full-plane sums of :class:`FccAccumulator` are taken on the half-plane with Hermitian
    multiplicities; the shift phase exp(-2 pi i (kx sx + ky sy)) factorises over ky and kx (kx of
    the even-n Nyquist column at -1/2, as on the fft2 grid; on the even-n Nyquist row ky = -1/2
    for both k and its partner, so the pair sums to 2 Re(X V* e^{2 pi i kx sx}) cos(pi sy));
    |V_s|^2 = |V|^2 does not depend on the shift; ``power`` (F, nrings):
    :func:`.observation.ring_power` of the spectra if known (used when ``box`` is n).
    The sum over particles is the backend's ``fcc_pixel_sums``, a block of particles at a time
    (``spectra``: an array or a :class:`.spectra_store.SpectraStore`; ``predictions``: an array
    or anything whose particle slices are arrays). ``sign`` (+-1): the predictions' contrast
    (the numerator changes sign, exactly).
    """
    P, F, m = spectra.shape[:3]
    n = m if n is None else n
    box = n if box is None else int(box)
    mh = m // 2 + 1
    acc = FccAccumulator(F, box)
    nr = acc.nrings
    _, mult = rfft_rings(m)
    idx_m = (np.arange(m) + m // 2) % m - m // 2       # integer frequency index on the n grid
    # floor(x + 1/2): a frequency half-way between two rings of the box (on the finer patch
    # grid, e.g. index 7 of 2 box) goes to the upper one, ring j = [j - 1/2, j + 1/2)
    rings = np.floor(np.hypot(idx_m[:, None], idx_m[None, :mh]) * box / n + 0.5).astype(
        np.int64)
    # rings wholly inside the patch's ring max_ring (frequencies below max_ring + 1/2 of n)
    top = min(int(np.floor((max_ring_of(n, max_ring) + 0.5) * box / n - 0.5)), box // 2)
    keep = rings <= top
    rk, mk = rings[keep], mult[keep]
    cdt = spectra.dtype
    k = np.fft.fftfreq(m) * m / n                      # cycles per pixel of the n grid
    ky, kx = k, k[:mh]
    shifts = np.asarray(shifts, dtype=np.float64)
    predictions = crop_plane(predictions, m)
    idx = (np.arange(F)[:, None] * nr + rk[None]).ravel()
    be = get_backend(backend)
    need_power = power is None or box != n
    num, pw, wpred = 0.0, 0.0, 0.0
    if need_power and getattr(spectra, "power_sums", None) is not None:
        pw, need_power = spectra.power_sums, False        # a store's, no pass over the spectra
        box_power = True
    else:
        box_power = need_power
    for s, x in spectra_chunks(spectra):
        v = crop_plane(predictions[s], m)[:, :, :mh]
        wpred = wpred + (v.real ** 2 + v.imag ** 2).sum(axis=0)
        # X conj(V e^{-2 pi i k.s}) = X conj(V) e^{+2 pi i ky sy} e^{+2 pi i kx sx}
        ey = np.exp(2j * np.pi * shifts[s, :, 1, None] * ky).astype(cdt)      # (b, F, m)
        if m == n and n % 2 == 0:
            ey[..., n // 2] = ey[..., n // 2].real
        ex = np.exp(2j * np.pi * shifts[s, :, 0, None] * kx).astype(cdt)      # (b, F, mh)
        num = num + be.fcc_pixel_sums(x, v, ey, ex)
        if need_power:
            pw = pw + be.power_sums(x)
        del v, ey, ex
    wpred = wpred[keep]
    num = (num if sign > 0 else -num)[:, keep]
    acc.num += np.bincount(idx, (num * mk).ravel(), minlength=F * nr).reshape(F, nr)
    acc.wpred += np.bincount(rk, wpred * mk, minlength=nr)[None]
    if box_power:
        pw = pw[:, keep] * mk
        acc.wobs += np.bincount(idx, pw.ravel(), minlength=F * nr).reshape(F, nr)
    else:
        acc.wobs[:, :top + 1] += power[:, :top + 1]
    return acc


INITS = ("global", "none", "zero", "truth")


def polish_simulated_micrograph(dataset, mic, sigmas=None, mode="gp", init="global", window=8,
                                defects="detect", noiseless=False, n=None, invert="auto",
                                fcc=False, backend=None, cc_scale="likelihood", noise_level=1.0,
                                prior_mean="zero", sigma_search=None, sigma_rounds=1):
    """Align a :class:`~polishplugin.core.simulate.dataset.SimulatedMicrograph` end to end (for
    tests and benchmarks): frames raw * gain (or the expected counts when ``noiseless``), defects
    "detect" (from the movie, no truth) | "truth" | None, predictions of each particle's own half
    map at its true angles and CTF in an n box (default the dataset box), exposure-filter damage
    from the config, FCC sums (``fcc``) on the rings of the dataset box; noiseless frames are
    whitened with ``noise_level`` times their Poisson noise power (white), not with their own
    (signal-only) power. sigmas: None (the simulation's) or
    (sigma_vel, sigma_div, sigma_acc) in the paper's units. init: "global" (the simulated earlier
    global track), "none" (estimated from
    the data), "zero", "truth" (true positions - centre)."""
    from ..ctf import CtfParams
    from ..defects import detect_defects
    from ..predict import make_projectors, predict_particles
    from .patches import damage_filters
    from .units import MotionParams

    c = dataset.config
    F, px = mic.positions.shape[1], c.pixel_size
    if n is None:
        from .patches import patch_size
        n = patch_size(c.box, px, float(np.max(np.maximum(mic.defocus_u, mic.defocus_v))),
                       c.half_map_resolution, c.voltage)
    params = dataset.motion_params if sigmas is None else MotionParams(*sigmas)
    sig_px = params.to_pixels(c.dose_per_frame, px)
    if noiseless and mic.expected is None:
        raise ValueError("noiseless needs micrograph(i, keep_expected=True)")
    gain = mic.gain
    noise = None
    if noiseless:
        frames = (mic.expected[f] for f in range(F))
        mask = None
        # Poisson variance of counts with this mean, white: S = n^2 <lambda> (the ring power of
        # noiseless frames holds no noise, and whitening by it would weight empty rings)
        noise = np.full(n // 2 + 2, noise_level * n * n * float(mic.expected.mean()))
    else:
        frames = (mic.frames[f] * gain if gain is not None else mic.frames[f] for f in range(F))
        if defects == "detect":
            mask = detect_defects(mic.frames.sum(axis=0, dtype=np.float64), F, gain)
        elif defects == "truth":
            mask = mic.defect_mask.copy()
            if len(mic.hot_pixels):
                mask[mic.hot_pixels[:, 1], mic.hot_pixels[:, 0]] = True
        elif defects is None:
            mask = None if gain is None else gain == 0
        else:
            raise ValueError("defects must be 'detect', 'truth' or None, got %r" % (defects,))
    centres = mic.centres
    if init not in INITS:
        raise ValueError("init must be one of %s, got %r" % (INITS, init))
    initial = {"global": lambda: np.repeat(mic.global_track[None], len(centres), axis=0),
               "none": lambda: None,
               "zero": lambda: np.zeros((len(centres), F, 2)),
               "truth": lambda: mic.positions - centres[:, None, :]}[init]()
    projectors = make_projectors(dataset.half1, dataset.half2, dataset.mask, c.projector_pad,
                                 backend)
    ctfs = [CtfParams(u, v, a, c.voltage, c.cs, c.amplitude_contrast)
            for u, v, a in zip(mic.defocus_u, mic.defocus_v, mic.defocus_angle)]
    preds = predict_particles(projectors, mic.angles, mic.half_set, ctfs, n, px)
    opp = predict_particles(projectors, mic.angles, mic.half_set, ctfs, n, px, opposite=True) \
        if fcc else None
    damage = damage_filters(n, px, F, c.dose_per_frame, c.pre_exposure, c.voltage)
    return align_micrograph(frames, centres, preds, damage, sig_px, initial, window=window,
                            mode=mode, invert=invert, opposite_predictions=opp, backend=backend,
                            cc_scale=cc_scale, defects=mask, noise_power=noise,
                            prior_mean=prior_mean, fcc_box=c.box, sigma_search=sigma_search,
                            sigma_rounds=sigma_rounds)
