"""Gold-standard 3D auto-refinement (Scheres & Chen 2012; Kimanius et al. 2021, eq. 5-17): two
independent half-sets, each refined against its own reference; per iteration

1. E-step (eq. 5, 8) at the current image size: images and references Fourier-cropped to what the
   resolution needs; poses from :mod:`.sampling` (a global HEALPix grid, then local searches
   around each particle's previous pose); translations around the previous offset. The first
   iteration scores by normalised cross-correlation and assigns the best pose (RELION's
   --firstiter_cc: the starting map's grey scale is unknown); later iterations marginalise over
   the poses (log-sum-exp), keeping the most probable poses that hold 99.9 % of each image's
   posterior mass, however many (RELION's significant poses; a cap of 100 sharpened the broad
   posteriors of low SNR and cost resolution, BENCHMARKS.md); a global search scores the whole
   grid, then rescores the orientations of the most probable poses (at most MAX_COARSE) on
   their children of the next order (:func:`.sampling.finer_orientations`, RELION's adaptive
   oversampling by one) and takes the posterior over the children;
2. M-step: B and K (eq. 9) back-projected with the posterior weights, the CTF and sigma^-2 (one
   slice per orientation, its translations' shifted images summed with their weights); the
   gold-standard FSC of the two halves' unregularised maps B / K; tau^2 from it (eq. 12); the
   update (eq. 11 Tikhonov, or eq. 17 RED with lambda fixed or from the resolution, CW-RED);
3. noise: sigma^2 per ring = mean over particles and the ring's pixels of the posterior mean
   residual sum_g w_g |y - c P_g x|^2 against the E-step's reference (RELION's M-step; the first,
   cross-correlation iteration: the best pose's residual under the new maps). The residual at
   the best pose under the new maps, used before, gave the same band FSC within the run-to-run
   spread over 14 runs and cost a second projection of every particle (BENCHMARKS.md);
   offsets: RELION's Gaussian prior on each image's offset o from the image centre,
   log p(o) = -|o|^2 / (2 sigma_o^2) (A), added to the log-likelihood from the second iteration
   on; sigma_o^2 = sum over images and poses of w |o|^2 / (2 N) (RELION's M-step; the first,
   cross-correlation iteration's best poses count with weight 1), w the whole posterior;
   ``sigma_offset`` 0: uniform;
4. sampling: the HEALPix order goes up when the resolution stalls or the step is coarser than
   one resolution element at the particle radius (:func:`.sampling.next_order`), except that
   the step from global to local searches waits while the global search still moves particles:
   "jumps" (best orientation moved further than the first local search reaches, local_steps x
   its step) fewer than SETTLED x the fewest so far at this order and more than FEW_JUMPS of the
   particles (RELION's auto-refine likewise waits for the changes of the poses to settle; local
   searches cannot leave a wrong, e.g. pseudo-symmetric, pose); the new reference's expected
   angular accuracy (RELION's test, :mod:`.accuracy`) is reported every iteration; beyond
   ``free_order`` (4, 3.75 deg) up to ``max_order`` (6) the order goes up only while the step
   the E-step scores at is at least 0.75 x that accuracy (RELION's rule); ``accuracy_stop``
   applies such a rule, with its own factor, to every order (off by default: at box 64 and
   SNR 0.02 it stopped runs at order 2 that gained from orders 3-4; at box 96 / 1.5 A a cap at
   order 4 cost 14 % of the band FSC, BENCHMARKS.md); the offset step halves with it;
   converged when the resolution has not improved for 2 iterations and the order no longer needs to
   go up. Once converged, one last pass at the full image size (RELION's
   final iteration uses all data to Nyquist too); its map joins both halves' B and K (tau^2
   from RELION's FSC of the joined set, :func:`.mstep.joined_fsc`). A run stopped by max_iter
   ends at the size it had.

The work may be split over processes (``split``, :class:`Serial` is the one-process default;
programs/parallel.py has the MPI one): each takes a share of the half-sets' particles for the
E-step and the noise; B, K, the noise sums and the poses are summed over the processes; one
process per half-set does that half's update (denoiser included) and shares the map.

Fourier transforms are numpy's (unnormalised) centred ones
(:func:`~polishplugin.core.reconstruct.centered_fft`); sigma^2 is E|noise|^2 per Fourier pixel,
and the log-likelihood -sum |r|^2 / (2 sigma^2) over the full grid counts each Friedel pair once.
"""
import json
import time
from dataclasses import dataclass, field, asdict

