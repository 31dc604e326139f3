"""numba kernels of the defect search (:mod:`polishplugin.core.defects`): the tile medians and
MADs and the per-pixel test, each one pass without temporaries (issue 14: the numpy version made
a dozen full-size float64 arrays per strip and copied every tile three times). Same float64
operations in the same order as the numpy code they replace, so the same numbers."""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _median(buf, n, counts, tmp):
    """Median of buf[:n] (finite; numpy's: the mean of the two middle values when n is even)
    by a histogram of 1024 bins between the extremes and a sort of the one or two bins that
    hold the middle ranks: three branch-free passes instead of a quickselect's mispredicted
    partitions. Exact: the bin index is a monotone function of the value."""
    lo = buf[0]
    hi = buf[0]
    for i in range(n):
        v = buf[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if lo == hi:
        return lo
    B = counts.size
    scale = (B - 1) / (hi - lo)
    counts[:] = 0
    for i in range(n):
        counts[min(int((buf[i] - lo) * scale), B - 1)] += 1
    half = n >> 1
    k1 = half - 1 if n % 2 == 0 else half         # the ranks wanted: k1 and half
    below = 0
    b1 = 0
    while below + counts[b1] <= k1:
        below += counts[b1]
        b1 += 1
    b2 = b1
    above = below + counts[b1]
    while above <= half:                          # the bin of rank half (b1 or a later one)
        b2 += 1
        above += counts[b2]
    m = 0
    for i in range(n):
        b = min(int((buf[i] - lo) * scale), B - 1)
        if b == b1 or b == b2:
            tmp[m] = buf[i]
            m += 1
    sel = np.sort(tmp[:m])
    a = sel[k1 - below]
    if n % 2:
        return a
    return (a + sel[half - below]) / 2


@numba.njit(cache=True, nogil=True)
def tile_row_stats(raw, gain, has_gain, y0, y1, tile, med, mad, buf):
    """Median and 1.4826 MAD of the finite gain-corrected counts raw * gain (gain > 0 only)
    of each tile of rows y0 .. y1 - 1 (the last tile of a row may be narrower), into med, mad
    (tx,); a tile without any: NaN and 0 (numpy.nanmedian and defects._mad of nothing)."""
    nx = raw.shape[1]
    counts = np.empty(1024, dtype=np.int64)
    tmp = np.empty(buf.size)
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
        m = _median(buf, n, counts, tmp)
        for k in range(n):
            buf[k] = abs(buf[k] - m)
        med[t] = m
        mad[t] = 1.4826 * _median(buf, n, counts, tmp)


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
