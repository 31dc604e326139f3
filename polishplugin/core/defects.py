"""Hot and dead detector pixels found from the movie itself, and filling them.

A pixel's raw count summed over F frames is Poisson with mean mu / g, where g is its gain
(gain-corrected = raw * g) and mu the local expectation of the gain-corrected sum. mu is the
median of the gain-corrected sum over tiles (robust to the few defects and to particles), and
the spread there is max(1.4826 MAD, sqrt(mu g)) (robust spread with the Poisson floor). A pixel is
hot when it lies more than ``z`` spreads above mu, cold when more than ``z`` below; dead when it
counted nothing in any frame although exp(-mu / g) < exp(-z^2 / 2) (as improbable as a z-sigma
event), or when its gain is 0. RELION conceals such pixels before polishing (reference notes C3,
issues #484/#561: hot pixels hidden by the first motion correction come back otherwise).
"""
import logging

import numpy as np

log = logging.getLogger(__name__)


def _tile_stat(image, tile, func, vals=None):
    """func over (tile x tile) blocks, bilinearly interpolated back to the image grid. ``vals``
    (ty, tx): values already known (NaN: compute with func)."""
    ny, nx = image.shape
    ty, tx = max(1, int(np.ceil(ny / tile))), max(1, int(np.ceil(nx / tile)))
    vals = np.full((ty, tx), np.nan) if vals is None else np.array(vals, dtype=np.float64)
    for i in range(ty):
        for j in range(tx):
            if np.isnan(vals[i, j]):
                vals[i, j] = func(image[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile])
    if ty == 1 and tx == 1:
        return np.full(image.shape, vals[0, 0])
    # bilinear interpolation is separable: rows then columns, as two small matrix products
    wy = _linear_weights((np.arange(ny) + 0.5) / tile - 0.5, ty)
    wx = _linear_weights((np.arange(nx) + 0.5) / tile - 0.5, tx)
    bad = ~np.isfinite(vals)
    out = wy @ np.where(bad, 0.0, vals) @ wx.T
    if bad.any():  # NaN where a missing tile value has weight, as a direct interpolation
        out[(wy @ bad @ wx.T) > 0] = np.nan
    return out


def _linear_weights(coords, size):
    """(len(coords), size) weights of linear interpolation at ``coords`` (clipped to
    [0, size - 1], i.e. ndimage's order=1, mode="nearest") of ``size`` samples."""
    c = np.clip(coords, 0, size - 1)
    i0 = np.minimum(np.floor(c).astype(int), size - 1)
    i1 = np.minimum(i0 + 1, size - 1)
    t = c - i0
    w = np.zeros((len(c), size))
    rows = np.arange(len(c))
    w[rows, i0] += 1.0 - t
    w[rows, i1] += t
    return w


def _full_tile_median_mad(image, tile):
    """Median and 1.4826 MAD of every full (tile x tile) block without NaN, all blocks at once
    (the same numbers as :func:`numpy.nanmedian` and :func:`_mad` per block); NaN for the
    other blocks. Returns two (ty, tx) arrays."""
    ny, nx = image.shape
    ty, tx = max(1, int(np.ceil(ny / tile))), max(1, int(np.ceil(nx / tile)))
    med = np.full((ty, tx), np.nan)
    mad = np.full((ty, tx), np.nan)
    fy, fx = ny // tile, nx // tile
    if fy and fx:
        blocks = image[:fy * tile, :fx * tile].reshape(fy, tile, fx, tile).swapaxes(1, 2) \
            .reshape(fy, fx, tile * tile)
        ok = np.isfinite(blocks).all(axis=-1)
        b = blocks[ok]
        if len(b):
            m = np.median(b, axis=-1)
            med[:fy, :fx][ok] = m
            mad[:fy, :fx][ok] = 1.4826 * np.median(np.abs(b - m[:, None]), axis=-1)
    return med, mad


def _mad(a):
    a = a[np.isfinite(a)]
    return 1.4826 * float(np.median(np.abs(a - np.median(a)))) if a.size else 0.0


def detect_defects(frame_sum, nframes, gain=None, z=7.0, tile=128, known=None):
    """Bool mask (ny, nx) of hot, cold and dead pixels from the raw count sum over ``nframes``.

    frame_sum (ny, nx): raw counts summed over the frames; gain (ny, nx) or None: gain reference
    (multiply raw by it, 0 = dead); z: threshold in robust standard deviations; tile: size of the
    blocks of the local median/MAD; known: an existing defect map to merge (OR) with the result.
    """
    raw = np.asarray(frame_sum, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError("frame_sum must be 2D, got shape %s" % (raw.shape,))
    if nframes < 1:
        raise ValueError("nframes must be >= 1, got %d" % nframes)
    g = np.ones_like(raw) if gain is None else np.asarray(gain, dtype=np.float64)
    if g.shape != raw.shape:
        raise ValueError("gain %s does not match the frames %s" % (g.shape, raw.shape))
    zero_gain = ~(g > 0)
    corrected = np.where(zero_gain, np.nan, raw * g)
    med, mad = _full_tile_median_mad(corrected, tile)      # the clean full tiles at once
    mu = _tile_stat(corrected, tile, lambda b: np.nanmedian(b) if np.isfinite(b).any() else np.nan,
                    med)
    mu = np.where(np.isfinite(mu), mu, np.nanmedian(corrected))
    spread = np.maximum(_tile_stat(corrected, tile, _mad, mad),
                        np.sqrt(np.maximum(mu * g, 1e-12)))
    with np.errstate(invalid="ignore"):
        dev = (corrected - mu) / spread
        outlier = np.abs(dev) > z
        expected_raw = mu / np.where(zero_gain, 1.0, g)
        dead = (raw == 0) & (expected_raw > 0.5 * z * z)
    mask = zero_gain | np.nan_to_num(outlier, nan=False) | dead
    log.info("defects: %d hot, %d cold, %d dead of %d pixels", int(np.sum(dev > z)),
             int(np.sum((dev < -z) & ~dead)), int(np.sum(dead | zero_gain)), raw.size)
    if known is not None:
        mask |= np.asarray(known, dtype=bool)
    return mask


def fill_defects(image, mask, value=None):
    """Copy of ``image`` (..., ny, nx) with the pixels of ``mask`` (ny, nx) set to ``value``, or by
    default to the mean of the good pixels of each image (each frame or patch)."""
    out = np.array(image, dtype=np.float32 if np.asarray(image).dtype.kind in "ui" else None)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return out
    if value is not None:
        out[..., mask] = value
        return out
    good = out[..., ~mask]
    out[..., mask] = (good.mean(axis=-1) if good.size else 0.0)[..., None]
    return out


#: a frame (or image) with more non-finite pixels than this fraction is broken, not defective
MAX_NONFINITE_FRACTION = 0.05


def fill_nonfinite(image):
    """Set the NaN/infinite pixels of ``image`` (ny, nx; float, modified in place) to the mean of
    its finite pixels (0 when none is finite), like :func:`fill_defects`; returns their
    number. Non-finite pixels are defects: filled, never passed on to sums and FFTs."""
    bad = ~np.isfinite(image)
    n = int(bad.sum())
    if n:
        image[bad] = float(image[~bad].mean(dtype=np.float64)) if n < image.size else 0.0
    return n
