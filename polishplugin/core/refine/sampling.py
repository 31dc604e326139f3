"""Pose sampling for 3D refinement, as RELION's auto-refine does it (Scheres 2012; RELION's
HealpixSampling), kept simple:

- directions on the sphere from HEALPix (healpy): order k gives 12 * 4^k pixel centres, the
  projection direction (rot = phi, tilt = theta); the in-plane angle psi on a regular grid with
  the matching step, 360 / (6 * 2^k) degrees (RELION: 60 / 2^k, 30 degrees at order 1);
- translations (x, y pixels) on a square grid of ``step`` inside a disc of ``radius``;
- local search: only the directions within ``steps`` angular steps of a particle's previous
  direction, psi within ``steps`` steps of its previous psi, translations around its previous
  offset (the images are re-centred on it, so the grid stays centred on 0);
- adaptive oversampling by one (RELION's default): :func:`finer_orientations`, the next
  order's orientations inside given ones of the grid;
- coarse to fine: :func:`next_order` decides when the order goes up (resolution stalled, or the
  angular step coarser than one resolution element at the particle radius)."""
import functools

import healpy
import numpy as np

from ..geometry import euler_to_matrix


def angular_step(order):
    """Angular step (degrees) of HEALPix order ``order`` (RELION's convention: 60 / 2^order)."""
    return 60.0 / 2 ** int(order)


@functools.lru_cache(maxsize=8)
def _healpix(order):
    nside = 2 ** int(order)
    tilt, rot = healpy.pix2ang(nside, np.arange(12 * nside * nside), nest=True)
    vectors = direction_vectors(rot, tilt)
    for a in (rot, tilt, vectors):
        a.flags.writeable = False
    return rot, tilt, vectors


def directions(order):
    """(rot, tilt) radians of the 12 * 4^order HEALPix pixel centres (NESTED numbering;
    read-only arrays, cached per order)."""
    rot, tilt, _ = _healpix(order)
    return rot, tilt


def psi_grid(order):
    """In-plane angles (radians) of order ``order``: 6 * 2^order values from 0."""
    count = 6 * 2 ** int(order)
    return np.arange(count) * (2 * np.pi / count)


def orientation_grid(order):
    """Every (rot, tilt, psi) of order ``order`` (radians), (12 * 4^k * 6 * 2^k, 3)."""
    rot, tilt = directions(order)
    psi = psi_grid(order)
    d = np.repeat(np.arange(len(rot)), len(psi))
    return np.stack([rot[d], tilt[d], np.tile(psi, len(rot))], axis=1)


def finer_orientations(order, indices):
    """The orientations of order + 1 inside the orientations ``indices`` of
    :func:`orientation_grid` (``order``): each direction's 4 HEALPix children (NESTED: pixels
    4d .. 4d + 3) times psi -+ a quarter of the psi step (RELION's adaptive oversampling by
    one), (8 len(indices), 3) radians, the 8 of each coarse orientation together."""
    rot, tilt = directions(order + 1)
    npsi = 6 * 2 ** int(order)
    d, j = np.divmod(np.asarray(indices, np.int64), npsi)
    child = (4 * d[:, None] + np.arange(4)).reshape(-1)
    psi = (j[:, None] * (2 * np.pi / npsi) + np.array([-0.25, 0.25]) * (2 * np.pi / npsi))
    psi = np.repeat(psi, 4, axis=0).reshape(-1, 4, 2)                    # per child direction
    child = np.repeat(child, 2)
    return np.stack([rot[child], tilt[child], psi.reshape(-1)], axis=1)


def direction_vectors(rot, tilt):
    """Unit projection directions (third row of RELION's matrix A) for rot, tilt (radians)."""
    rot, tilt = np.asarray(rot, float), np.asarray(tilt, float)
    return np.stack([np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)],
                    axis=-1)


def local_orientations(order, previous, steps=2.0):
    """Orientations of order ``order`` (radians, (O, 3)) near ``previous`` (rot, tilt, psi):
    directions within ``steps`` angular steps of the previous direction and psi within
    ``steps`` steps of the previous psi (on a psi grid through the previous psi)."""
    step = np.deg2rad(angular_step(order))
    rot, tilt, vectors = _healpix(order)
    cos_dist = vectors @ direction_vectors(previous[0], previous[1])
    near = np.flatnonzero(cos_dist >= np.cos(steps * step))
    k = int(np.floor(steps))
    psi = previous[2] + step * np.arange(-k, k + 1)
    d = np.repeat(near, len(psi))
    return np.stack([rot[d], tilt[d], np.tile(psi, len(near))], axis=1)


def translation_grid(radius, step):
    """(T, 2) x, y offsets (pixels) on a square grid of ``step`` within a disc of ``radius``
    (always at least the origin)."""
    if step <= 0:
        raise ValueError("translation step must be positive, got %g" % step)
    k = int(np.floor(radius / step + 1e-9))
    g = np.arange(-k, k + 1) * step
    x, y = np.meshgrid(g, g, indexing="xy")
    keep = np.hypot(x, y) <= radius + 1e-9
    return np.stack([x[keep], y[keep]], axis=1)


def angular_distance(a, b):
    """Rotation angle (degrees) between RELION Euler angles ``a`` and ``b`` ((..., 3) radians):
    the angle of A_a A_b^T."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ma = euler_to_matrix(a[..., 0], a[..., 1], a[..., 2])
    mb = euler_to_matrix(b[..., 0], b[..., 1], b[..., 2])
    tr = np.einsum("...ij,...ij->...", ma, mb)
    return np.rad2deg(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def needed_step(resolution_A, radius_A):
    """Angular step (degrees) that moves a point at the particle radius by one resolution
    element: atan(resolution / radius)."""
    return float(np.rad2deg(np.arctan(resolution_A / radius_A)))


def next_order(order, max_order, stalled, resolution_A, radius_A):
    """The HEALPix order of the next iteration: one finer when the resolution stalled or the
    current step is coarser than :func:`needed_step`, never beyond ``max_order``."""
    if order >= max_order:
        return order
    if stalled or angular_step(order) > needed_step(resolution_A, radius_A):
        return order + 1
    return order
