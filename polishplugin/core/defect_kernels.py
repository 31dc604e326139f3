"""numba kernels of the defect search (:mod:`polishplugin.core.defects`): the tile medians and
MADs and the per-pixel test, each one pass without temporaries (issue 14: the numpy version made
a dozen full-size float64 arrays per strip and copied every tile three times). Same float64
operations in the same order as the numpy code they replace, so the same numbers."""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def tile_row_stats(raw, gain, has_gain, y0, y1, tile, med, mad, buf):
    """Median and 1.4826 MAD of the finite gain-corrected counts raw * gain (gain > 0 only)
    of each tile of rows y0 .. y1 - 1 (the last tile of a row may be narrower), into med, mad
    (tx,); a tile without any: NaN and 0 (numpy.nanmedian and defects._mad of nothing)."""
    nx = raw.shape[1]
    for t in range(med.shape[0]):
        x0 = t * tile
        x1 = min(nx, x0 + tile)
        n = 0
        for i in range(y0, y1):
            for j in range(x0, x1):
                v = np.float64(raw[i, j])
                if has_gain:
                    g = np.float64(gain[i, j])
                    if not g > 0:
                        continue
                    v = v * g
                if np.isfinite(v):
                    buf[n] = v
                    n += 1
        if n == 0:
            med[t] = np.nan
            mad[t] = 0.0
            continue
        m = np.median(buf[:n])
        for k in range(n):
            buf[k] = abs(buf[k] - m)
        med[t] = m
        mad[t] = 1.4826 * np.median(buf[:n])


@numba.njit(cache=True, nogil=True)
def pixel_test(raw, gain, has_gain, mu, madi, z, mask, counts):
    """The test of :func:`polishplugin.core.defects.detect_defects` on a strip of rows: raw
    (r, nx) counts, gain (r, nx) (ignored unless has_gain), mu and madi (r, nx) the interpolated
    tile medians (NaN already replaced) and MADs. Writes mask (r, nx) and counts (hot, cold,
    dead)."""
    r, nx = mask.shape
    hot = cold = dead_n = 0
    lim = 0.5 * z * z
    for i in range(r):
        for j in range(nx):
            rs = np.float64(raw[i, j])
            gs = np.float64(gain[i, j]) if has_gain else 1.0
            zero_gain = not gs > 0
            m = mu[i, j]
            corrected = np.nan if zero_gain else rs * gs
            s1 = madi[i, j]
            s2 = np.sqrt(max(m * gs, 1e-12)) if m * gs == m * gs else np.nan
            spread = np.nan if (s1 != s1 or s2 != s2) else max(s1, s2)
            dev = (corrected - m) / spread
            expected = m / (1.0 if zero_gain else gs)
            dead = rs == 0 and expected > lim
            if dev > z:
                hot += 1
            if dev < -z and not dead:
                cold += 1
            if dead or zero_gain:
                dead_n += 1
            mask[i, j] = zero_gain or abs(dev) > z or dead
    counts[0] = hot
    counts[1] = cold
    counts[2] = dead_n
