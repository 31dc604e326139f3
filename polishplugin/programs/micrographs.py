"""Per-micrograph file work shared by the movie programs (polish, train, bfactors): the one read
of a movie (:class:`MovieOnce`), defect masks, frames with non-finite pixels filled, and the loop
over micrographs in which one failure fails only its micrograph."""
import logging
import os

import numpy as np

from ..core.defects import MAX_NONFINITE_FRACTION, detect_defects, fill_nonfinite
from ..io.atomic import atomic_path, atomic_text
from ..io.errors import InputError
from ..io.movies import Movie, read_gain

log = logging.getLogger(__name__)


def _check_nonfinite(path, what, n, size):
    if n > MAX_NONFINITE_FRACTION * size:
        raise InputError(path, "%s: %d of %d pixels are NaN or infinite (more than %g%%: "
                         "broken data, not defects)" % (what, n, size,
                                                        100 * MAX_NONFINITE_FRACTION))


def known_defects(mic, extra=None, gain=None):
    """Defects known before reading the movie (ny, nx) bool: the pixels of zero gain, those its
    motion correction listed and ``extra`` (a user's defect map)."""
    known = np.zeros(mic.shape, dtype=bool) if extra is None else np.array(extra, dtype=bool)
    if gain is not None:
        known |= ~(gain > 0)
    if len(mic.hot_pixels):
        hp = np.rint(mic.hot_pixels).astype(int)
        ok = (hp[:, 0] >= 0) & (hp[:, 1] >= 0) & (hp[:, 0] < mic.shape[1]) & \
            (hp[:, 1] < mic.shape[0])
        known[hp[ok, 1], hp[ok, 0]] = True
    return known


def micrograph_defects(mic, first, last, disabled=False, extra=None, raw_sum=None, workers=1):
    """Defect mask (ny, nx) of a micrograph for frames [first, last): hot and dead pixels found
    from the raw counts (:func:`polishplugin.core.defects.detect_defects`), non-finite pixels,
    and the :func:`known_defects`. With ``disabled`` only the pixels of zero gain, or None
    without a gain reference. ``raw_sum`` (modified: its non-finite pixels are filled) saves
    reading the movie again; ``workers``: its decoding threads otherwise."""
    gain = read_gain(mic.gain) if mic.gain else None
    if disabled:
        return None if gain is None else gain == 0
    if raw_sum is None:
        with Movie(mic.movie, workers=workers) as raw:  # raw counts: the Poisson test needs them
            raw_sum = raw.sum(first, last)
    known = known_defects(mic, extra)
    nonfinite = ~np.isfinite(raw_sum)
    if nonfinite.any():
        _check_nonfinite(mic.movie, "sum of frames %d-%d" % (first + 1, last),
                         int(nonfinite.sum()), raw_sum.size)
        fill_nonfinite(raw_sum)
        known |= nonfinite
    return detect_defects(raw_sum, last - first, gain, known=known)


def summed_frames(movie, first, last, gain, total, tally=None, nonfinite=None, known=None):
    """Frames ``first`` .. ``last - 1`` of an open raw :class:`Movie` (no gain), for reading a
    movie once, each yielded as a pair (frame, its mean): NaN/infinite pixels set to the mean of
    the finite ones, their number added to ``tally["nonfinite"]`` (a frame with more than
    :data:`MAX_NONFINITE_FRACTION` of them raises :class:`InputError`) and their flat indices
    to the set ``nonfinite`` (integer samples are always finite and not tested), the raw frame
    added to ``total`` ((ny, nx): the raw sum the defect search needs; float32 holds integer
    counts exactly up to 2^24; None: not summed), then multiplied by ``gain`` (or None), the pixels
    of ``known`` ((ny, nx) bool or None) set to the mean of the others (in place: the frame's mean
    is then that fill value, as
    :func:`polishplugin.core.motion.patches.extract_spectra` fills with). Conversion, raw sum,
    gain and the mean's sum are one pass over each block of decoded rows
    (:func:`polishplugin.core.frame_pass.frame_rows`, :meth:`Movie.pieces`)."""
    from ..core.frame_pass import frame_rows
    bad_idx = None if known is None else np.flatnonzero(known)
    if bad_idx is not None and not 0 < bad_idx.size < known.size:
        bad_idx = None
    if gain is not None:
        gain = np.ascontiguousarray(gain, dtype=np.float32)
    zeroed = False
    if gain is not None and bad_idx is not None and \
            not np.isfinite(gain.ravel()[bad_idx]).all():
        # a NaN or infinite gain (always a known pixel) would spoil the frame's sum: a copy
        # with gain 0 at the known pixels, which then add exactly 0 to it
        gain = gain.copy()
        gain.ravel()[bad_idx] = 0.0
        zeroed = True
    integer = np.issubdtype(getattr(movie, "dtype", np.float32), np.integer)
    for i in range(first, last):
        if integer:
            frame = np.empty(movie.shape, dtype=np.float32)
            s = 0.0
            for y0, y1, raw, flip in movie.pieces(i):
                s += frame_rows(raw, flip, None if gain is None else gain[y0:y1],
                                None if total is None else total[y0:y1], frame[y0:y1])
        else:
            frame = movie.frame(i)
            bad = ~np.isfinite(frame)
            n = int(np.count_nonzero(bad))
            if n:
                _check_nonfinite(movie.path, "frame %d" % (i + 1), n, frame.size)
                frame[bad] = float(frame[~bad].mean(dtype=np.float64))
                if tally is not None:
                    tally["nonfinite"] = tally.get("nonfinite", 0) + n
                if nonfinite is not None:
                    nonfinite.update(np.flatnonzero(bad).tolist())
            s = frame_rows(frame, False, gain, total, frame)
        if bad_idx is not None:
            flat = frame.ravel()
            if not zeroed:      # the known pixels' values out of the sum
                s -= float(flat[bad_idx].sum(dtype=np.float64))
            mean = s / (flat.size - bad_idx.size)
            flat[bad_idx] = mean
        else:
            mean = s / frame.size
        yield frame, mean


