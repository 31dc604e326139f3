"""Hot/dead pixel detection from the movie itself (no truth used) and defect filling."""
import numpy as np
import pytest

from polishplugin.core.defects import detect_defects, fill_defects
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset

CFG = SimulationConfig(seed=21, n_micrographs=1, micrograph_shape=(512, 512), n_frames=10,
                       particles_per_micrograph=8, box=48, pixel_size=1.5, half_map_resolution=6.0,
                       hot_pixels=12, hot_level=20.0, dead_columns=3, snr=0.05)


@pytest.fixture(scope="module")
def mic():
    return simulate_dataset(CFG).micrograph(0)


def _truth(mic):
    t = mic.defect_mask.copy()
    t[mic.hot_pixels[:, 1], mic.hot_pixels[:, 0]] = True
    return t


def test_simulated_hot_and_dead_pixels_found(mic):
    total = mic.frames.sum(axis=0, dtype=np.float64)
    mask = detect_defects(total, CFG.n_frames, mic.gain)
    truth = _truth(mic)
    assert mask[mic.hot_pixels[:, 1], mic.hot_pixels[:, 0]].all()
    assert mask[mic.defect_mask].all()
    assert np.sum(mask & ~truth) < 1e-4 * mask.size


def test_dead_pixels_from_counts_alone():
    """Without a gain reference: zero-count pixels are defects only where zero is improbable."""
    rng = np.random.default_rng(0)
    dead = [(10, 20), (100, 7), (200, 250)]
    for mean, expect_found in ((5.0, True), (0.2, False)):
        total = rng.poisson(mean, size=(10, 256, 256)).sum(axis=0).astype(float)
        for y, x in dead:
            total[y, x] = 0
        mask = detect_defects(total, 10, tile=64)
        assert all(mask[y, x] == expect_found for y, x in dead)
        assert mask.sum() == (len(dead) if expect_found else 0)


def test_weak_outliers_kept_and_known_map_merged():
    rng = np.random.default_rng(1)
    total = rng.poisson(40.0, size=(128, 128)).astype(float)
    total[5, 5] = 40 + 3 * np.sqrt(40)        # a 3-sigma pixel: ordinary
    total[50, 60] = 40 + 15 * np.sqrt(40)     # a 15-sigma pixel: hot
    known = np.zeros((128, 128), dtype=bool)
    known[:, 3] = True
    mask = detect_defects(total, 10, known=known)
    assert mask[50, 60] and not mask[5, 5] and mask[:, 3].all()
    assert mask.sum() == 128 + 1


def test_fill_defects_with_mean_of_good_pixels():
    rng = np.random.default_rng(2)
    frames = rng.normal(5.0, 1.0, size=(3, 16, 16)).astype(np.float32)
    mask = np.zeros((16, 16), dtype=bool)
    mask[2, 3] = mask[7, :] = True
    frames[:, mask] = 1e6
    out = fill_defects(frames, mask)
    for f in range(3):
        good = [frames[f, y, x] for y in range(16) for x in range(16) if not mask[y, x]]
        np.testing.assert_allclose(out[f, mask], np.mean(good), rtol=1e-5)
        np.testing.assert_array_equal(out[f, ~mask], frames[f, ~mask])
    np.testing.assert_array_equal(fill_defects(frames, mask, value=0.0)[:, mask], 0.0)
    assert frames[0, 2, 3] == 1e6                            # input untouched
