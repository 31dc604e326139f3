"""Initial tracks for the MAP fit (seed zivanov2019 §2.1.4 starts L-BFGS from them).

- :func:`global_track_from_cc`: one track for the whole micrograph from the particle-summed CC
  maps, integer peak plus separable quadratic sub-pixel refinement (RELION's fallback ``--gi``);
- :func:`initial_tracks_from_global`: the same shifts for every particle;
- :func:`initial_tracks_from_local_model`: RELION MotionCorr global shifts + third-order polynomial
  local model (per-micrograph STAR ``data_global_shift`` and ``data_local_motion_model``).

Tracks are (P, F, 2) displacements (x, y) in pixels of the particle content in each frame.
"""
import logging

import numpy as np

log = logging.getLogger(__name__)

NOT_OBSERVED = -9999.0


def _quadratic_offset(cm, c0, cp):
    """Vertex of the parabola through (-1, cm), (0, c0), (1, cp), clipped to [-0.5, 0.5]."""
    den = cm - 2.0 * c0 + cp
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))


def global_track_from_cc(cc_maps, reference_frame=None):
    """Global track (F, 2): peak of sum_p CC_{p,f} per frame with sub-pixel quadratic refinement
    (periodic neighbours). With ``reference_frame`` the track is made relative to that frame."""
    total = np.asarray(cc_maps, dtype=np.float64).sum(axis=0)        # (F, W, W)
    F, W = total.shape[:2]
    half = W // 2
    track = np.zeros((F, 2))
    for f in range(F):
        m = total[f]
        iy, ix = np.unravel_index(np.argmax(m), m.shape)
        dx = _quadratic_offset(m[iy, (ix - 1) % W], m[iy, ix], m[iy, (ix + 1) % W])
        dy = _quadratic_offset(m[(iy - 1) % W, ix], m[iy, ix], m[(iy + 1) % W, ix])
        track[f] = (ix + dx - half, iy + dy - half)
    if reference_frame is not None:
        track -= track[reference_frame]
    return track


def initial_tracks_from_global(global_shifts, positions):
    """Every particle (P = len(positions)) follows the global shifts (F, 2): returns (P, F, 2)."""
    g = np.asarray(global_shifts, dtype=np.float64)
    return np.repeat(g[None], len(np.asarray(positions).reshape(-1, 2)), axis=0)


def fill_not_observed(global_shifts):
    """Replace RELION's NOT_OBSERVED (-9999) shifts by the last observed earlier frame (0 if none),
    as Micrograph::getShiftAt does."""
    g = np.array(global_shifts, dtype=np.float64)
    bad = np.any(g == NOT_OBSERVED, axis=1)
    if bad.any():
        log.warning("%d frame(s) without observed global shift; using the previous frame's",
                    int(bad.sum()))
        last = np.zeros(2)
        for f in range(len(g)):
            if bad[f]:
                g[f] = last
            else:
                last = g[f]
    return g


def polynomial_shift(coeffs, z, u, v):
    """RELION ThirdOrderPolynomialModel: shift (..., 2) at time z and normalised position (u, v).

    coeffs (36,): rlnMotionModelCoeff ordered by rlnMotionModelCoeffsIdx, 18 for x then 18 for y;
    term 3 a + b holds z^(b+1) times the a-th of (1, u, u^2, v, v^2, u v).
    """
    c = np.asarray(coeffs, dtype=np.float64).reshape(2, 6, 3)
    z = np.asarray(z, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    space = np.stack(np.broadcast_arrays(np.ones_like(u), u, u * u, v, v * v, u * v), axis=-1)
    time = np.stack([z, z * z, z ** 3], axis=-1)
    return np.einsum("...a,...b,kab->...k", space, time, c)


def initial_tracks_from_local_model(positions, global_shifts, coeffs, width, height, frames,
                                    start_frame=1, scale=1.0):
    """Tracks (P, F, 2) from RELION MotionCorr metadata, as MicrographHandler::loadInitialTracks.

    positions (P, 2): particle positions in movie pixels; global_shifts (Fm, 2): the movie's
    rlnMicrographShiftX/Y (frame i+1 at row i, movie pixels); coeffs (36,) or None (global only);
    width, height: movie size in pixels; frames: 1-based movie frame numbers of the F frames used;
    start_frame: rlnMicrographStartFrame; scale: movie pixel / particle pixel. MotionCorr's shifts
    are the corrections applied to the frames, so the particle displacement is minus the shift.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    frames = np.asarray(frames, dtype=np.int64)
    g = fill_not_observed(global_shifts)[frames - 1]                 # (F, 2)
    shift = np.broadcast_to(g[None], (len(pos), len(frames), 2)).copy()
    if coeffs is not None:
        u = (pos[:, 0] / width - 0.5)[:, None]
        v = (pos[:, 1] / height - 0.5)[:, None]
        z = (frames - start_frame)[None, :]
        shift += polynomial_shift(coeffs, z, u, v)
    return -scale * shift
