"""Thick-cylinder correlation (TCC, eq. 19 of Zivanov 2019) and the frequency split of its §2.2.

Motion-parameter training aligns the particles on the *alignment circle* |k| < T_align only and
scores the alignment on the *evaluation ring* T_eval < |k| <= k_max, against the prediction from
the OPPOSITE half map. Frequencies are in pixels of the n x n box (k * n in cycles per pixel),
on numpy's unshifted fft2 grid (see :mod:`polishplugin.core.fourier`).

Storage: only the evaluation-ring coefficients are kept, and of each Friedel pair (k, -k) only
one pixel, counted twice (for real images Re[X V*] and |X|^2 are equal at k and -k), so the sums
equal those over the full fft2 grid.
"""
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_CHUNK_ELEMENTS = 1 << 22   # (particles x frames x ring pixels) per vectorised chunk of tcc_sums


def split_threshold(k_max, align_frac=0.5, eval_frac=None):
    """Radii (t_align, t_eval) in px of the alignment circle and inner edge of the evaluation ring.

    As RELION's MotionParamEstimator (--align_frac, --eval_frac, both 0.5 by default): the disc
    |k| <= k_max is split by area, so the alignment uses k < k_max*sqrt(align_frac) and the
    evaluation ring k_max*sqrt(1 - eval_frac) < k <= k_max; eval_frac defaults to
    1 - align_frac, which gives one threshold T = t_align = t_eval (k_max/sqrt(2) by default).
    RELION rounds both radii to whole pixels and starts the ring 2 px further out because its
    alignment weights have a +/-1 px soft edge; with the hard masks below no gap is needed, and
    the radii are kept unrounded.
    """
    if eval_frac is None:
        eval_frac = 1.0 - align_frac
    if not (0 < align_frac < 1 and 0 < eval_frac < 1):
        raise ValueError("align_frac (%g) and eval_frac (%g) must lie in (0, 1)"
                         % (align_frac, eval_frac))
    if align_frac + eval_frac > 1.0 + 1e-9:
        raise ValueError("alignment and evaluation frequencies overlap: align_frac + eval_frac "
                         "= %g > 1" % (align_frac + eval_frac))
    if k_max <= 0:
        raise ValueError("k_max (%g px) must be positive" % k_max)
    return k_max * np.sqrt(align_frac), k_max * np.sqrt(1.0 - eval_frac)


def _signed_freqs(n):
    """(ky, kx) integer frequencies in px of the n-box on the fft2 grid, each (n, n)."""
    f = np.rint(np.fft.fftfreq(n) * n).astype(np.int32)
    return np.meshgrid(f, f, indexing="ij")


def alignment_circle_mask(n, t_align):
    """Boolean (n, n) fft2 mask of the alignment circle |k| < T (k in px of the n-box)."""
    ky, kx = _signed_freqs(n)
    return np.hypot(ky, kx) < t_align


def evaluation_ring_mask(n, t_eval, k_max):
    """Boolean (n, n) fft2 mask of the evaluation ring T < |k| <= k_max (k in px of the n-box)."""
    ky, kx = _signed_freqs(n)
    r = np.hypot(ky, kx)
    return (r > t_eval) & (r <= k_max)


def _ring_pixels(n, t_eval, k_max):
    """Flat fft2 indices of the evaluation ring (one pixel per Friedel pair), of their partners
    (-k), and multiplicities (1 for self-conjugate pixels, else 2)."""
    iy, ix = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    lin = iy * n + ix
    partner = ((-iy) % n) * n + (-ix) % n
    keep = evaluation_ring_mask(n, t_eval, k_max) & (lin <= partner)
    idx = lin[keep]
    mult = np.where(idx == partner[keep], 1.0, 2.0)
    return idx, partner[keep], mult


def ring_pixel_count(n, t_eval, k_max):
    """Number M of stored evaluation-ring pixels (one per Friedel pair) of an n x n box."""
    return int(_ring_pixels(n, t_eval, k_max)[0].size)


