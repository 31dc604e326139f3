"""Patch extraction (one frame at a time), damage filters and own/opposite-half predictions."""
import numpy as np
import pytest

from polishplugin.core.ctf import CtfParams, ctf_2d
from polishplugin.core.damage import exposure_filter
from polishplugin.core.fourier import radius_grid
from polishplugin.core.motion.patches import damage_filters, extract_patches, patch_blocks
from polishplugin.core.predict import make_projectors, predict_particles
from polishplugin.core.projector import Projector


def test_patches_cut_at_rounded_track_from_a_generator():
    rng = np.random.default_rng(0)
    F, ny, nx, n = 3, 40, 50, 8
    movie = rng.normal(size=(F, ny, nx)).astype(np.float32)
    centres = np.array([[20.3, 15.6], [1.2, 38.4]])
    tracks = rng.uniform(-2, 2, size=(2, F, 2))
    consumed = []

    def frames():
        for f in range(F):
            consumed.append(f)
            yield movie[f]
    patches, cut = extract_patches(frames(), centres, tracks, n)
    assert consumed == [0, 1, 2] and patches.shape == (2, F, n, n) and patches.dtype == np.float32
    for p in range(2):
        for f in range(F):
            qx, qy = np.rint(centres[p] + tracks[p, f]).astype(int)
            np.testing.assert_allclose(cut[p, f], (qx, qy) - centres[p])
            for j in range(n):
                for i in range(n):
                    y, x = qy - n // 2 + j, qx - n // 2 + i
                    inside = 0 <= y < ny and 0 <= x < nx
                    want = movie[f, y, x] if inside else movie[f].mean()
                    assert patches[p, f, j, i] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_defects_filled_with_frame_mean_and_frame_count_checked():
    movie = np.ones((2, 20, 20), dtype=np.float32)
    movie[:, 10, 10] = 1000.0
    mask = np.zeros((20, 20), dtype=bool)
    mask[10, 10] = True
    patches, _ = extract_patches(movie, [[10.0, 10.0]], np.zeros((1, 2, 2)), 6, defects=mask)
    np.testing.assert_allclose(patches, 1.0)
    with pytest.raises(ValueError):
        extract_patches(movie[:1], [[10.0, 10.0]], np.zeros((1, 2, 2)), 6)


def test_patch_blocks_are_the_patch_stack_a_block_at_a_time():
    """The shiny recombination's blocks (bfactors): exactly extract_patches' patches and cut
    shifts, defects and edges included, every particle-frame once, in frame order."""
    rng = np.random.default_rng(1)
    F, n = 3, 8
    movie = rng.normal(size=(F, 30, 40)).astype(np.float32)
    mask = rng.random((30, 40)) < 0.02
    centres = rng.uniform(0, 40, size=(7, 2))
    tracks = rng.uniform(-2, 2, size=(7, F, 2))
    want, want_cut = extract_patches(iter(movie), centres, tracks, n, mask)
    seen = np.zeros((7, F), dtype=int)
    last_f = 0
    for f, rows, patches, cut in patch_blocks(iter(movie), centres, tracks, n, mask, block=3):
        assert f >= last_f and patches.shape == (rows.stop - rows.start, n, n)
        last_f = f
        np.testing.assert_array_equal(patches, want[rows, f])
        np.testing.assert_array_equal(cut, want_cut[rows, f])
        seen[rows, f] += 1
    assert (seen == 1).all()


def test_damage_filters_are_the_exposure_filter_at_mid_frame_doses():
    d = damage_filters(16, 1.3, 4, 1.5, pre_exposure=2.0, voltage=300.0)
    k = radius_grid(16, 16, 1.3)
    for f in range(4):
        np.testing.assert_allclose(d[f], exposure_filter(k, 2.0 + (f + 0.5) * 1.5, 300.0))
    assert d.shape == (4, 16, 16) and np.all(np.diff(d[:, 3, 5]) < 0)


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(3)
    h1, h2 = rng.normal(size=(2, 16, 16, 16))
    mask = np.zeros((16, 16, 16))
    mask[3:13, 3:13, 3:13] = 1.0
    return h1, h2, mask


def test_predictions_use_own_or_opposite_masked_half(maps):
    h1, h2, mask = maps
    pr = make_projectors(h1, h2, mask)
    angles = np.array([[0.1, 0.7, -0.4], [1.0, 2.0, 0.3], [-0.5, 1.1, 2.0]])
    halves = np.array([1, 2, 1])
    ctfs = [CtfParams(9000 + 500 * i, 8800, 30.0) for i in range(3)]
    n, px = 24, 1.7
    own = predict_particles(pr, angles, halves, ctfs, n, px)
    opp = predict_particles(pr, angles, halves, [ctf_2d(c, n, px) for c in ctfs], n, px,
                            opposite=True)
    ref = {1: Projector(h1 * mask), 2: Projector(h2 * mask)}
    for p in range(3):
        ctf = ctf_2d(ctfs[p], n, px)
        np.testing.assert_allclose(own[p], ref[halves[p]].project(*angles[p], shape=(n, n)) * ctf,
                                   atol=1e-6)
        np.testing.assert_allclose(opp[p], ref[3 - halves[p]].project(*angles[p], shape=(n, n)) * ctf,
                                   atol=1e-6)
    # both at once (one CTF per particle): the same bits as the two calls
    own2, opp2 = predict_particles(pr, angles, halves, ctfs, n, px, opposite="both", chunk=2)
    np.testing.assert_array_equal(own2, own)
    np.testing.assert_array_equal(opp2, predict_particles(pr, angles, halves, ctfs, n, px,
                                                          opposite=True))
    with pytest.raises(ValueError):
        predict_particles(pr, angles, np.array([1, 3, 1]), ctfs, n, px)
    with pytest.raises(ValueError, match="opposite"):
        predict_particles(pr, angles, halves, ctfs, n, px, opposite="other")


def test_patch_size_covers_the_ctf_delocalisation():
    from polishplugin.core.ctf import electron_wavelength
    from polishplugin.core.motion.patches import patch_size
    lam = electron_wavelength(300.0)
    # 1.5 um at 5 A and 1 A/px: 2 * lam * 15000 / 5 = 118 px on top of a 96 box -> 214, capped
    # at 1.4 x the box by default (134: the largest even 2-3-5 length within it, 128 = 2^7), or
    # at the given cap (192 = 2^6 3)
    assert patch_size(96, 1.0, 15000.0, 5.0) == 128
    assert patch_size(96, 1.0, 15000.0, 5.0, cap=2.0) == 192
    # below the cap: rounded up (96 + 19.7 -> 120 = 2^3 3 5)
    n = patch_size(96, 1.0, 5000.0, 10.0)
    assert n >= 96 + 2 * lam * 5000.0 / 10.0 and n == 120
    assert patch_size(64, 2.0, 0.0, 3.0) == 64
    # the benchmark project's box: 1.4 x 160 = 224 = 2^5 7 -> 216 = 2^3 3^3; never below the box
    assert patch_size(160, 1.2, 25000.0, 3.72) == 216
    assert patch_size(154, 1.0, 0.0, 3.0, cap=1.0) == 160       # 154 = 2 7 11: up to 160
    for box in range(40, 420, 6):
        n = patch_size(box, 1.0, 20000.0, 3.0)
        k = n
        for q in (2, 3, 5):
            while k % q == 0:
                k //= q
        assert k == 1 and n % 2 == 0 and box <= n <= 1.4 * box, (box, n)