import numpy as np

from ..fourier import fsc as fsc_curve
from ..fourier import ring_average, ring_index, shift_phase
from ..geometry import euler_to_matrix
from ..projector import Projector
from ..reconstruct import Backprojector, centered_fft
from ..simulate.volumes import lowpass
from .accuracy import (FINE_ENOUGH, expected_accuracy, fine_enough, trial_particles,
                       turned_angle)
from .confidence import cw_red_lambda, nominal_resolution, shell_confidence, weights_shells
from .estep import centred_projections, log_likelihoods, pose_posteriors
from .mstep import joined_fsc, tau2_from_fsc
from .relion_grid import half_to_map
from .sampling import (angular_distance, angular_step, finer_orientations, local_orientations,
                       next_order, orientation_grid, translation_grid)
from .update import completed_sums, regularised_map


MODES = ("tikhonov", "red", "cw-red")
MASS = 0.999            # posterior mass kept per image (significant poses)
MAX_COARSE = 100        # oversampling: at most this many coarse poses rescored per image
IMPROVE = 0.01          # a resolution better by this fraction counts as progress
STALL_CONVERGED = 2     # iterations without progress at the final sampling
SETTLED = 0.9           # global searches end when the jumps are no fewer than this x the fewest
FEW_JUMPS = 0.02        # ... or when at most this fraction of the particles jumps


@dataclass
class Settings:
    """What defines a refinement (all but ``denoiser`` go into the settings record)."""
    mode: str = "tikhonov"
    denoiser: object = None          # callable volume -> volume (red / cw-red)
    lam: float = 1.0                 # lambda of mode red
    cw_low: float = 10.0
    cw_high: float = 4.5
    cw_shells: str = "none"          # red / cw-red: prior mean weighted per shell by the FSC
    #                                  in every update ("all") or in the final map only ("final")
    pad: int = 2
    tau2_fudge: float = 1.0
    ini_high: float = 30.0           # A: low-pass of the starting map
    particle_diameter: float = 0.0   # A; 0: 0.8 of the box
    healpix_order: int = 1           # first (global) order
    local_order: int = 3             # from this order on: local searches
    max_order: int = 6               # 0.94 deg
    free_order: int = 4              # finer orders only while the searched step is at least
    #                                  FINE_ENOUGH (0.75) x the expected accuracy
    local_steps: float = 2.0         # local search half-width in angular steps
    accuracy_stop: float = 0.0       # no finer order once the searched step is below this x
    #                                  the expected angular accuracy (RELION: 0.75; 0: off)
    oversample: bool = True          # global searches: significant orientations rescored at
    #                                  the next order (RELION's adaptive oversampling by one)
    offset_range: float = 3.0        # px
    offset_step: float = 1.0         # px
    sigma_offset: float = 10.0       # A: first sigma of the Gaussian offset prior (0: uniform)
    size_margin: int = 5             # shells beyond the resolution kept in the current size
    max_iter: int = 25
    batch: int = 16

    def record(self):
        d = asdict(self)
        d.pop("denoiser")
        if not d["accuracy_stop"]:      # absent when off, as in records made before it existed
            d.pop("accuracy_stop")
        return d


@dataclass
class Particles:
    """The data: images (N, n, n), CTFs (N, n, n) on the fft2 grid or None, half-sets (N,) of 1/2."""
    images: np.ndarray
    ctfs: object
    half_sets: np.ndarray
    pixel_size: float

    @property
    def n(self):
        return self.images.shape[-1]


@dataclass
class State:
    """Everything the next iteration needs (saved after every iteration; a rerun resumes)."""
    iteration: int
    refs: np.ndarray                 # (2, n, n, n) the halves' current references
    angles: np.ndarray               # (N, 3) radians
    shifts: np.ndarray               # (N, 2) px: particle centre - image centre
    maxprob: np.ndarray              # (N,)
    sigma2: np.ndarray               # (n//2 + 1,) E|noise|^2 per ring
    order: int
    offset_range: float
    offset_step: float
    current_size: int
    stall: int = 0
    best_resolution: float = np.inf
    fewest_jumps: float = np.inf     # fewest jumps (module text, 4) at this order so far
    sigma2_offset: float = None      # A^2: the offset prior's variance (None: sigma_offset^2)
    fsc: np.ndarray = None
    finished: bool = False
    final_pass: bool = False         # converged: this iteration runs at the full size, then ends
    final_map: np.ndarray = None
    red_maps: np.ndarray = None      # (2, 2, n, n, n): per half x~ = B / K and f(x~) (eq. 17)
    unregularised: np.ndarray = None  # (2, n, n, n): the last iteration's halves B / K, no
    #                                   prior applied, grey scale of refs (finished only; the
    #                                   FSC's and masked FSC's input, half<h>_unregularised.mrc)
    history: list = field(default_factory=list)

    def save(self, path_or_file):
        arrays = {k: v for k, v in asdict(self).items()
                  if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in asdict(self).items()
                   if not isinstance(v, np.ndarray) and k != "history" and v is not None}
        np.savez(path_or_file, meta=json.dumps({"scalars": scalars, "history": self.history}),
                 **arrays)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(history=meta["history"], **meta["scalars"], **arrays)


