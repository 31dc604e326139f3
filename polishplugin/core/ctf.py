"""Contrast transfer function in RELION's convention (defocus U/V and angle, Cs, Q0, kV).

CTF(k) = -sin(chi(k)), chi = pi*lambda*dz(theta)*|k|^2 - (pi/2)*Cs*lambda^3*|k|^4 - phi - atan(Q0/sqrt(1-Q0^2))
with dz(theta) = -(U+V)/2 - (U-V)/2 * cos(2(theta - angle)) (underfocus positive in U, V as in
RELION STAR files), so that CTF(0) = Q0 > 0 and zeros lie where chi is a multiple of pi.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .fourier import freq_grid


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in A for an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2642598 / np.sqrt(v * (1.0 + v * 0.978466e-6))


@dataclass
class CtfParams:
    defocus_u: float          # A, underfocus positive
    defocus_v: float          # A
    defocus_angle: float      # degrees
    voltage: float = 300.0    # kV
    cs: float = 2.7           # mm
    amplitude_contrast: float = 0.1
    phase_shift: float = 0.0  # degrees
    bfactor: float = 0.0      # A^2, envelope exp(-B |k|^2 / 4)


def ctf_chi(p, ky, kx):
    """Phase aberration chi(k) for frequencies (1/A) ky, kx."""
    lam = electron_wavelength(p.voltage)
    k2 = ky ** 2 + kx ** 2
    theta = np.arctan2(ky, kx)
    dz = -0.5 * (p.defocus_u + p.defocus_v) - 0.5 * (p.defocus_u - p.defocus_v) * np.cos(
        2.0 * (theta - np.deg2rad(p.defocus_angle)))
    q0 = p.amplitude_contrast
    k3 = np.arctan(q0 / np.sqrt(1.0 - q0 * q0))
    return (np.pi * lam * dz * k2 + 0.5 * np.pi * p.cs * 1e7 * lam ** 3 * k2 ** 2
            - np.deg2rad(p.phase_shift) - k3)


@lru_cache(maxsize=8)
def _ctf_grid(ny, nx, pixel_size, crop=None):
    """|k|^2, cos 2 theta and sin 2 theta (theta = atan2(ky, kx)) on the fft2 grid, read-only:
    chi of any CTF on this grid is then a few multiply-adds (cos 2(theta - a) expanded).
    ``crop``: only the frequencies of a crop x crop grid (square boxes; indices 0..crop/2-1 and
    -crop/2..-1 of each axis)."""
    ky, kx = freq_grid(ny, nx, pixel_size)
    if crop is not None and crop < nx:
        keep = np.r_[0:crop // 2, nx - crop // 2:nx]
        ky, kx = ky[np.ix_(keep, keep)], kx[np.ix_(keep, keep)]
    k2 = ky ** 2 + kx ** 2
    theta = np.arctan2(ky, kx)
    out = (k2, np.cos(2.0 * theta), np.sin(2.0 * theta))
    for a in out:
        a.setflags(write=False)
    return out


def ctf_2d(p, n, pixel_size, ny=None, crop=None):
    """CTF on the unshifted fft2 grid of an (ny or n, n) box with the given pixel size (A);
    ``crop``: only on the frequencies of a crop x crop grid (square boxes).

    Same function as ``-sin(ctf_chi(p, ky, kx))`` (times the B-factor envelope), evaluated on a
    cached grid with cos 2(theta - a) = cos 2theta cos 2a + sin 2theta sin 2a (float rounding)."""
    k2, c2, s2 = _ctf_grid(int(ny or n), int(n), float(pixel_size),
                           None if crop is None or crop >= n else int(crop))
    lam = electron_wavelength(p.voltage)
    a = 2.0 * np.deg2rad(p.defocus_angle)
    half_sum = -0.5 * (p.defocus_u + p.defocus_v)
    half_diff = -0.5 * (p.defocus_u - p.defocus_v)
    q0 = p.amplitude_contrast
    const = -np.deg2rad(p.phase_shift) - np.arctan(q0 / np.sqrt(1.0 - q0 * q0))
    # chi = pi lam dz k2 + (pi/2) Cs lam^3 k2^2 + const, dz = half_sum + half_diff cos 2(theta - a)
    pl = np.pi * lam
    dzk = c2 * (pl * half_diff * np.cos(a))
    dzk += s2 * (pl * half_diff * np.sin(a))
    dzk += pl * half_sum + 0.5 * np.pi * p.cs * 1e7 * lam ** 3 * k2
    dzk *= k2
    dzk += const
    c = np.sin(dzk, out=dzk)
    np.negative(c, out=c)
    if p.bfactor:
        c *= np.exp(-p.bfactor * k2 / 4.0)
    return c


def ctf_zeros_1d(p, nzeros, direction_deg=None):
    """First ``nzeros`` zero crossings |k| (1/A) along one direction (default: the direction of
    defocus U), solved in closed form from chi(k) = -m*pi (used to check :func:`ctf_2d`)."""
    lam = electron_wavelength(p.voltage)
    theta = np.deg2rad(p.defocus_angle if direction_deg is None else direction_deg)
    dz = -0.5 * (p.defocus_u + p.defocus_v) - 0.5 * (p.defocus_u - p.defocus_v) * np.cos(
        2.0 * (theta - np.deg2rad(p.defocus_angle)))
    q0 = p.amplitude_contrast
    c0 = -np.deg2rad(p.phase_shift) - np.arctan(q0 / np.sqrt(1.0 - q0 * q0))
    a = 0.5 * np.pi * p.cs * 1e7 * lam ** 3
    b = np.pi * lam * dz
    out = []
    m = 0
    while len(out) < nzeros and m < 10 * nzeros + 10:
        # a u^2 + b u + c0 + m pi = 0 with u = k^2; b < 0 for underfocus
        c = c0 + m * np.pi
        disc = b * b - 4 * a * c
        if disc >= 0:
            u = (-b - np.sqrt(disc)) / (2 * a) if a > 0 else -c / b
            if u > 0:
                out.append(np.sqrt(u))
        m += 1
    return np.array(sorted(out)[:nzeros])
