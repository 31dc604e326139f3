"""Particle patches per frame and per-frame damage filters for the observation model
(seed zivanov2019 §2.1.3, eq. 12-16).

Patch (p, f) is the n x n window of frame f whose pixel (n//2, n//2) is the integer position
q_{p,f} = round(centre_p + track_{p,f}); the cut shift q - centre is what
:func:`polishplugin.core.motion.fit.fit_tracks` calls ``cut_shifts`` (CC read at track - cut).
Frames are consumed one at a time, so only one frame of the movie is ever in memory here.
"""
import numpy as np

from ..damage import exposure_filter, frame_doses
from ..fourier import radius_grid


def cut_positions(centres, tracks):
    """Integer cut positions round(centre + track), (P, F, 2) int64."""
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 1, 2)
    return np.rint(c + np.asarray(tracks, dtype=np.float64)).astype(np.int64)


def _cut_into(out, frame, x, y, n, fill):
    """Write into ``out`` (n, n) the window of ``frame`` with pixel (n//2, n//2) at (x, y);
    outside the frame: ``fill``."""
    ny, nx = frame.shape
    x0, y0 = x - n // 2, y - n // 2
    if x0 >= 0 and y0 >= 0 and x0 + n <= nx and y0 + n <= ny:
        out[...] = frame[y0:y0 + n, x0:x0 + n]
        return
    out[...] = fill
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + n, ny), min(x0 + n, nx)
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = frame[ya:yb, xa:xb]


def _filled_frames(frames, F, defects):
    """(f, frame, fill) for each of the F frames: the frame as float32 with its ``defects``
    replaced by the mean of its good pixels (float64 sums), and that fill value (the frame's
    mean without defects) for the parts of patches outside the micrograph. ``frames`` yields
    arrays, or (array, mean) pairs from a reader that summed each frame as it read it
    (:func:`polishplugin.programs.micrographs.summed_frames`: no pass for the mean here); a
    finite mean (a float64 sum of float32 pixels) means every pixel is finite: the fourth item
    yielded, ``finite``, is then True (no need to test the patches), else False."""
    bad_idx = None
    if defects is not None:
        defects = np.asarray(defects, dtype=bool)
        bad_idx = np.flatnonzero(defects)
        n_good = defects.size - bad_idx.size
        if not bad_idx.size:
            bad_idx = None
        else:
            work = np.empty(defects.shape, dtype=np.float32)   # the frame with defects filled
    nf = 0
    for f, frame in enumerate(frames):
        if f >= F:
            raise ValueError("more frames than the %d of the tracks" % F)
        mean = None
        if isinstance(frame, tuple):
            frame, mean = frame
        frame = np.asarray(frame, dtype=np.float32)
        if bad_idx is not None:
            fill = (float(frame.sum(dtype=np.float64)) - float(
                frame.ravel()[bad_idx].sum(dtype=np.float64))) / n_good if n_good else 0.0
            # filled once per frame (not per patch), in a buffer reused for every frame
            np.copyto(work, frame)
            work.ravel()[bad_idx] = fill
            frame = work
        else:
            fill = float(frame.mean(dtype=np.float64)) if mean is None else float(mean)
        yield f, frame, fill, mean is not None and bool(np.isfinite(mean))
        nf += 1
    if nf != F:
        raise ValueError("%d frames for tracks of %d frames" % (nf, F))


def _cut_plan(centres, tracks):
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape != (len(centres), tracks.shape[1], 2):
        raise ValueError("tracks %s do not match %d centres" % (tracks.shape, len(centres)))
    return centres, cut_positions(centres, tracks)