class Serial:
    """One process does all the work: the interface of a work split (see the module text)."""

    def mine(self, idx, half):
        """This process's share of the particles ``idx`` of half-set ``half``."""
        return idx

    def sum(self, array):
        """Element-wise sum of ``array`` over the processes (the same result on every one)."""
        return array

    def owns(self, half):
        """Whether this process makes half-set ``half``'s map update."""
        return True

    def share(self, value, half):
        """``value`` of the process that owns half-set ``half``, on every process."""
        return value


SERIAL = Serial()


# ------------------------------------------------------------------------------- helpers
def crop_index(n, m):
    """Indices of the fft layout of an n box that hold the frequencies of an m box."""
    return np.r_[0:(m + 1) // 2, n - m // 2:n]


def crop2(arr, n, m):
    """Fourier crop of (..., n, n) fft-layout arrays to (..., m, m) (same values)."""
    idx = crop_index(n, m)
    return arr[..., idx, :][..., idx]


def fourier_crop_volume(vol, m):
    """Volume (m^3, centre m//2) whose centred transform holds the same values as ``vol``'s at
    the m^3 lowest frequencies (so its projections are the Fourier crops of ``vol``'s)."""
    n = vol.shape[0]
    if m == n:
        return np.asarray(vol, np.float64)
    idx = crop_index(n, m)
    f = np.fft.fftn(np.fft.ifftshift(vol))[np.ix_(idx, idx, idx)]
    return np.fft.fftshift(np.fft.ifftn(f).real)


def sphere_mask(n, radius, edge=3.0):
    """Soft spherical mask (1 inside ``radius`` px, raised cosine over ``edge`` px)."""
    c = np.arange(n) - n // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    return np.where(r < radius, 1.0, np.where(r > radius + edge, 0.0,
                    0.5 + 0.5 * np.cos(np.pi * (r - radius) / edge)))


def image_size_for(resolution_A, n, pixel_size, margin):
    """Even image size that holds the shells up to ``resolution_A`` plus ``margin`` shells."""
    shell = n * pixel_size / resolution_A
    return int(min(n, 2 * int(np.ceil(shell + margin))))


