"""Fourier grids, rings and shifts shared by every part of the science.

Conventions (used everywhere in core):
- arrays are (y, x) or (frame, y, x); FFTs are numpy's full, unshifted ``fft2`` layout;
- frequencies from :func:`freq_grid` are in cycles per Angstrom when a pixel size is given,
  cycles per pixel otherwise;
- shifting an image by ``(sx, sy)`` pixels moves its content towards +x, +y:
  ``F'(k) = F(k) exp(-2 pi i (kx sx + ky sy))`` (:func:`shift_phase`).
"""
import numpy as np


def freq_grid(ny, nx, pixel_size=1.0):
    """Return (ky, kx), each (ny, nx), in the unshifted fft2 layout, in 1/A (1/px if pixel_size=1)."""
    ky = np.fft.fftfreq(ny, d=pixel_size)
    kx = np.fft.fftfreq(nx, d=pixel_size)
    return np.meshgrid(ky, kx, indexing="ij")


def radius_grid(ny, nx, pixel_size=1.0):
    """|k| on the fft2 grid, in 1/A (1/px if pixel_size=1)."""
    ky, kx = freq_grid(ny, nx, pixel_size)
    return np.hypot(ky, kx)


def ring_index(n):
    """Integer Fourier ring of every pixel of an n x n fft2 grid: round(|k| * n).

    Ring r holds frequencies |k| in [r - 0.5, r + 0.5) pixels of the n-box, i.e. r / (n * px) 1/A.
    """
    ky, kx = freq_grid(n, n)
    return np.rint(np.hypot(ky, kx) * n).astype(np.int64)


def ring_average(values, rings, nrings=None):
    """Mean of ``values`` (..., ny, nx) over each Fourier ring; returns (..., nrings)."""
    if nrings is None:
        nrings = int(rings.max()) + 1
    flat = rings.ravel()
    keep = flat < nrings
    counts = np.bincount(flat[keep], minlength=nrings).astype(np.float64)
    v = values.reshape(values.shape[:-2] + (-1,))[..., keep]
    out = np.zeros(values.shape[:-2] + (nrings,), dtype=np.float64)
    for idx in np.ndindex(*values.shape[:-2]):
        out[idx] = np.bincount(flat[keep], weights=v[idx], minlength=nrings)
    return out / np.maximum(counts, 1)


def shift_phase(ny, nx, sx, sy):
    """Phase ramp that moves an image's content by (sx, sy) pixels (scalars or arrays broadcast
    against the (ny, nx) grid on the left): exp(-2 pi i (kx sx + ky sy))."""
    ky, kx = freq_grid(ny, nx)
    sx = np.asarray(sx, dtype=np.float64)[..., None, None]
    sy = np.asarray(sy, dtype=np.float64)[..., None, None]
    return np.exp(-2j * np.pi * (kx * sx + ky * sy))


def fourier_shift(image, sx, sy):
    """Shift a real image (y, x) by sub-pixel (sx, sy) with periodic wrap (band-limited)."""
    f = np.fft.fft2(image)
    return np.fft.ifft2(f * shift_phase(image.shape[-2], image.shape[-1], sx, sy)).real


def crop_center(image, ny, nx):
    """Central (ny, nx) window of the last two axes (box centre at n//2 kept at n//2)."""
    y0 = image.shape[-2] // 2 - ny // 2
    x0 = image.shape[-1] // 2 - nx // 2
    return image[..., y0:y0 + ny, x0:x0 + nx]


def pad_center(image, ny, nx, value=0.0):
    """Embed the last two axes in a larger (ny, nx) array, centre at n//2 kept at n//2."""
    out = np.full(image.shape[:-2] + (ny, nx), value, dtype=image.dtype)
    y0 = ny // 2 - image.shape[-2] // 2
    x0 = nx // 2 - image.shape[-1] // 2
    out[..., y0:y0 + image.shape[-2], x0:x0 + image.shape[-1]] = image
    return out


def half_transform_radius(n):
    """|k| in voxels of every voxel of an n^3 box's rfftn half transform (z, y, x >= 0 axes)."""
    k = np.fft.fftfreq(n) * n
    kx = np.arange(n // 2 + 1)
    return np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)


def half_transform_shells(n, pad=1):
    """Shell of every voxel of the half transform: RELION's ROUND(|k| / pad) (halves round up;
    on a grid padded ``pad`` times, the shell of the original box)."""
    return np.floor(half_transform_radius(n) / pad + 0.5).astype(np.int64)


def fsc(vol1, vol2, nrings=None):
    """Fourier shell correlation of two equally sized cubic volumes, one value per shell
    (shell s = round(|k| n)); up to Nyquist by default. Summed over the rfftn half transform as
    RELION's getFSC (the kx = 0 plane counts both members of its Friedel pairs, the rest one), so
    curves equal relion_postprocess's (BENCHMARKS.md, "Masked FSC against relion_postprocess")."""
    n = vol1.shape[0]
    f1, f2 = np.fft.rfftn(vol1), np.fft.rfftn(vol2)
    if nrings is None:
        nrings = n // 2 + 1
    shells = half_transform_shells(n).ravel()
    keep = shells < nrings
    s = shells[keep]

    def total(values):
        return np.bincount(s, values.ravel()[keep], minlength=nrings)
    num = total((f1 * np.conj(f2)).real)
    den = total(f1.real ** 2 + f1.imag ** 2) * total(f2.real ** 2 + f2.imag ** 2)
    return num / np.sqrt(np.maximum(den, 1e-300))


def shell_band(n, pixel_size, low_A=10.0, high_A=4.0):
    """Indices of the shells of :func:`fsc` (n-box, ``pixel_size`` A/px) whose resolution lies
    between low_A and high_A (both included)."""
    s = np.arange(n // 2 + 1)
    res = np.divide(n * pixel_size, s, out=np.full(len(s), np.inf), where=s > 0)
    return np.flatnonzero((res <= low_A) & (res >= high_A))


def resolution_at(curve, n, pixel_size, threshold=0.143):
    """Resolution (A) where a shell curve first drops below ``threshold`` (linear
    interpolation between shells); Nyquist if it never does. A curve with NaN or infinite
    values (maps with non-finite voxels) has no resolution: ValueError."""
    curve = np.asarray(curve)
    if not np.all(np.isfinite(curve)):
        raise ValueError("the FSC has NaN or infinite values at %d of %d shells (maps with "
                         "non-finite voxels): no resolution"
                         % (int(np.sum(~np.isfinite(curve))), len(curve)))
    shell = crossing_shell(curve, threshold)
    return 2.0 * pixel_size if shell is None else n * pixel_size / max(shell, 1e-6)


def crossing_shell(curve, threshold=0.143):
    """Shell (fractional: linear interpolation between shells) where a shell curve first drops
    below ``threshold``; None if it never does."""
    for s in range(1, len(curve)):
        if curve[s] < threshold:
            c0, c1 = curve[s - 1], curve[s]
            return s - 1 + ((c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0)
    return None
