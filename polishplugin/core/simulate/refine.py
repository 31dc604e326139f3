"""Refined particle centres as a refinement would find them from the data (not from the truth).

A 3D refinement locates each particle in the motion-corrected, dose-weighted micrograph by
cross-correlating it with the projection of the reference (times its CTF). Here: the particle's
frames are cut around a starting position, shifted back along the earlier global track and
summed with exposure-filter weights; the sum is correlated with the prediction from the
particle's own half map within +-``radius`` px, and the peak refined to sub-pixel by a parabola.
The error of the result then depends on the particle's SNR, as on real data.
"""
import numpy as np

from ..ctf import CtfParams, ctf_2d
from ..damage import exposure_filter, frame_doses
from ..fourier import radius_grid, shift_phase
from ..motion.init import _quadratic_offset


def data_refined_centres(frames, gain, start, global_track, angles, half_sets, ctfs, projectors,
                         box, pixel_size, dose_per_frame, voltage, sign=1.0, radius=4):
    """Centres (P, 2) px found from the data near ``start`` (P, 2): see the module docstring.

    frames (F, ny, nx) raw counts; gain (ny, nx) or None; global_track (F, 2) displacements;
    angles (P, 3) rad; ctfs: list of CtfParams; projectors {1, 2}: own-half projectors;
    sign: +1 bright particles, -1 dark (raw data)."""
    F = frames.shape[0]
    n = box
    k = radius_grid(n, n, pixel_size)
    w = exposure_filter(k, frame_doses(F, dose_per_frame), voltage)            # (F, n, n)
    w = w / np.sqrt((w * w).sum(axis=0, keepdims=True))
    out = np.empty_like(np.asarray(start, dtype=np.float64))
    idx = np.arange(-radius, radius + 1)
    for p, (x0, y0) in enumerate(np.asarray(start, dtype=np.float64)):
        acc = np.zeros((n, n), dtype=np.complex128)
        cx, cy = int(round(x0)), int(round(y0))
        for f in range(F):
            qx = int(round(cx + global_track[f, 0]))
            qy = int(round(cy + global_track[f, 1]))
            ys = np.clip(np.arange(qy - n // 2, qy - n // 2 + n), 0, frames.shape[1] - 1)
            xs = np.clip(np.arange(qx - n // 2, qx - n // 2 + n), 0, frames.shape[2] - 1)
            img = frames[f][np.ix_(ys, xs)].astype(np.float64)
            if gain is not None:
                img = img * gain[np.ix_(ys, xs)]
            img -= img.mean()
            frac = (qx - cx - global_track[f, 0], qy - cy - global_track[f, 1])
            acc += np.fft.fft2(img) * w[f] * shift_phase(n, n, frac[0], frac[1])
        pred = projectors[int(half_sets[p])].project(*angles[p], shape=(n, n))
        pred = pred * ctf_2d(ctfs[p], n, pixel_size) * sign
        cc = np.fft.ifft2(acc * np.conj(pred)).real
        win = cc[np.ix_(idx % n, idx % n)]
        iy, ix = np.unravel_index(np.argmax(win), win.shape)
        dx = _quadratic_offset(*(win[iy, max(ix - 1, 0):ix + 2] if 0 < ix < 2 * radius
                                 else (0.0, 1.0, 0.0)))
        dy = _quadratic_offset(*(win[max(iy - 1, 0):iy + 2, ix] if 0 < iy < 2 * radius
                                 else (0.0, 1.0, 0.0)))
        out[p] = (cx + idx[ix] + dx, cy + idx[iy] + dy)
    return out


def ctf_params_of(du, dv, angle, voltage, cs, q0):
    """CtfParams list from per-particle defocus arrays."""
    return [CtfParams(u, v, a, voltage, cs, q0) for u, v, a in zip(du, dv, angle)]
