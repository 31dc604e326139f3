"""Between the padded half Fourier grid of RELION's back-projector and a real-space map at the
original box, in RELION's conventions (BackProjector::reconstruct and windowToOridimRealSpace of
RELION 3.1, the map ``--external_reconstruct`` must return):

- grid: (P, P, P//2 + 1), P = pad * ori, FFTW half layout with the origin at [0, 0, 0], values
  scaled like RELION's image transforms, so the map is ori^2 x the inverse transform (scipy's:
  the same sums as numpy's, faster on the padded grid);
- the inverse transform is fftshifted (centre voxel ori//2), windowed to ori^3 in real space,
  soft-masked outside a sphere of radius ori/2 (3-voxel raised cosine towards the mean value
  outside, RELION's softMaskOutsideMap) and divided by the transform of the trilinear kernel,
  sinc^2(r / (ori pad)) with r the distance to the centre (RELION's griddingCorrect).
"""
import numpy as np
import scipy.fft

MASK_EDGE = 3.0


def _radius(n):
    c = np.arange(n) - n // 2
    return np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)


def gridding_kernel(ori, pad):
    """sinc^2(r / (ori pad)) on the ori^3 box (RELION's radial trilinear correction)."""
    return np.sinc(_radius(ori) / (ori * pad)) ** 2


def soft_mask_outside(vol, radius=None, edge=MASK_EDGE):
    """RELION's softMaskOutsideMap: beyond ``radius`` (default n/2) blend towards the weighted
    mean of the voxels outside, fully replaced beyond radius + edge."""
    n = vol.shape[0]
    radius = n / 2.0 if radius is None else radius
    r = _radius(n)
    w = np.where(r < radius, 0.0, np.where(r > radius + edge, 1.0,
                 0.5 + 0.5 * np.cos(np.pi * (radius + edge - r) / edge)))
    bg = float((w * vol).sum() / w.sum()) if w.sum() > 0 else 0.0
    return (1.0 - w) * vol + w * bg


def half_to_map(fhalf, ori, pad):
    """Real-space map (ori^3, float64) of a padded half-grid transform (RELION conventions)."""
    size = fhalf.shape[0]
    if size != int(round(pad * ori)) or fhalf.shape != (size, size, size // 2 + 1):
        raise ValueError("half grid of shape %s does not match box %d x padding %g"
                         % (fhalf.shape, ori, pad))
    big = np.fft.fftshift(scipy.fft.irfftn(fhalf, s=(size,) * 3)) * float(ori) ** 2
    o = size // 2 - ori // 2
    vol = big[o:o + ori, o:o + ori, o:o + ori]
    return soft_mask_outside(vol) / gridding_kernel(ori, pad)


def map_to_half(vol, pad):
    """The padded half-grid transform whose :func:`half_to_map` is ``vol`` (up to the soft mask
    outside the sphere): the gridding correction undone, zero-padded, transformed."""
    ori = vol.shape[0]
    size = int(round(pad * ori))
    big = np.zeros((size,) * 3)
    o = size // 2 - ori // 2
    big[o:o + ori, o:o + ori, o:o + ori] = vol * gridding_kernel(ori, pad)
    return scipy.fft.rfftn(np.fft.ifftshift(big)) / float(ori) ** 2
