"""Reading each movie once: defects found after the patches were transformed are filled in their
spectra (or patches) afterwards, with the same result as filling them in the frames."""
import numpy as np
import pytest

from polishplugin.core.motion.patches import (correct_defect_spectra, extract_patches,
                                              extract_spectra, fill_patch_defects)


def _movie(F=3, ny=70, nx=80, seed=0):
    rng = np.random.default_rng(seed)
    movie = rng.poisson(3.0, size=(F, ny, nx)).astype(np.float32)
    ys = np.array([10, 33, 34, 2, 60, 40])
    xs = np.array([12, 40, 40, 77, 15, 41])
    values = np.array([150.0, 0.0, 90.0, 40.0, 7.0, 0.0])
    movie[:, ys, xs] = values          # static defects: the sum's mean value is exact
    mask = np.zeros((ny, nx), dtype=bool)
    mask[ys, xs] = True
    # particles near the defects (inside the micrograph: the fill of the parts outside it is
    # the mean of the pixels known to be good when the frame is read); tracks that move
    centres = np.array([[38.2, 31.7], [24.0, 22.4], [58.6, 24.2], [25.0, 48.0]])
    tracks = rng.uniform(-4, 4, size=(len(centres), F, 2))
    return movie, mask, ys, xs, values, centres, tracks


@pytest.mark.parametrize("n,m", [(32, 32), (32, 18)])
def test_defects_filled_in_the_spectra_equal_defects_filled_in_the_frames(n, m):
    movie, mask, ys, xs, values, centres, tracks = _movie()
    F = len(movie)
    want_fills = np.zeros(F)
    want, cut = extract_spectra(iter(movie), centres, tracks, n, m, mask, fills=want_fills)
    fills = np.zeros(F)
    got, cut2 = extract_spectra(iter(movie), centres, tracks, n, m, None, fills=fills)
    assert np.abs(got - want).max() > 1.0          # the defects matter before the fix
    q = np.rint(centres[:, None, :] + cut2).astype(np.int64)
    k = correct_defect_spectra(got, q, n, ys, xs, values, want_fills)
    assert k > 0
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())
    np.testing.assert_array_equal(cut, cut2)


def test_defects_filled_in_patches_afterwards():
    movie, mask, ys, xs, values, centres, tracks = _movie(seed=1)
    F, n = len(movie), 24
    want_fills = np.zeros(F)
    want, _ = extract_patches(iter(movie), centres, tracks, n, mask, fills=want_fills)
    got, cut = extract_patches(iter(movie), centres, tracks, n, None)
    q = np.rint(centres[:, None, :] + cut).astype(np.int64)
    fill_patch_defects(got, q, ys, xs, want_fills)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_no_late_defects_changes_nothing():
    movie, _, _, _, _, centres, tracks = _movie(seed=2)
    spectra, cut = extract_spectra(iter(movie), centres, tracks, 16, 10)
    before = spectra.copy()
    q = np.rint(centres[:, None, :] + cut).astype(np.int64)
    assert correct_defect_spectra(spectra, q, 16, [], [], [], np.zeros(len(movie))) == 0
    np.testing.assert_array_equal(spectra, before)


def test_spectra_cut_a_few_particles_at_a_time_equal_all_at_once():
    movie, mask, _, _, _, centres, tracks = _movie(seed=4)
    whole, cut = extract_spectra(iter(movie), centres, tracks, 32, 18, mask)
    blocks, cut3 = extract_spectra(iter(movie), centres, tracks, 32, 18, mask, chunk=3)
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(cut3, cut)