_GAIN = {}


def shared_gain(path):
    """:func:`read_gain` of ``path``, kept (read-only) for the next micrographs of the job, which
    share one gain reference, and for the worker processes forked afterwards (one copy of its
    pages, not one per process); re-read when another path or a changed file is asked for."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if key not in _GAIN:
        _GAIN.clear()
        gain = read_gain(path)
        gain.flags.writeable = False
        _GAIN[key] = gain
    return _GAIN[key]


class MovieOnce:
    """The one read of a micrograph's movie (frames ``first`` .. ``last - 1``) by the motion
    programs (polish, train): the raw frames are summed as they are read (:func:`summed_frames`:
    ``total``, the defect search's input), gain-corrected, with the defects known beforehand
    (:func:`known_defects`, ``extra``: a user's defect map) filled; :meth:`late_defects`, called
    once every frame has been read, gives the defects found from that sum for correction in the
    patch spectra (:func:`polishplugin.core.motion.micrograph.read_spectra`). With
    ``disabled`` only the pixels of zero gain are filled. With ``threads`` > 1 the next frame is
    decoded (``threads // 2`` decoding threads) while this one is worked on. Use as a context
    manager around the reading; ``tally`` (non-finite pixels), ``found`` ("pixels": defects in
    all, "flat": their flat indices outside the zero-gain pixels) and ``total`` stay after it."""

    def __init__(self, mic, first, last, disabled=False, extra=None, threads=1):
        self.mic, self.first, self.last = mic, first, last
        self.disabled, self.threads = disabled, max(1, int(threads or 1))
        self.gain = shared_gain(mic.gain) if mic.gain else None
        if disabled:
            self.known = None if self.gain is None else ~(self.gain > 0)
        else:
            self.known = known_defects(mic, extra, self.gain)
        self.total = np.zeros(mic.shape, dtype=np.float32)
        self.tally, self.nonfinite = {}, set()
        self.found = {"pixels": 0 if self.known is None else int(self.known.sum())}
        self.movie = None

    def __enter__(self):
        # raw counts (the Poisson test needs them); the gain is applied in summed_frames
        self.movie = Movie(self.mic.movie, workers=max(1, self.threads // 2))
        return self

    def __exit__(self, *exc):
        self.movie.close()

    def frames(self):
        """The gain-corrected frames, each read once: an iterator of (frame, mean) pairs
        (:func:`summed_frames`)."""
        from .parallel import read_ahead
        frames = summed_frames(self.movie, self.first, self.last, self.gain, self.total,
                               self.tally, self.nonfinite, self.known)
        return read_ahead(frames) if self.threads > 1 else frames

    def late_defects(self):
        """None (defects off) or (ys, xs, values): the defects found from the raw sum that were
        not known beforehand, and their per-frame values (raw mean times the gain)."""
        if self.disabled:
            return None
        F, gain = self.last - self.first, self.gain
        old = self.known.copy()
        if self.nonfinite:
            old.ravel()[np.fromiter(self.nonfinite, dtype=np.int64)] = True
        full = detect_defects(self.total, F, gain, known=old, workers=self.threads)
        self.found["pixels"] = int(full.sum())
        self.found["flat"] = np.flatnonzero(full if gain is None else full & (gain > 0))
        ys, xs = np.nonzero(full & ~self.known)
        values = self.total[ys, xs] / F * (1.0 if gain is None else gain[ys, xs])
        return ys, xs, values



def save_defects(path, flat):
    """Write the flat indices of a micrograph's defect pixels (``MovieOnce.found["flat"]``) to
    ``path`` (diag/<mic>_defects.npy), atomically, for the programs that read the movie later."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, flat)

def for_each_micrograph(mics, work, failed_path, rank=0):
    """Call ``work(i, mic)`` for each of ``mics`` (this rank's share). Any exception of one
    micrograph (bad data, a failed fit, a file that cannot be written) fails only that
    micrograph: it is logged and its reason written to ``failed_path(mic.name)`` (removed when
    the micrograph later succeeds). An error writing that reason propagates (and, under MPI,
    aborts every rank: :func:`polishplugin.programs.cli.run_program`). Returns the names that
    failed."""
    failed = []
    for i, mic in enumerate(mics):
        path = failed_path(mic.name)
        try:
            work(i, mic)
        except Exception as exc:
            log.error("[rank %d] %s FAILED: %s: %s", rank, mic.name, type(exc).__name__, exc)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with atomic_text(path) as fh:
                fh.write("%s: %s\n" % (type(exc).__name__, exc))
            failed.append(mic.name)
            continue
        if os.path.exists(path):
            os.remove(path)
    return failed


def failure_list(mics, done, failed_path):
    """Lines 'micrograph<TAB>reason' of the micrographs not ``done(name)``: the reason recorded
    by :func:`for_each_micrograph`, or 'not processed'."""
    lines = []
    for name in mics:
        if done(name):
            continue
        p = failed_path(name)
        lines.append("%s\t%s" % (name, open(p).read().strip() if os.path.exists(p)
                                 else "not processed"))
    return lines


def write_failure_list(out, lines):
    """``<out>/failed.txt`` (one line per failed micrograph; empty when none failed)."""
    with atomic_text(os.path.join(out, "failed.txt")) as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