@dataclass
class EvalRingData:
    """Evaluation-ring Fourier coefficients of one micrograph's (or any set of) particles.

    obs: (P, F, M) complex64 observed frames; pred: (P, M) complex64 predictions from the
    opposite half map (unshifted); ky, kx: (M,) int32 frequencies in px of the box; weights:
    (F, M) float32 = Friedel multiplicity x optional per-frame weight (e.g. RELION's damage
    weight); box: n.
    """
    obs: np.ndarray
    pred: np.ndarray
    ky: np.ndarray
    kx: np.ndarray
    weights: np.ndarray
    box: int

    @classmethod
    def from_fourier(cls, obs_f, pred_f, t_eval, k_max, frame_weights=None):
        """Keep the evaluation ring of full fft2 arrays obs_f (P, F, n, n) and pred_f (P, n, n);
        frame_weights (F, n, n) real, optional, multiplies every term of eq. 19 (RELION applies
        its damage weights so); it is averaged over k and -k."""
        obs_f = np.asarray(obs_f)
        pred_f = np.asarray(pred_f)
        if obs_f.ndim != 4 or pred_f.ndim != 3 or obs_f.shape[-1] != obs_f.shape[-2]:
            raise ValueError("expected obs (P, F, n, n) and pred (P, n, n), got %s and %s"
                             % (obs_f.shape, pred_f.shape))
        p, f, n, _ = obs_f.shape
        if pred_f.shape != (p, n, n):
            raise ValueError("pred shape %s does not match obs %s" % (pred_f.shape, obs_f.shape))
        idx, partner, mult = _ring_pixels(n, t_eval, k_max)
        if idx.size == 0:
            raise ValueError("empty evaluation ring (T=%g, k_max=%g px, box %d)"
                             % (t_eval, k_max, n))
        ky, kx = (k.ravel()[idx] for k in _signed_freqs(n))
        w = np.broadcast_to(mult, (f, idx.size))
        if frame_weights is not None:      # symmetrised: the pair (k, -k) shares one pixel
            fw = np.asarray(frame_weights, dtype=np.float64).reshape(f, n * n)
            w = w * 0.5 * (fw[:, idx] + fw[:, partner])
        return cls(obs=obs_f.reshape(p, f, n * n)[:, :, idx].astype(np.complex64),
                   pred=pred_f.reshape(p, n * n)[:, idx].astype(np.complex64),
                   ky=ky.astype(np.int32), kx=kx.astype(np.int32),
                   weights=np.ascontiguousarray(w, dtype=np.float32), box=int(n))

    @property
    def n_particles(self):
        return self.obs.shape[0]

    @property
    def n_frames(self):
        return self.obs.shape[1]

    @property
    def n_pixels(self):
        return self.obs.shape[2]

    @property
    def nbytes(self):
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in (self.obs, self.pred, self.ky, self.kx, self.weights))

    @cached_property
    def denominators(self):
        """(sum w|X|^2, sum w|V|^2) of eq. 19: shifting V does not change |V|, so both are
        independent of the tracks."""
        x2 = np.einsum("pfm,fm->", _abs2(self.obs), self.weights.astype(np.float64))
        v2 = np.einsum("pm,m->", _abs2(self.pred), self.weights.sum(0, dtype=np.float64))
        return float(x2), float(v2)


def _abs2(z):
    return z.real.astype(np.float64) ** 2 + z.imag.astype(np.float64) ** 2


def estimate_memory(n_particles, n_frames, box, t_eval, k_max, window):
    """Bytes of an :class:`EvalRingData` for n_particles plus their alignment CC maps
    (P, F, window, window) float32; use it to cap the training subset by a memory budget."""
    m = ring_pixel_count(box, t_eval, k_max)
    ring = 8 * m * n_particles * (n_frames + 1) + 4 * m * (2 + n_frames)
    return int(ring + 4 * n_particles * n_frames * window * window)


def bytes_per_particle(n_frames, box, t_eval, k_max, window):
    """Per-particle part of :func:`estimate_memory` (the rest, (2 + F) * M * 4, is per data set)."""
    return estimate_memory(1, n_frames, box, t_eval, k_max, window) - \
        estimate_memory(0, n_frames, box, t_eval, k_max, window)


def tcc_sums(data, tracks):
    """Per-micrograph sums of eq. 19: [sum Re(X V_s*), sum |X|^2, sum |V_s|^2] (float64, (3,)).

    tracks (P, F, 2): (x, y) px position of each particle in each frame relative to its
    prediction; V_s(k) = V(k) exp(-2 pi i <k, s>) (core.fourier convention).
    Sums of several micrographs add; :func:`tcc_from_sums` turns them into the TCC.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    p, f, m = data.obs.shape
    if tracks.shape != (p, f, 2):
        raise ValueError("tracks shape %s, expected %s" % (tracks.shape, (p, f, 2)))
    kmax = int(max(np.abs(data.kx).max(), np.abs(data.ky).max()))
    freqs = np.arange(-kmax, kmax + 1, dtype=np.float64)
    ix = data.kx + kmax
    iy = data.ky + kmax
    scale = 2.0 * np.pi / data.box
    num = 0.0
    step = max(1, _CHUNK_ELEMENTS // max(1, f * m))
    for p0 in range(0, p, step):
        s = tracks[p0:p0 + step]
        # X V_s* = X V* exp(+2 pi i <k, s>), separable in kx and ky: gather 1-D phase tables
        ex = np.exp(1j * scale * s[..., 0, None] * freqs).astype(np.complex64)
        ey = np.exp(1j * scale * s[..., 1, None] * freqs).astype(np.complex64)
        prod = data.obs[p0:p0 + step] * np.conj(data.pred[p0:p0 + step])[:, None, :]
        prod *= ex[..., ix]
        prod *= ey[..., iy]
        rows = np.einsum("pfm,fm->pf", prod.real, data.weights)
        num += rows.sum(dtype=np.float64)
    x2, v2 = data.denominators
    return np.array([num, x2, v2])


def tcc_from_sums(sums):
    """TCC of eq. 19 from summed [numerator, sum|X|^2, sum|V|^2]; 0 when a denominator is 0."""
    num, x2, v2 = sums
    den = x2 * v2
    return float(num / np.sqrt(den)) if den > 0 else 0.0


def tcc(eval_data, tracks):
    """Thick-cylinder correlation, eq. 19 of Zivanov 2019.

    eval_data: one :class:`EvalRingData` with tracks (P, F, 2), or sequences of them (one per
    micrograph) with matching sequences of tracks; the sums run over all of them.
    """
    if isinstance(eval_data, EvalRingData):
        return tcc_from_sums(tcc_sums(eval_data, tracks))
    if len(eval_data) != len(tracks):
        raise ValueError("%d data sets but %d track sets" % (len(eval_data), len(tracks)))
    return tcc_from_sums(sum(tcc_sums(d, t) for d, t in zip(eval_data, tracks)))