def extract_patches(frames, centres, tracks, n, defects=None, padded=False, fills=None):
    """Patches (P, F, n, n) float32 and cut shifts (P, F, 2) float64.

    frames: sequence or iterable of F gain-corrected (ny, nx) frames (read one at a time);
    centres (P, 2): refined centres (x, y) px; tracks (P, F, 2): displacements at which to cut;
    defects (ny, nx) bool or None: pixels replaced by the mean of the frame's good pixels, which
    also fills the parts of a patch outside the micrograph. ``padded``: the patches are the
    ``[..., :n]`` view of a (P, F, n, 2 (n//2 + 1)) buffer, which
    :func:`.observation.patch_spectra` can overwrite with their rfft2 half-planes.
    ``fills`` (F,): receives each frame's fill value.
    """
    centres, q = _cut_plan(centres, tracks)
    P, F = q.shape[:2]
    width = 2 * (n // 2 + 1) if padded else n
    patches = np.empty((P, F, n, width), dtype=np.float32)[..., :n]
    for f, frame, fill, _ in _filled_frames(frames, F, defects):
        if fills is not None:
            fills[f] = fill
        for p in range(P):
            _cut_into(patches[p, f], frame, q[p, f, 0], q[p, f, 1], n, fill)
    return patches, q - centres[:, None, :]


def patch_blocks(frames, centres, tracks, n, defects=None, block=16):
    """The patches of :func:`extract_patches` a frame and a block of at most ``block``
    particles at a time: yields (f, particle slice, patches (b, n, n) float32, cut shifts
    (b, 2)) for each frame f and block (the patches are a buffer reused for the next block; the
    frame's defects are filled once per frame). The same numbers as :func:`extract_patches`,
    with the memory of one block instead of the whole stack."""
    centres, q = _cut_plan(centres, tracks)
    P, F = q.shape[:2]
    B = max(1, min(P, int(block)))
    buf = np.empty((B, n, n), dtype=np.float32)
    for f, frame, fill, _ in _filled_frames(frames, F, defects):
        for p0 in range(0, P, B):
            s = slice(p0, min(P, p0 + B))
            for i, p in enumerate(range(s.start, s.stop)):
                _cut_into(buf[i], frame, q[p, f, 0], q[p, f, 1], n, fill)
            yield f, s, buf[:s.stop - s.start], q[s, f] - centres[s]


def extract_spectra(frames, centres, tracks, n, m=None, defects=None, workers=1, check=None,
                    out=None, fills=None, chunk=16, store=None):
    """Spectra of the patches of :func:`extract_patches` without the patch stack: each frame's
    patches are cut, ``chunk`` at a time, into one (chunk, n, n) buffer, Fourier transformed
    (rfft2, float32 -> complex64; with ``workers`` > 1 each of that many threads takes a
    contiguous share of the particles: the same numbers) and only the frequencies of an m x m
    grid are kept
    (:func:`.observation.crop_plane`, default m = n: everything). One transform per
    particle-frame; memory P F m (m/2+1) complex64 instead of P F n (n+2) float32.
    ``check(buffer)``: called on each frame's patches before their transform (e.g. a
    finiteness test), except those of a frame known to be finite (given with a finite mean).
    ``out``: a C-contiguous complex64 array of at least P F m (m//2+1) elements to hold the spectra
    (a buffer reused from micrograph to micrograph: no page faults
    of a fresh allocation). ``store``: a :class:`.spectra_store.SpectraStore` of (P, F, m) that
    receives the spectra instead (e.g. on scratch disk); it is returned in place of the array,
    with its ``power_sums`` (the backend's ``power_sums`` of all the spectra, summed as each
    block is transformed: no second pass over them).
    The x transform keeps only the m//2+1 columns before the y transform
    (the same numbers as rfft2, less work). ``fills`` (F,): receives each frame's fill value.
    Returns (spectra (P, F, m, m//2+1) complex64 or ``store``, cut shifts (P, F, 2))."""
    import scipy.fft
    from .spectra_store import SpectraStore, plane_power
    centres, q = _cut_plan(centres, tracks)
    P, F = q.shape[:2]
    m = n if m is None else int(m)
    mh = m // 2 + 1
    keep = store
    if store is None:
        store = SpectraStore(P, F, m, n, buffer=out)
    elif store.shape != (P, F, m, mh):
        raise ValueError("spectra store %s for spectra %s" % (store.shape, (P, F, m, mh)))
    B = max(1, min(P, int(chunk)))
    W = max(1, min(int(workers or 1), (P + B - 1) // B))
    # W > 1: each thread cuts and transforms its own contiguous share of the particles with
    # one-thread transforms (pocketfft's own threads on 16-patch batches mostly wait)
    edges = np.linspace(0, P, W + 1).astype(int)
    bufs = [np.empty((B, n, n), dtype=np.float32) for _ in range(W)]
    # each share's sums of |X|^2 over its particles, per frame, while the spectra are in cache
    powers = [np.zeros((F, m, mh)) for _ in range(W)]

    def one_share(w, f, frame, fill, finite):
        buf = bufs[w]
        for p0 in range(edges[w], edges[w + 1], B):     # a few particles at a time
            b = min(B, edges[w + 1] - p0)
            for p in range(b):
                _cut_into(buf[p], frame, q[p0 + p, f, 0], q[p0 + p, f, 1], n, fill)
            if check is not None and not finite:
                check(buf[:b])
            spec = scipy.fft.rfft(buf[:b], axis=-1, workers=1)[..., :mh]
            kept = store.put(p0, f, scipy.fft.fft(spec, axis=-2, workers=1, overwrite_x=True))
            powers[w][f] += plane_power(kept)

    pool = None
    if W > 1:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(W, thread_name_prefix="spectra")
    try:
        for f, frame, fill, finite in _filled_frames(frames, F, defects):
            if fills is not None:
                fills[f] = fill
            if pool is None:
                one_share(0, f, frame, fill, finite)
            else:   # the frame buffer is reused: every share done before the next frame
                for job in [pool.submit(one_share, w, f, frame, fill, finite)
                            for w in range(W)]:
                    job.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    store.power_sums = sum(powers[1:], powers[0])
    return (store.array if keep is None else store), q - centres[:, None, :]


def _window_defects(q, n, ys, xs):
    """Per frame, the indices of the pixels (ys, xs) inside the n x n window cut at q (F, 2)
    and their (row, column) in it: a list of F (index, i, j) triples (None when none is inside)."""
    x0, y0 = q[:, 0] - n // 2, q[:, 1] - n // 2
    near = np.flatnonzero((xs >= x0.min()) & (xs < x0.max() + n) &
                          (ys >= y0.min()) & (ys < y0.max() + n))
    out = []
    for f in range(len(q)):
        i, j = ys[near] - y0[f], xs[near] - x0[f]
        inside = (i >= 0) & (i < n) & (j >= 0) & (j < n)
        out.append((near[inside], i[inside], j[inside]) if inside.any() else None)
    return out


def correct_defect_spectra(spectra, q, n, ys, xs, values, fills):
    """Fill defects found after the transforms, in the spectra: patch (p, f) (n x n, cut at q
    (P, F, 2) int, spectra (P, F, m, m//2+1) on the grid of :func:`extract_spectra`, an array
    or a :class:`.spectra_store.SpectraStore`) held the
    value ``values[d]`` at defect pixel d = (ys[d], xs[d]) where filling puts ``fills[f]``;
    by linearity of the DFT its spectrum gains
        dX(ky, kx) = sum_{d in patch} (fills[f] - values[d]) exp(-2 pi i (ky i_d + kx j_d) / n)
    (i_d, j_d: the pixel's row and column in the patch). ``values`` are estimates of the
    per-frame values (the frame mean of the raw sum times the gain): the static part of a hot
    pixel is removed exactly, its Poisson fluctuation (a few counts) stays. Modifies
    ``spectra``; returns the number of particle-frames corrected."""
    from .observation import crop_rows
    P, F, m, mh = spectra.shape
    add = spectra.add if hasattr(spectra, "add") else None
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    if not len(ys):
        return 0
    values = np.asarray(values, dtype=np.float64)
    ky = crop_rows(n, m).astype(np.float64)
    kx = np.arange(mh, dtype=np.float64)
    count = 0
    for p in range(P):
        for f, hit in enumerate(_window_defects(q[p], n, ys, xs)):
            if hit is None:
                continue
            d, i, j = hit
            ey = np.exp(-2j * np.pi / n * np.outer(ky, i)) * (fills[f] - values[d])
            ex = np.exp(-2j * np.pi / n * np.outer(j, kx))
            delta = (ey @ ex).astype(spectra.dtype)
            if add is None:
                spectra[p, f] += delta
            else:
                add(p, f, delta)
            count += 1
    return count


def fill_patch_defects(patches, q, ys, xs, fills):
    """Real-space counterpart of :func:`correct_defect_spectra` for a patch stack
    (P, F, n, n) cut at q: the pixels (ys, xs) set to ``fills[f]``. Modifies ``patches``."""
    P, F, n = patches.shape[:3]
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    if not len(ys):
        return
    for p in range(P):
        for f, hit in enumerate(_window_defects(q[p], n, ys, xs)):
            if hit is not None:
                patches[p, f, hit[1], hit[2]] = fills[f]


def damage_filters(n, pixel_size, nframes, dose_per_frame, pre_exposure=0.0, voltage=300.0):
    """Per-frame amplitude damage filters (F, n, n) on the fft2 grid: Grant & Grigorieff exposure
    filter (core/damage.py) at each frame's mid-frame accumulated exposure."""
    k = radius_grid(n, n, pixel_size)
    return exposure_filter(k, frame_doses(nframes, dose_per_frame, pre_exposure), voltage)


def _smooth(k):
    """Whether k has no prime factor above 5 (pocketfft's cheapest lengths per element)."""
    for q in (2, 3, 5):
        while k % q == 0:
            k //= q
    return k == 1


def patch_size(box, pixel_size, max_defocus, resolution, voltage=300.0, cap=1.4):
    """Patch size (px) that holds a particle's CTF-delocalised signal: the box plus twice the
    delocalisation lambda * defocus * k of the highest frequency used, k = 1 / ``resolution``
    (A; a wave of frequency k is displaced by lambda dz k), at most ``cap`` times the box,
    rounded to an even length with prime factors 2, 3 and 5 only: the smallest such at or above
    that size, or where it would pass the cap, the largest within it (not below the box; 216 px
    for a 160 px box, not 224 = 2^5 7: the cropped patch transform 10-14 % cheaper, the whole
    per-micrograph work 7 %, tracks as accurate). Signal outside the box is signal the CC uses;
    but at 2-3 um defocus and 3.7 A the full delocalisation (box + 220 px at 1.2 A/px) costs more
    than it gives: patches of 1.4 x the box tracked as well as 2 x the box at particle SNRs
    0.007 and 0.035, with 1.3x less CPU and memory (BENCHMARKS.md, issue 14)."""
    from ..ctf import electron_wavelength
    box = int(box)
    deloc_px = electron_wavelength(voltage) * abs(max_defocus) / max(resolution, 1e-3) / pixel_size
    want = max(box, int(np.ceil(box + 2.0 * deloc_px)))
    fast = [k for k in range(box + box % 2, max(box, int(cap * box)) + 1, 2) if _smooth(k)]
    above = [k for k in fast if k >= want]
    if above or fast:
        return above[0] if above else fast[-1]
    n = box + box % 2                   # no such length between the box and the cap
    while not _smooth(n):
        n += 2
    return n