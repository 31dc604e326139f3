"""One pass over the rows of a movie frame as it is read (issue 14: the frame read was five
numpy passes: conversion to float32, raw sum, gain, the fill value's sum, the frame's mean).

For each row block of raw samples s (any integer or float type, in the file's or the reversed
row order) the pass writes the gain-corrected frame ``out = float32(s) * gain`` (float32
product: the same bits as numpy's ``frame *= gain``), adds ``float32(s)`` to the raw sum
``total`` (float32, exact for counts below 2^24) and returns the float64 sum of ``out`` (the
frame's mean, and the fill value of its defects, without another pass). Run block by block
while each decoded block is still in cache (:meth:`polishplugin.io.movies.Movie.pieces`).
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _rows_gain(raw, flip, gain, total, summed, out):
    r, nx = out.shape
    s = 0.0
    for i in range(r):
        src = raw[r - 1 - i if flip else i]
        acc = 0.0       # reassociation lets this sum vectorise (its order is the only change)
        for j in range(nx):
            v = np.float32(src[j])
            if summed:
                total[i, j] += v
            w = v * gain[i, j]
            out[i, j] = w
            acc += np.float64(w)
        s += acc
    return s


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _rows_plain(raw, flip, total, summed, out):
    r, nx = out.shape
    s = 0.0
    for i in range(r):
        src = raw[r - 1 - i if flip else i]
        acc = 0.0
        for j in range(nx):
            v = np.float32(src[j])
            if summed:
                total[i, j] += v
            out[i, j] = v
            acc += np.float64(v)
        s += acc
    return s


def frame_rows(raw, flip, gain, total, out):
    """``out[:] = float32(raw rows) * gain`` (no gain: None), ``total += float32(raw rows)``
    (None: no raw sum); raw (r, nx), its rows in reverse order when ``flip``; gain, total, out
    (r, nx) float32 (``out`` may be ``raw`` itself when not flipped). Returns the float64 sum
    of ``out``."""
    raw = np.asarray(raw)       # a memory-mapped MRC frame as a plain array view
    summed = total is not None
    if not summed:
        total = _NO_TOTAL
    if gain is None:
        return float(_rows_plain(raw, bool(flip), total, summed, out))
    return float(_rows_gain(raw, bool(flip), gain, total, summed, out))


_NO_TOTAL = np.zeros((1, 1), dtype=np.float32)
