"""Fourier-cylinder correlation, eq. 20 of Zivanov et al. (2019).

FCC(f, kappa) = sum Re[X V_s*] / sqrt(sum |X|^2 * sum |V_s|^2), the sums running over all
micrographs m, particles p and Fourier pixels k of ring kappa (|k - kappa| < 0.5 px, i.e.
:func:`polishplugin.core.fourier.ring_index`) of frame f. X is the observed frame, V_s the
prediction shifted to the tracked position s: V_s(k) = exp(-2 pi i <s, k>) V(k).
The three sums are kept separately (as RELION's ``_FCC_cc``, ``_FCC_w0``, ``_FCC_w1``) so that
micrographs and MPI ranks are combined by adding them.
"""
import numpy as np

from ..fourier import ring_index, shift_phase


class FccAccumulator:
    """Running sums of eq. 20 for ``nframes`` frames of an ``box`` x ``box`` Fourier grid; rings
    0 .. box//2 (Nyquist) are kept, the corners beyond are ignored."""

    def __init__(self, nframes, box):
        self.nframes = int(nframes)
        self.box = int(box)
        self.nrings = self.box // 2 + 1
        self.num = np.zeros((self.nframes, self.nrings))
        self.wobs = np.zeros((self.nframes, self.nrings))
        self.wpred = np.zeros((self.nframes, self.nrings))
        rings = ring_index(self.box).ravel()
        self._keep = rings < self.nrings
        self._rings = rings[self._keep]

    @classmethod
    def from_sums(cls, num, wobs, wpred, box=None):
        """Rebuild an accumulator from its three (F, nrings) sums (e.g. read from files) on the
        rings of a ``box`` grid (default the even box 2 (nrings - 1))."""
        num = np.asarray(num, dtype=np.float64)
        box = 2 * (num.shape[1] - 1) if box is None else int(box)
        if box // 2 + 1 != num.shape[1]:
            raise ValueError("%d FCC rings do not belong to a box of %d" % (num.shape[1], box))
        acc = cls(num.shape[0], box)
        if np.shape(wobs) != num.shape or np.shape(wpred) != num.shape:
            raise ValueError("the three FCC sums must have the same shape")
        acc.num[:] = num
        acc.wobs[:] = wobs
        acc.wpred[:] = wpred
        return acc

    def _ring_sum(self, values):
        return np.bincount(self._rings, values.ravel()[self._keep], minlength=self.nrings)

    def add(self, obs_fft, pred_fft, shifts):
        """Add particles: ``obs_fft`` (P, F, n, n) observed frames (fft2), ``pred_fft`` (P, n, n)
        or (P, F, n, n) predictions at the particle's reference position, ``shifts`` (P, F, 2)
        tracked positions (x, y) in pixels; the prediction is moved to the track."""
        obs_fft = np.asarray(obs_fft)
        pred_fft = np.asarray(pred_fft)
        shifts = np.asarray(shifts, dtype=np.float64)
        p, f, n = obs_fft.shape[0], obs_fft.shape[1], obs_fft.shape[-1]
        if f != self.nframes or n != self.box or obs_fft.shape[-2] != n:
            raise ValueError("observations %s do not match %d frames of box %d"
                             % (obs_fft.shape, self.nframes, self.box))
        if shifts.shape != (p, f, 2):
            raise ValueError("shifts must be (P, F, 2), got %s" % (shifts.shape,))
        for fi in range(f):
            pred = pred_fft[:, fi] if pred_fft.ndim == 4 else pred_fft
            vs = pred * shift_phase(n, n, shifts[:, fi, 0], shifts[:, fi, 1])
            x = obs_fft[:, fi]
            self.num[fi] += self._ring_sum((x * np.conj(vs)).real.sum(axis=0))
            self.wobs[fi] += self._ring_sum((np.abs(x) ** 2).sum(axis=0))
            self.wpred[fi] += self._ring_sum((np.abs(vs) ** 2).sum(axis=0))

    def merge(self, other):
        """Add the sums of another accumulator (another micrograph or MPI rank)."""
        if (other.nframes, other.box) != (self.nframes, self.box):
            raise ValueError("cannot merge FCC sums of different shapes")
        self.num += other.num
        self.wobs += other.wobs
        self.wpred += other.wpred
        return self

    def fcc(self):
        """FCC(f, kappa), (F, nrings); 0 where a ring holds no power."""
        den = np.sqrt(self.wobs * self.wpred)
        out = np.zeros_like(self.num)
        np.divide(self.num, den, out=out, where=den > 0)
        return out
