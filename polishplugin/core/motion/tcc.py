"""Thick-cylinder correlation (TCC, eq. 19 of Zivanov 2019) and the frequency split of its §2.2.

Motion-parameter training aligns the particles on the *alignment circle* |k| < T_align only and
scores the alignment on the *evaluation ring* T_eval < |k| <= k_max, against the prediction from
the OPPOSITE half map. Frequencies are in pixels of the n x n box (k * n in cycles per pixel),
on numpy's unshifted fft2 grid (see :mod:`polishplugin.core.fourier`).

Storage: only the evaluation ring is kept, and of each Friedel pair (k, -k) only one pixel,
counted twice (for real images Re[X V*] and |X|^2 are equal at k and -k), so the sums equal
those over the full fft2 grid; of each pixel only the product X V*, in 8-bit block floating
point (:class:`EvalRingData`, :mod:`.compact`).
"""
from dataclasses import dataclass

import numpy as np

from ...backends import get_backend
from .compact import Blocks, block_bytes, concatenate, quantise



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
    """Evaluation-ring data of one micrograph's (or any set of) particles, in compact precision.

    Eq. 19 needs, per particle p, frame f and ring pixel k, only the weighted product
    w_f(k) X_pf(k) V_p*(k) of the observed frame and the (unshifted) opposite-half prediction:
    shifting V by s multiplies it by exp(+2 pi i <k, s>), and the denominators do not depend on
    the tracks. So the products are stored in block floating point (:mod:`.compact`: ``bits``-bit
    integers for the real and imaginary parts, one block per particle and frame) and the
    denominators as two float64 numbers computed before rounding.

    Rounding adds an error of at most scale/2 to each part; with 8 bits its rms is ~1 % of the
    rms product (tests/test_training_tcc.py), i.e. it acts as extra noise with ~1e-4 of the power
    of the shot noise already in every product. 16 bits make it negligible for exact tests.

    blocks: :class:`.compact.Blocks` of (P, F, M, 2); ky, kx: (M,) int32 frequencies in px of
    the box; x2, v2: sum w|X|^2 and sum w|V|^2 over the stored data; box: n.
    """
    blocks: Blocks
    ky: np.ndarray
    kx: np.ndarray
    x2: float
    v2: float
    box: int

    @classmethod
    def from_fourier(cls, obs_f, pred_f, t_eval, k_max, frame_weights=None, bits=8):
        """Keep the evaluation ring of obs_f (P, F, n, n) full fft2 arrays, or (P, F, n, n//2+1)
        rfft2 half-planes of real images, and full fft2 predictions pred_f (P, n, n);
        frame_weights (F, n, n) real, optional, multiplies every term of eq. 19 (RELION applies
        its damage weights so); it is averaged over k and -k. bits: 8 or 16 (see the class)."""
        obs_f = np.asarray(obs_f)
        pred_f = np.asarray(pred_f)
        if obs_f.ndim != 4 or pred_f.ndim != 3 or obs_f.shape[-1] not in (
                obs_f.shape[-2], obs_f.shape[-2] // 2 + 1):
            raise ValueError("expected obs (P, F, n, n) or (P, F, n, n//2+1) and pred (P, n, n), "
                             "got %s and %s" % (obs_f.shape, pred_f.shape))
        p, f, n, nx = obs_f.shape
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
        if nx == n:
            obs = obs_f.reshape(p, f, n * n)[:, :, idx].astype(np.complex128)
        else:   # pixel (iy, ix) beyond the half-plane: the conjugate of (-iy, -ix), inside it
            iy, ix = np.divmod(idx, n)
            flip = ix >= nx
            src = np.where(flip, ((-iy) % n) * nx + (-ix) % n, iy * nx + ix)
            obs = obs_f.reshape(p, f, n * nx)[:, :, src].astype(np.complex128)
            obs[:, :, flip] = np.conj(obs[:, :, flip])
        pred = pred_f.reshape(p, n * n)[:, idx].astype(np.complex128)
        x2 = float(np.einsum("pfm,fm->", _abs2(obs), w))
        v2 = float(np.einsum("pm,m->", _abs2(pred), w.sum(0)))
        prod = w * obs * np.conj(pred)[:, None, :]
        blocks = quantise(np.stack([prod.real, prod.imag], axis=-1), bits, block_ndim=2)
        return cls(blocks=blocks, ky=ky.astype(np.int32), kx=kx.astype(np.int32),
                   x2=x2, v2=v2, box=int(n))

    @classmethod
    def concatenate(cls, parts):
        """One data set holding the particles of several (same box, ring and frames)."""
        first = parts[0]
        for d in parts[1:]:
            if d.box != first.box or not (np.array_equal(d.kx, first.kx)
                                          and np.array_equal(d.ky, first.ky)):
                raise ValueError("evaluation rings differ; cannot concatenate")
        return cls(blocks=concatenate([d.blocks for d in parts]), ky=first.ky, kx=first.kx,
                   x2=float(sum(d.x2 for d in parts)), v2=float(sum(d.v2 for d in parts)),
                   box=first.box)

    @property
    def n_particles(self):
        return self.blocks.q.shape[0]

    @property
    def n_frames(self):
        return self.blocks.q.shape[1]

    @property
    def n_pixels(self):
        return self.blocks.q.shape[2]

    @property
    def nbytes(self):
        """Bytes held by the arrays."""
        return self.blocks.nbytes + self.ky.nbytes + self.kx.nbytes


def _abs2(z):
    return z.real.astype(np.float64) ** 2 + z.imag.astype(np.float64) ** 2


def estimate_memory(n_particles, n_frames, box, t_eval, k_max, window, bits=8, cc_bits=16):
    """Bytes of an :class:`EvalRingData` (``bits``) for n_particles plus their alignment CC maps
    (P, F, window, window) in ``cc_bits`` block floating point; use it to cap the training subset
    by a memory budget."""
    m = ring_pixel_count(box, t_eval, k_max)
    blocks = n_particles * n_frames
    return int(blocks * (block_bytes(2 * m, bits) + block_bytes(window * window, cc_bits))
               + 8 * m)


def bytes_per_particle(n_frames, box, t_eval, k_max, window, bits=8, cc_bits=16):
    """Per-particle part of :func:`estimate_memory` (the rest, 8 M for the frequencies, is per
    data set)."""
    return estimate_memory(1, n_frames, box, t_eval, k_max, window, bits, cc_bits) - \
        estimate_memory(0, n_frames, box, t_eval, k_max, window, bits, cc_bits)


def tcc_sums(data, tracks, backend=None):
    """Per-micrograph sums of eq. 19: [sum w Re(X V_s*), sum w|X|^2, sum w|V_s|^2] (float64, (3,)).

    tracks (P, F, 2): (x, y) px position of each particle in each frame relative to its
    prediction; V_s(k) = V(k) exp(-2 pi i <k, s>) (core.fourier convention), so
    X V_s* = X V* exp(+2 pi i <k, s>) (the backend's ``ring_correlation``).
    Sums of several micrographs add; :func:`tcc_from_sums` turns them into the TCC.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    p, f = data.blocks.q.shape[:2]
    if tracks.shape != (p, f, 2):
        raise ValueError("tracks shape %s, expected %s" % (tracks.shape, (p, f, 2)))
    b = data.blocks
    num = get_backend(backend).ring_correlation(b.q, b.scale, b.offset, data.kx, data.ky,
                                                tracks, data.box)
    return np.array([num, data.x2, data.v2])


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
