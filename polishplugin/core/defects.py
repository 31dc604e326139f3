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


def _mad(a):
    a = a[np.isfinite(a)]
    return 1.4826 * float(np.median(np.abs(a - np.median(a)))) if a.size else 0.0


def _tile_values(raw, g, tile, workers=1):
    """Median and 1.4826 MAD of the finite gain-corrected counts of every (tile x tile) block
    (the edge blocks smaller; pixels of gain <= 0 left out; a block without a value: NaN and 0,
    as :func:`numpy.nanmedian` and :func:`_mad`), a row of tiles at a time in ``workers``
    threads (numba kernel :func:`.defect_kernels.tile_row_stats`). Returns two (ty, tx)
    arrays."""
    from .defect_kernels import tile_row_stats
    ny, nx = raw.shape
    ty, tx = max(1, int(np.ceil(ny / tile))), max(1, int(np.ceil(nx / tile)))
    med = np.empty((ty, tx))
    mad = np.empty((ty, tx))
    raw = np.ascontiguousarray(raw)
    gain = np.zeros((1, 1), dtype=np.float32) if g is None else np.ascontiguousarray(g)

    def row(i):
        tile_row_stats(raw, gain, g is not None, i * tile, min((i + 1) * tile, ny), tile,
                       med[i], mad[i], np.empty(tile * tile))
    _each(row, range(ty), workers)
    return med, mad


def _each(func, items, workers):
    """func(item) for every item, in ``workers`` threads (numpy and the kernels release the
    GIL)."""
    items = list(items)
    if workers <= 1 or len(items) < 2:
        for it in items:
            func(it)
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(int(workers), len(items))) as ex:
        list(ex.map(func, items))


def detect_defects(frame_sum, nframes, gain=None, z=7.0, tile=128, known=None, strip=256,
                   workers=1):
    """Bool mask (ny, nx) of hot, cold and dead pixels from the raw count sum over ``nframes``.

    frame_sum (ny, nx): raw counts summed over the frames; gain (ny, nx) or None: gain reference
    (multiply raw by it, 0 = dead); z: threshold in robust standard deviations; tile: size of the
    blocks of the local median/MAD; known: an existing defect map to merge (OR) with the result.
    The pixel tests run ``strip`` rows at a time (memory: a few strips, not images, of float64),
    ``workers`` strips at once.
    """
    raw = np.asarray(frame_sum)
    if raw.ndim != 2:
        raise ValueError("frame_sum must be 2D, got shape %s" % (raw.shape,))
    if nframes < 1:
        raise ValueError("nframes must be >= 1, got %d" % nframes)
    g = None if gain is None else np.asarray(gain)
    if g is not None and g.shape != raw.shape:
        raise ValueError("gain %s does not match the frames %s" % (g.shape, raw.shape))
    ny, nx = raw.shape
    med, mad = _tile_values(raw, g, tile, workers)
    ty, tx = med.shape
    if ty == 1 and tx == 1:
        wy, wx = np.ones((ny, 1)), np.ones((nx, 1))
    else:   # bilinear interpolation of the tile values: separable, two small matrix products
        wy = _linear_weights((np.arange(ny) + 0.5) / tile - 0.5, ty)
        wx = _linear_weights((np.arange(nx) + 0.5) / tile - 0.5, tx)
    fallback = [] if np.isfinite(med).all() else [_global_median(raw, g, tile)]
    mask = np.zeros(raw.shape, dtype=bool)
    counts = np.zeros((-(-ny // strip), 3), dtype=np.int64)   # hot, cold, dead per strip

    from .defect_kernels import pixel_test
    raw_c = np.ascontiguousarray(raw)
    gain = np.zeros((1, 1), dtype=np.float32) if g is None else np.ascontiguousarray(g)

    def test(k):
        y0 = k * strip
        rows = slice(y0, min(y0 + strip, ny))
        mu = _interp_rows(med, wy[rows], wx)
        if not np.isfinite(mu).all():
            mu = np.where(np.isfinite(mu), mu, fallback[0])
        pixel_test(raw_c[rows], gain[rows] if g is not None else gain, g is not None, mu,
                   _interp_rows(mad, wy[rows], wx), float(z), mask[rows], counts[k])
    _each(test, range(len(counts)), workers)
    counts = counts.sum(axis=0)
    log.info("defects: %d hot, %d cold, %d dead of %d pixels", counts[0], counts[1], counts[2],
             raw.size)
    if known is not None:
        mask |= np.asarray(known, dtype=bool)
    return mask


def _interp_rows(vals, wy, wx):
    """Rows ``wy`` of the bilinear interpolation of tile values (NaN where a missing value has
    weight)."""
    bad = ~np.isfinite(vals)
    out = wy @ np.where(bad, 0.0, vals) @ wx.T
    if bad.any():
        out[(wy @ bad @ wx.T) > 0] = np.nan
    return out


def _global_median(raw, g, tile):
    """Median of all gain-corrected counts (the fallback where no tile has a value)."""
    parts = [c[np.isfinite(c)] for c in
             (_corrected(raw[y:y + tile], None if g is None else g[y:y + tile])
              for y in range(0, raw.shape[0], tile))]
    allv = np.concatenate(parts)
    return float(np.median(allv)) if allv.size else np.nan


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