def inverse_sigma2(sigma2, n, m):
    """sigma^-2 / 2 on the (n, n) fft grid for rings 1 .. m/2 - 1 (0 elsewhere: DC, beyond)."""
    rings = ring_index(n)
    use = (rings >= 1) & (rings < m // 2)
    s = np.asarray(sigma2, np.float64)[np.minimum(rings, len(sigma2) - 1)]
    return np.where(use & (s > 0), 0.5 / np.where(s > 0, s, 1.0), 0.0)


def initial_sigma2(images):
    """RELION's starting noise spectrum: mean power of the images minus the power of their mean,
    per ring (numpy's unnormalised transform)."""
    n = images.shape[-1]
    rings = ring_index(n)
    power = np.zeros(n // 2 + 1)
    mean = np.zeros((n, n), np.complex128)
    for i0 in range(0, len(images), 256):
        f = np.fft.fft2(images[i0:i0 + 256].astype(np.float64))
        power += ring_average((np.abs(f) ** 2).sum(axis=0), rings, n // 2 + 1)
        mean += f.sum(axis=0)
    mean /= len(images)
    return power / len(images) - ring_average(np.abs(mean) ** 2, rings, n // 2 + 1)


def significant(weights, mass=MASS, max_poses=None):
    """Keep, per image (rows of (N, P)), the most probable poses that hold ``mass`` of the
    posterior (at most ``max_poses`` when given), renormalised."""
    w = np.asarray(weights, np.float64)
    order = np.argsort(-w, axis=1)
    sw = np.take_along_axis(w, order, axis=1)
    keep_sorted = np.cumsum(sw, axis=1) - sw < mass * sw.sum(axis=1, keepdims=True)
    if max_poses is not None:
        keep_sorted[:, max_poses:] = False
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    out = np.where(keep, w, 0.0)
    return out / out.sum(axis=1, keepdims=True)


def cross_correlations(images_fft, ctfs, projections, translations, inv_sigma2):
    """(N, O, T) normalised cross-correlation Re sum s y* c P e_t / sqrt(sum s c^2 |P|^2) (the
    first iteration's score: independent of the reference's grey scale)."""
    y = np.asarray(images_fft)
    n = y.shape[-1]
    s = np.broadcast_to(np.asarray(inv_sigma2, np.float64), y.shape)
    c = np.ones(y.shape) if ctfs is None else np.asarray(ctfs, np.float64)
    e = shift_phase(n, n, translations[:, 0], translations[:, 1])
    cross = np.einsum("nij,oij,tij->not", np.conj(y) * s * c, projections, e, optimize=True).real
    pp = np.einsum("nij,oij->no", s * c * c, np.abs(projections) ** 2)
    return cross / np.sqrt(np.maximum(pp, 1e-300))[:, :, None]


# ------------------------------------------------------------------------------- the loop
def initial_state(particles, reference, settings, angles=None, shifts=None):
    """Iteration 0: both halves start from ``reference`` low-passed at ``ini_high``."""
    n, px = particles.n, particles.pixel_size
    start = lowpass(np.asarray(reference, np.float64), settings.ini_high, px)
    count = len(particles.images)
    return State(
        iteration=0, refs=np.stack([start, start]).astype(np.float32),
        angles=np.zeros((count, 3)) if angles is None else np.asarray(angles, float),
        shifts=np.zeros((count, 2)) if shifts is None else np.asarray(shifts, float),
        maxprob=np.zeros(count), sigma2=initial_sigma2(particles.images),
        order=settings.healpix_order, offset_range=settings.offset_range,
        offset_step=settings.offset_step, sigma2_offset=settings.sigma_offset ** 2,
        current_size=image_size_for(settings.ini_high, n, px, settings.size_margin))


def _particle_radius_px(settings, n, px):
    d = settings.particle_diameter if settings.particle_diameter > 0 else 0.8 * n * px
    return min(0.5 * d / px, n / 2.0 - 1)


def estep_half(ref, idx, particles, state, settings, inv_s2, first, bp, offsets2=None,
               noise=None):
    """E-step over the particles ``idx`` of one half against ``ref`` (masked); adds them to
    ``bp``, to ``offsets2`` ((1,) array) their sum of w |offset|^2 (A^2) over the poses and,
    to ``noise`` ((n//2 + 1,) array), their sum of the posterior mean residual power
    sum_g w_g |y - c P_g x|^2 against ``ref``, averaged over each ring's scored pixels
    (RELION's M-step for sigma^2; rings not scored get 0).
    Returns (angles, shifts, maxprob) at the best pose of each."""
    n, m = particles.n, state.current_size
    proj = Projector(fourier_crop_volume(ref, m), pad=settings.pad)
    trans = translation_grid(state.offset_range, state.offset_step)
    trans_m = trans * (m / n)
    prior = not first and settings.sigma_offset > 0    # Gaussian offset prior (module text)
    s2o = max(settings.sigma_offset ** 2 if state.sigma2_offset is None else
              state.sigma2_offset, 1e-4)                # RELION: below 1e-4 A^2 a delta
    px2 = particles.pixel_size ** 2
    s_m = crop2(inv_s2, n, m)
    local = state.order >= settings.local_order and not first
    grid = None if local else orientation_grid(state.order)
    grid_p = None if local else centred_projections(proj, grid)
    angles, shifts = state.angles[idx].copy(), state.shifts[idx].copy()
    maxprob = np.zeros(len(idx))
    # eq. 9 on the back-projector's pixels only: w c y e_t / sigma^2 and w c^2 / sigma^2, with
    # the shift ramp e_t computed once per distinct translation of a particle's poses
    pix = bp.pixels
    fy, fx = (np.fft.fftfreq(n)[k] for k in np.divmod(pix, n))
    s_pix = inv_s2.reshape(-1)[pix]
    scored = s_pix > 0
    rings_pix = ring_index(n).reshape(-1)[pix[scored]]
    ring_pixels = np.maximum(np.bincount(rings_pix, minlength=n // 2 + 1), 1)
    # the scored back-projector pixels on the m-grid of the E-step's projections (crop2's layout)
    on_m = np.full((n, n), -1)
    on_m[np.ix_(crop_index(n, m), crop_index(n, m))] = np.arange(m * m).reshape(m, m)
    m_pix = on_m.reshape(-1)[pix[scored]]
    pending = []

    def flush():
        if pending:
            vals, wts, rots = (np.concatenate(x) for x in zip(*pending))
            bp.add(vals, wts, rots)
            pending.clear()

    for b0 in range(0, len(idx), settings.batch):
        sel = idx[b0:b0 + settings.batch]
        y = centered_fft(particles.images[sel].astype(np.float64))
        c = None if particles.ctfs is None else np.asarray(particles.ctfs[sel], np.float64)
        prev = state.shifts[sel]
        yc = crop2(y, n, m) * shift_phase(m, m, -prev[:, 0] * m / n, -prev[:, 1] * m / n)
        cc = None if c is None else crop2(c, n, m)
        y_pix = y.reshape(len(sel), -1)[:, pix]
        c_pix = 1.0 if c is None else c.reshape(len(sel), -1)[:, pix]
        data_pix = c_pix * s_pix * y_pix
        weight_pix = np.broadcast_to(c_pix * c_pix * s_pix, y_pix.shape)
        for j, i in enumerate(sel):
            cj = None if cc is None else cc[j:j + 1]
            # the Gaussian offset prior's log over the translations (0: uniform)
            lp = -((prev[j] + trans) ** 2).sum(1) * px2 / (2 * s2o) if prior else 0.0
            if local:
                oris = local_orientations(state.order, state.angles[i], settings.local_steps)
                p = centred_projections(proj, oris)
                score = log_likelihoods(yc[j:j + 1], cj, p, trans_m, s_m)
            else:
                oris, p = grid, grid_p
                if j == 0:   # batch scores over the shared grid
                    batch_scores = (cross_correlations if first else log_likelihoods)(
                        yc, cc, grid_p, trans_m, s_m)
                score = batch_scores[j:j + 1]
                if settings.oversample and not first:
                    keep = significant(pose_posteriors((score + lp).reshape(1, -1))[0],
                                       max_poses=MAX_COARSE)[0]
                    coarse = np.unique(np.flatnonzero(keep) // len(trans))
                    oris = finer_orientations(state.order, coarse)
                    p = centred_projections(proj, oris)
                    score = log_likelihoods(yc[j:j + 1], cj, p, trans_m, s_m)
            if prior:
                score = score + lp
            flat = score.reshape(1, -1)
            if first:
                w = full = np.zeros_like(flat)
                w[0, flat.argmax()] = 1.0
            else:
                full, _ = pose_posteriors(flat)
                w = significant(full)
            best = int(w.argmax())
            o_best, t_best = divmod(best, len(trans))
            k = b0 + j
            angles[k] = oris[o_best]
            shifts[k] = prev[j] + trans[t_best]
            maxprob[k] = w[0, best]
            if offsets2 is not None:
                offsets2 += (full[0].reshape(-1, len(trans)).sum(0)
                             @ ((prev[j] + trans) ** 2).sum(1)) * px2
            # one slice per orientation: its translations' shifted images summed with their
            # weights (the CTF^2 / sigma^2 weight does not depend on the translation)
            wot = w[0].reshape(-1, len(trans))
            o_used = np.flatnonzero(wot.any(axis=1))
            t_used = np.flatnonzero(wot.any(axis=0))
            total = prev[j] + trans[t_used]
            phase = 2 * np.pi * (total[:, :1] * fx + total[:, 1:] * fy)
            d = data_pix[j]
            # the shifted data e_t c y / sigma^2 in real arithmetic, summed over translations
            # element by element: with numpy's complex products (or a matrix product, or
            # einsum) two identical calls gave sums differing in the last bit (vector and
            # scalar paths round differently), and reruns must reproduce maps value for value
            cos, sin = np.cos(phase), np.sin(phase)
            shifted_re = cos * d.real - sin * d.imag
            shifted_im = sin * d.real + cos * d.imag
            wk = wot[np.ix_(o_used, t_used)]
            rots = euler_to_matrix(oris[o_used, 0], oris[o_used, 1], oris[o_used, 2])
            summed = np.zeros((2, len(o_used), len(pix)))
            w_o = np.zeros((len(o_used), 1))
            for k_t in range(len(t_used)):
                summed[0] += wk[:, k_t:k_t + 1] * shifted_re[k_t]
                summed[1] += wk[:, k_t:k_t + 1] * shifted_im[k_t]
                w_o += wk[:, k_t:k_t + 1]
            pending.append((summed[0] + 1j * summed[1], w_o * weight_pix[j], rots))
            if noise is not None:
                # sum_g w_g |y - c P_o e_t|^2 = |y|^2 - 2 sum_o Re(conj(summed_o) P_o) / s
                # + c^2 sum_o w_o |P_o|^2 on the scored pixels (summed_o = sum_t w_ot c s y e_t^-1)
                p_u = p[o_used].reshape(len(o_used), -1)[:, m_pix]
                cross = (summed[0][:, scored] * p_u.real + summed[1][:, scored] * p_u.imag).sum(0)
                power = (w_o * (p_u.real ** 2 + p_u.imag ** 2)).sum(0)
                y_s = y_pix[j, scored]
                c2 = c_pix[j, scored] ** 2 if c is not None else 1.0
                resid = (y_s.real ** 2 + y_s.imag ** 2 - 2.0 * cross / s_pix[scored]
                         + c2 * power)
                noise += (np.bincount(rings_pix, weights=resid, minlength=len(noise))
                          / ring_pixels)
            if sum(len(p[0]) for p in pending) >= 256:
                flush()
    flush()
    return angles, shifts, maxprob


def searched_step(order, settings):
    """Angular step (deg) the E-step scores at ``order``: global searches rescore at the next
    order (adaptive oversampling), local searches at their own."""
    over = settings.oversample and order < settings.local_order
    return angular_step(order + 1 if over else order)


def _expected_accuracy(ref, particles, angles, sigma2, settings, m, seed):
    """:func:`.accuracy.expected_accuracy` of ``ref`` on RELION's trial particles of half 1
    (a new random choice of ``seed`` each iteration) at their poses ``angles``, the E-step's
    image size ``m`` and noise ``sigma2``."""
    n = particles.n
    trial = trial_particles(particles.half_sets, seed)
    proj = Projector(fourier_crop_volume(ref, m), pad=settings.pad)
    ctfs = None if particles.ctfs is None else crop2(
        np.asarray(particles.ctfs[trial], np.float64), n, m)
    s_m = crop2(inverse_sigma2(sigma2, n, m), n, m)
    return expected_accuracy(proj, angles[trial], ctfs, s_m, [turned_angle(i) for i in trial])


def _residual_power(ref, idx, particles, angles, shifts, pad):
    """Sum over particles of |y - c P e_t|^2 per ring (full box) at the given poses."""
    n = particles.n
    rings = ring_index(n)
    proj = Projector(np.asarray(ref, np.float64), pad=pad)
    total = np.zeros(n // 2 + 1)
    for b0 in range(0, len(idx), 64):
        sel = idx[b0:b0 + 64]
        y = centered_fft(particles.images[sel].astype(np.float64))
        p = centred_projections(proj, angles[sel])
        pred = p * shift_phase(n, n, shifts[sel, 0], shifts[sel, 1])
        if particles.ctfs is not None:
            pred = pred * particles.ctfs[sel]
        total += ring_average((np.abs(y - pred) ** 2).sum(axis=0), rings, n // 2 + 1)
    return total


def _unregularised_map(bp, n, pad):
    """x~ = B / K (eq. 17, no prior) as a real-space map in the images' grey scale, that of
    the regularised references (:func:`_update`)."""
    b, k = completed_sums(bp.data, bp.weight, n, pad)
    eps = 1e-3 * k[k > 0].mean() if np.any(k > 0) else 1.0
    x = np.where(k > 0, b / (k + eps), 0.0)
    return half_to_map(x, n, pad) / float(n) ** 2


def _lambda(settings, resolution):
    if settings.mode == "tikhonov":
        return 0.0
    if settings.mode == "red":
        return settings.lam
    return cw_red_lambda(resolution, settings.cw_low, settings.cw_high)


def _update(bp_data, bp_weight, fsc, n, settings, current, lam, final=False):
    """Eq. 11 / 17 on the sums: (map, (x~, f(x~)) stacked or None when no denoiser ran), in the
    images' grey scale; ``final``: the joined map (where ``--cw-shells final`` applies)."""
    b, k = completed_sums(bp_data, bp_weight, n, settings.pad)
    tau2 = tau2_from_fsc(fsc, k, settings.pad, r_max=settings.pad * current / 2.0)
    red = settings.mode != "tikhonov" and lam > 0
    seen = []

    def denoise(volume):
        out = settings.denoiser(volume)
        seen.append((volume, out))
        return out
    vol, _ = regularised_map(bp_data, bp_weight, tau2, n, settings.pad, current,
                             settings.tau2_fudge, mode="red" if red else "tikhonov",
                             denoiser=denoise, lam=lam if red else 1.0,
                             shell_weight=shell_confidence(fsc)
                             if weights_shells(settings.cw_shells, final) else None)
    # numpy's image transforms are n^2 x RELION's, which half_to_map assumes
    scale = float(n) ** 2
    return vol / scale, (np.stack(seen[0]).astype(np.float32) / scale if seen else None)


def iterate(state, particles, settings, mask=None, split=SERIAL):
    """One iteration (E-step, M-step, noise, sampling); returns the new :class:`State` and a
    dict of this iteration's record. ``mask``: solvent mask of the references (default: a soft
    sphere of the particle diameter). ``split``: the processes sharing the work (the returned
    state's final map only on the owner of half-set 1)."""
    t_cpu, t_wall = time.process_time(), time.time()
    n, px = particles.n, particles.pixel_size
    if settings.mode not in MODES:
        raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), settings.mode))
    if settings.mode != "tikhonov" and settings.denoiser is None:
        raise ValueError("mode %s needs a denoiser" % settings.mode)
    radius = _particle_radius_px(settings, n, px)
    sphere = sphere_mask(n, radius)
    solvent = sphere if mask is None else mask
    first = state.iteration == 0
    m = state.current_size
    inv_s2 = inverse_sigma2(state.sigma2, n, m)
    angles, shifts, maxprob = state.angles.copy(), state.shifts.copy(), state.maxprob.copy()
    bps, mine = [], [split.mine(np.flatnonzero(particles.half_sets == h), h) for h in (1, 2)]
    off2 = np.zeros(1)
    noise = None if first else np.zeros(n // 2 + 1)
    for h in (1, 2):
        idx = mine[h - 1]
        bp = Backprojector(n, settings.pad, r_max=min(n // 2 - 1, m // 2))
        if len(idx):
            a, s, p = estep_half(state.refs[h - 1] * solvent, idx, particles, state, settings,
                                 inv_s2, first, bp, off2, noise)
            angles[idx], shifts[idx], maxprob[idx] = a, s, p
        bps.append(bp)
    for bp in bps:      # after both halves: ranks holding different halves score at the same time
        bp.data[...], bp.weight[...] = split.sum(bp.data), split.sum(bp.weight)
    if split is not SERIAL:     # every particle's pose from the process that scored it
        own = np.zeros(len(angles), bool)
        own[np.concatenate(mine)] = True
        angles = split.sum(np.where(own[:, None], angles, 0.0))
        shifts = split.sum(np.where(own[:, None], shifts, 0.0))
        maxprob = split.sum(np.where(own, maxprob, 0.0))
    # gold-standard FSC of the unregularised halves, beyond the current size 0
    unreg = np.stack([_unregularised_map(bp, n, settings.pad) for bp in bps])
    fsc = fsc_curve(unreg[0] * sphere, unreg[1] * sphere)
    fsc[m // 2:] = 0.0
    resolution = nominal_resolution(fsc, n, px)
    lam = _lambda(settings, resolution)
    ups = [_update(bp.data, bp.weight, fsc, n, settings, m, lam) if split.owns(h) else None
           for h, bp in zip((1, 2), bps)]
    ups = [split.share(u, h) for h, u in zip((1, 2), ups)]
    refs = np.stack([u[0] for u in ups])
    red_maps = None if ups[0][1] is None else np.stack([u[1] for u in ups])
    sigma2 = state.sigma2.copy()
    if not first:
        # the E-step's posterior mean residuals on the rings it scored
        inside = np.isin(np.arange(len(sigma2)), ring_index(n)[inv_s2 > 0])
        sigma2[inside] = split.sum(noise)[inside] / len(particles.images)
    else:
        # cross-correlation poses, a start of unknown grey scale: the residuals at the best
        # poses under the new references
        resid = np.zeros(n // 2 + 1)
        for h in (1, 2):
            if len(mine[h - 1]):
                resid += _residual_power(refs[h - 1] * solvent, mine[h - 1], particles,
                                         angles, shifts, settings.pad)
        resid = split.sum(resid)
        inside = np.arange(len(sigma2)) < m // 2
        sigma2[inside] = (resid / len(particles.images))[inside]
    sigma2_offset = (float(split.sum(off2)[0]) / (2 * len(particles.images))
                     if settings.sigma_offset > 0 else 0.0)
    # sampling and convergence
    change = float(np.mean(angular_distance(state.angles, angles)))
    offset_change = float(np.mean(np.hypot(*(shifts - state.shifts).T))) * px
    improved = resolution < state.best_resolution * (1 - IMPROVE)
    stall = 0 if improved else state.stall + 1
    best = min(resolution, state.best_resolution)
    # RELION's expected angular accuracy of the new half-1 reference at the next image size
    # (reported; with accuracy_stop, no finer sampling below that x it: module text, 4)
    next_size = image_size_for(best, n, px, settings.size_margin)   # unless the final pass
    accuracy = np.inf if first else _expected_accuracy(
        refs[0] * solvent, particles, angles, sigma2, settings, next_size, state.iteration + 1)
    order = state.order if first else next_order(state.order, settings.max_order, stall >= 1,
                                                 resolution, radius * px)
    # RELION's rule: no finer order once the searched step is below the factor x the accuracy;
    # by default only for the orders beyond free_order (module text, 4)
    factor = (settings.accuracy_stop if settings.accuracy_stop > 0
              else FINE_ENOUGH if order > settings.free_order else 0.0)
    if (factor > 0 and order > state.order
            and fine_enough(searched_step(state.order, settings), accuracy, factor)):
        order = state.order
    # jumps: particles whose best orientation moved further than the first local search reaches
    reach = settings.local_steps * angular_step(settings.local_order)
    jumps = int((angular_distance(state.angles, angles) > reach).sum())
    fewest = min(jumps, state.fewest_jumps) if not first else np.inf
    held = (not first and state.order < settings.local_order <= order
            and jumps > FEW_JUMPS * len(angles) and jumps < SETTLED * state.fewest_jumps)
    if held:
        order = state.order         # global searches are still moving particles: stay global
    rng_, step = state.offset_range, state.offset_step
    if order > state.order:
        step = state.offset_step / 2.0
        rng_ = max(state.offset_range / 2.0, 1.5 * step)
    converged = (not first and not held and order == state.order and stall >= STALL_CONVERGED)
    final_pass = converged and not state.final_pass
    if state.final_pass or final_pass:
        order, rng_, step = state.order, state.offset_range, state.offset_step
    finished = state.final_pass or state.iteration + 1 >= settings.max_iter
    record = {"iteration": state.iteration + 1, "healpix_order": state.order,
              "angular_step": angular_step(state.order),
              "local": bool(state.order >= settings.local_order and not first),
              "current_size": m, "offset_range": state.offset_range,
              "offset_step": state.offset_step, "resolution": resolution, "lambda": lam,
              "accuracy_rot_deg": None if first else accuracy, "angular_change": change,
              "offset_change_A": offset_change, "jumps": jumps,
              "mean_maxprob": float(maxprob.mean()),
              "converged": bool(converged or state.final_pass),
              "final_pass": bool(state.final_pass),
              "sigma_offset_A": float(np.sqrt(sigma2_offset))}
    final_map = None
    if finished and split.owns(1):
        full = joined_fsc(fsc)
        final_map = _update(bps[0].data + bps[1].data, bps[0].weight + bps[1].weight, full, n,
                            settings, m, lam, final=True)[0].astype(np.float32)
    new = State(iteration=state.iteration + 1, refs=refs.astype(np.float32), angles=angles,
                shifts=shifts, maxprob=maxprob, sigma2=sigma2, order=order, offset_range=rng_,
                offset_step=step,
                current_size=n if final_pass else next_size,
                stall=0 if order > state.order else stall, best_resolution=best,
                fewest_jumps=np.inf if order > state.order else fewest,
                sigma2_offset=sigma2_offset, fsc=fsc,
                finished=finished, final_pass=final_pass and not finished, final_map=final_map,
                red_maps=red_maps, history=list(state.history),
                unregularised=unreg.astype(np.float32) if finished else None)
    record["cpu_s"] = float(split.sum(np.array([time.process_time() - t_cpu]))[0])
    record["wall_s"] = time.time() - t_wall
    new.history.append(record)
    return new, record


def refine(particles, state, settings, mask=None, after_iteration=None, split=SERIAL):
    """Iterate from ``state`` until finished; ``after_iteration(state, record)`` is called after
    each iteration (saving, logging). Returns the final state."""
    while not state.finished:
        state, record = iterate(state, particles, settings, mask, split)
        if after_iteration is not None:
            after_iteration(state, record)
    return state
