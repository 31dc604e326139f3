"""Ground-truth volumes, half maps and masks for simulations (arrays only, no files).

All volumes are (z, y, x) float32 cubes with the centre at voxel n//2.
"""
import logging

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

CA_STEP_A = 3.8       # distance between consecutive C-alpha atoms
BLOB_SIGMA_A = 1.6    # Gaussian width of one pseudo-atom


def _shell_index(n):
    k = np.fft.fftfreq(n)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)


def _gaussian_splat(points_px, n, sigma_px):
    """Sum of unit Gaussians of width sigma_px at (x, y, z) pixel positions: trilinear splat onto the
    grid, then Gaussian blur in Fourier space (band-limited, fast for many points)."""
    grid = np.zeros((n, n, n))
    base = np.floor(points_px).astype(int)
    frac = points_px - base
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                w = (np.where(dx, frac[:, 0], 1 - frac[:, 0]) * np.where(dy, frac[:, 1], 1 - frac[:, 1])
                     * np.where(dz, frac[:, 2], 1 - frac[:, 2]))
                idx = (base + [dx, dy, dz]) % n
                np.add.at(grid, (idx[:, 2], idx[:, 1], idx[:, 0]), w)
    k = _shell_index(n)
    f = np.fft.fftn(grid) * np.exp(-2.0 * (np.pi * sigma_px * k) ** 2)
    return np.fft.ifftn(f).real


def pseudo_protein(n, pixel_size, rng, n_atoms=None, radius_A=None, n_chains=4):
    """Random-walk chains of Gaussian pseudo-atoms (C-alpha spacing 3.8 A, persistent direction)
    confined to a sphere: a volume that looks like a globular protein at low resolution.

    radius_A defaults to a quarter of the box; n_atoms to about one residue per 130 A^3 of the sphere.
    """
    radius = radius_A if radius_A is not None else 0.25 * n * pixel_size
    if n_atoms is None:
        n_atoms = int(4.0 / 3.0 * np.pi * radius ** 3 / 130.0)
    per_chain = int(np.ceil(n_atoms / n_chains))
    atoms = []
    for _ in range(n_chains):
        pos = rng.normal(size=3)
        pos *= 0.5 * radius * rng.uniform() ** (1 / 3) / np.linalg.norm(pos)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        for _ in range(per_chain):
            nd = d + 0.6 * rng.normal(size=3)
            nd /= np.linalg.norm(nd)
            new = pos + CA_STEP_A * nd
            if np.linalg.norm(new) >= radius:           # turn back towards the centre
                nd = -pos / np.linalg.norm(pos) + 0.3 * rng.normal(size=3)
                nd /= np.linalg.norm(nd)
                new = pos + CA_STEP_A * nd
            pos, d = new, nd
            atoms.append(pos)
    atoms = np.array(atoms[:n_atoms]) / pixel_size + n // 2
    return _gaussian_splat(atoms, n, BLOB_SIGMA_A / pixel_size).astype(np.float32)


