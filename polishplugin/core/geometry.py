"""Orientations in RELION's convention: ZYZ Euler angles (rot, tilt, psi), in radians here.

``A = Rz(psi) Ry(tilt) Rz(rot)`` with passive rotations, as RELION's Euler_angles2matrix.
A projection image is p(x, y) = integral over z of V(A^T (x, y, z)); its Fourier transform is
the central slice F3(A^T (kx, ky, 0)).
"""
import numpy as np


def euler_to_matrix(rot, tilt, psi):
    """3x3 rotation (or (..., 3, 3) for array inputs) for RELION Euler angles in radians."""
    rot, tilt, psi = np.broadcast_arrays(np.asarray(rot, float), np.asarray(tilt, float),
                                         np.asarray(psi, float))
    ca, sa = np.cos(rot), np.sin(rot)
    cb, sb = np.cos(tilt), np.sin(tilt)
    cg, sg = np.cos(psi), np.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    a = np.empty(rot.shape + (3, 3))
    a[..., 0, 0] = cg * cc - sg * sa
    a[..., 0, 1] = cg * cs + sg * ca
    a[..., 0, 2] = -cg * sb
    a[..., 1, 0] = -sg * cc - cg * sa
    a[..., 1, 1] = -sg * cs + cg * ca
    a[..., 1, 2] = sg * sb
    a[..., 2, 0] = sc
    a[..., 2, 1] = ss
    a[..., 2, 2] = cb
    return a


def random_orientations(n, rng):
    """``n`` orientations uniform on SO(3): (rot, tilt, psi) arrays in radians."""
    rot = rng.uniform(-np.pi, np.pi, n)
    tilt = np.arccos(rng.uniform(-1.0, 1.0, n))
    psi = rng.uniform(-np.pi, np.pi, n)
    return rot, tilt, psi
