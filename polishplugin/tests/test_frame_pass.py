"""The one pass over each frame as it is read (core/frame_pass.py, Movie.pieces, summed_frames)
gives the numbers of the separate numpy passes it replaced: conversion, raw sum, gain, known
defects filled with the mean of the other pixels, the frame's mean."""
import numpy as np
import pytest
import tifffile

from polishplugin.io.movies import Movie, write_movie_mrc
from polishplugin.programs.micrographs import summed_frames

F, NY, NX = 3, 45, 38


def _counts(seed=0):
    return np.random.default_rng(seed).poisson(4.0, size=(F, NY, NX)).astype(np.uint16)


def _write_tiff(path, counts, **kw):
    with tifffile.TiffWriter(path) as tif:
        for frame in counts:        # rows stored reversed, as RELION reads TIFFs
            tif.write(frame[::-1], photometric="minisblack", metadata=None, **kw)


def _separate_passes(path, gain, known):
    """The reference: float32 frames from Movie.frame, then one numpy pass per step."""
    total = np.zeros((NY, NX), dtype=np.float32)
    out = []
    with Movie(path) as mov:
        for i in range(F):
            frame = mov.frame(i)
            bad = ~np.isfinite(frame)
            if bad.any():
                frame[bad] = frame[~bad].mean(dtype=np.float64)
            total += frame
            if gain is not None:
                frame *= gain
            if known is not None:
                frame[known] = frame[~known].mean(dtype=np.float64)
            out.append((frame, frame.mean(dtype=np.float64)))
    return out, total


def _gain_and_known():
    rng = np.random.default_rng(5)
    gain = rng.uniform(0.8, 1.3, size=(NY, NX)).astype(np.float32)
    gain[7, 3] = 0.0
    gain[20, 30] = np.nan          # a broken gain pixel: a known defect, must not spoil the mean
    known = ~(gain > 0)
    known[0, 5] = known[44, 37] = True      # e.g. MotionCorr's hot pixels
    return gain, known


@pytest.mark.parametrize("kind", ["deflate strips", "raw strips", "predictor (tifffile)",
                                  "mrc int16", "mrc float32 with NaN", "two decoding threads"])
@pytest.mark.parametrize("with_gain", [True, False])
def test_one_pass_equals_separate_passes(tmp_path, kind, with_gain):
    counts = _counts()
    path = str(tmp_path / ("m.mrc" if kind.startswith("mrc") else "m.tiff"))
    if kind == "deflate strips" or kind == "two decoding threads":
        _write_tiff(path, counts, compression="zlib", rowsperstrip=8)
    elif kind == "raw strips":
        _write_tiff(path, counts, rowsperstrip=10)
    elif kind == "predictor (tifffile)":
        _write_tiff(path, counts, compression="zlib", predictor=True, rowsperstrip=8)
    elif kind == "mrc int16":
        write_movie_mrc(path, counts.astype(np.int16), 1.0)
    else:
        data = counts.astype(np.float32) + 0.25
        data[1, 4, 9] = np.nan
        write_movie_mrc(path, data, 1.0)
    gain, known = _gain_and_known()
    if not with_gain:
        gain, known = None, np.isnan(_gain_and_known()[0]) | (np.arange(NX) == 11)[None, :]
    want, want_total = _separate_passes(path, gain, known)
    total = np.zeros((NY, NX), dtype=np.float32)
    with Movie(path, workers=2 if kind == "two decoding threads" else 1) as mov:
        blocks = len(list(mov.pieces(0)))
        got = list(summed_frames(mov, 0, F, gain, total, known=known))
    # strips are decoded one at a time (the in-cache path); others give the whole frame
    assert blocks == ({"deflate strips": 6, "raw strips": 5}.get(kind, 1))
    np.testing.assert_array_equal(total, want_total)
    for (frame, mean), (ref, ref_mean) in zip(got, want):
        np.testing.assert_array_equal(frame, ref)
        assert np.isfinite(mean)
        assert mean == pytest.approx(ref_mean, rel=1e-7)    # fill in float64 vs float32 frame


def test_no_known_defects_mean_is_the_frame_mean(tmp_path):
    path = str(tmp_path / "m.tiff")
    _write_tiff(path, _counts(1), compression="zlib", rowsperstrip=16)
    total = np.zeros((NY, NX), dtype=np.float32)
    with Movie(path) as mov:
        for i, (frame, mean) in enumerate(summed_frames(mov, 0, F, None, total)):
            np.testing.assert_array_equal(frame, mov.frame(i))
            assert mean == pytest.approx(frame.mean(dtype=np.float64), rel=1e-12)


def test_patch_test_skipped_only_for_frames_known_finite():
    """extract_spectra tests the patches for NaN unless the frame came with a finite mean
    (a finite float64 sum: every pixel finite); the spectra are the same either way."""
    from polishplugin.core.motion.patches import extract_spectra
    rng = np.random.default_rng(2)
    frames = rng.poisson(3.0, size=(F, NY, NX)).astype(np.float32)
    centres = np.array([[15.0, 20.0], [25.0, 12.0]])
    tracks = np.zeros((2, F, 2))
    calls = []
    with_means = [(fr, float(fr.mean(dtype=np.float64))) for fr in frames]
    got, _ = extract_spectra(iter(with_means), centres, tracks, 16, check=calls.append)
    assert not calls
    want, _ = extract_spectra(iter(frames), centres, tracks, 16, check=calls.append)
    assert len(calls) == F
    np.testing.assert_array_equal(got, want)
    bad = frames.copy()
    bad[1, 20, 15] = np.nan
    calls.clear()
    extract_spectra(iter((fr, float(fr.mean(dtype=np.float64))) for fr in bad), centres,
                    tracks, 16, check=calls.append)
    assert len(calls) == 1          # only the frame whose mean is NaN


def test_frames_without_raw_sum_are_the_same(tmp_path):
    """total=None (bfactors: no defect search) gives the same frames and means."""
    path = str(tmp_path / "m.tiff")
    _write_tiff(path, _counts(3), compression="zlib", rowsperstrip=8)
    gain, known = _gain_and_known()
    total = np.zeros((NY, NX), dtype=np.float32)
    with Movie(path) as mov:
        want = list(summed_frames(mov, 0, F, gain, total, known=known))
        got = list(summed_frames(mov, 0, F, gain, None, known=known))
    assert total.any()
    for (a, ma), (b, mb) in zip(got, want):
        np.testing.assert_array_equal(a, b)
        assert ma == mb