def _fourier_crop(vol, n):
    """Keep the n^3 lowest frequencies of a cubic volume (band-limited resampling; index 0 stays at
    position 0)."""
    m = vol.shape[0]
    f = np.fft.fftn(vol)
    idx = np.r_[0:(n + 1) // 2, m - n // 2:m]
    return np.fft.ifftn(f[np.ix_(idx, idx, idx)]).real * (n / m) ** 3


def lowpass(volume, resolution_A, pixel_size, edge_shells=2.0):
    """Raised-cosine low-pass at 1/resolution_A, over ``edge_shells`` Fourier shells."""
    n = volume.shape[0]
    r = _shell_index(n) * n                           # shell (px of the n box)
    r0 = n * pixel_size / resolution_A
    w = np.clip((r - r0) / edge_shells + 0.5, 0.0, 1.0)
    filt = 0.5 + 0.5 * np.cos(np.pi * w)
    return np.fft.ifftn(np.fft.fftn(volume) * filt).real.astype(np.float32)


def volume_from_model(path_or_structure, n, pixel_size, resolution, oversample=2):
    """Electron scattering potential of an atomic model (gemmi.DensityCalculatorE, electron form
    factors), model centred at voxel n//2, sampled on an (oversample * n)^3 grid with a small blur,
    Fourier-cropped to n^3 and low-passed at ``resolution`` A (:func:`lowpass`).

    Raises ValueError if the model does not fit in the box.
    """
    import gemmi

    st = (gemmi.read_structure(str(path_or_structure)) if not isinstance(path_or_structure, gemmi.Structure)
          else path_or_structure.clone())
    st.remove_hydrogens()
    model = st[0]
    xyz = np.array([a.pos.tolist() for ch in model for res in ch for a in res])
    if len(xyz) == 0:
        raise ValueError("the model has no atoms")
    box = n * pixel_size
    centre = 0.5 * (xyz.min(0) + xyz.max(0))
    if np.any(xyz.max(0) - xyz.min(0) > box - 4 * pixel_size):
        raise ValueError("model extent %s A does not fit a %d px box at %.3f A/px"
                         % (np.round(xyz.max(0) - xyz.min(0), 1), n, pixel_size))
    shift = (n // 2) * pixel_size - centre
    model.transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*shift)))
    st.cell = gemmi.UnitCell(box, box, box, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    m = oversample * n
    fine = pixel_size / oversample
    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2 * pixel_size
    # blur so the finely sampled potential is band-limited (amplitude e^-3 at the fine Nyquist)
    dc.blur = 48.0 * fine ** 2
    dc.set_grid_cell_and_spacegroup(st)
    dc.grid.set_size(m, m, m)
    dc.add_model_density_to_grid(model)
    grid = np.array(dc.grid, copy=True).transpose(2, 1, 0)       # gemmi (x, y, z) -> (z, y, x)
    vol = _fourier_crop(grid.astype(np.float64), n)
    log.debug("model with %d atoms -> %d^3 map at %.3f A/px", len(xyz), n, pixel_size)
    return lowpass(vol, resolution, pixel_size)


def target_fsc(k, k_res, steepness=8.0):
    """FSC between half maps assumed by :func:`half_maps`: 1 / (1 + c (k/k_res)^p), c = 1/0.143 - 1,
    so FSC(k_res) = 0.143 (0.977 at k_res/2, 0.04 at 1.2 k_res for p = 8)."""
    c = 1.0 / 0.143 - 1.0
    return 1.0 / (1.0 + c * (np.asarray(k) / k_res) ** steepness)


def half_maps(truth, rng, fsc_resolution_A, pixel_size, steepness=8.0, floor=1e-3):
    """Two half maps = truth + independent Gaussian noise, coloured per Fourier shell.

    Model: half_j = truth + n_j with E|N_j(k)|^2 = S(k) (1 - f(k)) / f(k), S(k) the truth's shell
    power and f = :func:`target_fsc`, so the expected FSC between the halves, S / (S + N), is f(k)
    and crosses 0.143 at ``fsc_resolution_A``. The noise power has a floor of ``floor`` x the mean
    shell power (noise also where the truth has none).
    """
    truth = np.asarray(truth, dtype=np.float64)
    n = truth.shape[0]
    kr = _shell_index(n)
    shells = np.rint(kr * n).astype(int)
    ft = np.fft.fftn(truth)
    power = np.bincount(shells.ravel(), (np.abs(ft) ** 2).ravel()) / np.maximum(
        np.bincount(shells.ravel()), 1)
    f = target_fsc(np.arange(len(power)) / (n * pixel_size), 1.0 / fsc_resolution_A, steepness)
    noise_power = np.maximum(power * (1.0 - f) / np.maximum(f, 1e-12), floor * power[1:n // 2].mean())
    amp = np.sqrt(noise_power[shells] / n ** 3)      # white noise of unit variance has E|W|^2 = n^3
    out = []
    for _ in range(2):
        w = np.fft.fftn(rng.standard_normal((n, n, n)))
        out.append((truth + np.fft.ifftn(w * amp).real).astype(np.float32))
    return out[0], out[1]


def soft_mask(volume, threshold, extend_px=3.0, soft_px=6.0):
    """1 where volume > threshold, dilated by ``extend_px``, raised-cosine edge of ``soft_px``."""
    binary = np.asarray(volume) > threshold
    if not binary.any():
        raise ValueError("no voxel above the mask threshold %g" % threshold)
    d = ndimage.distance_transform_edt(~binary)
    mask = np.zeros(binary.shape, dtype=np.float32)
    mask[d <= extend_px] = 1.0
    ramp = (d > extend_px) & (d < extend_px + soft_px)
    mask[ramp] = 0.5 + 0.5 * np.cos(np.pi * (d[ramp] - extend_px) / soft_px)
    return mask
