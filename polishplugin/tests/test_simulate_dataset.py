"""Simulated data set: determinism, bookkeeping of the truth, refined coordinates."""
import dataclasses

import numpy as np
import pytest

from polishplugin.core.fourier import fsc, resolution_at
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset

CFG = SimulationConfig(seed=11, n_micrographs=3, micrograph_shape=(256, 256), n_frames=8,
                       particles_per_micrograph=5, box=32, pixel_size=1.5, half_map_resolution=6.0,
                       refined_position_sigma=0.4, global_track_noise=0.2,
                       refined_from_data=False)  # the fixed-noise centre model is checked here


@pytest.fixture(scope="module")
def ds():
    return simulate_dataset(CFG)


def test_deterministic_from_seed(ds):
    again = simulate_dataset(CFG)
    np.testing.assert_array_equal(ds.volume, again.volume)
    np.testing.assert_array_equal(ds.half1, again.half1)
    a, b = ds.micrograph(1), again.micrograph(1)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(ds.micrograph(1).frames, a.frames)       # regenerated, same
    assert not np.array_equal(ds.micrograph(0).frames, a.frames)
    other = simulate_dataset(dataclasses.replace(CFG, seed=12)).micrograph(1)
    assert not np.array_equal(other.frames, a.frames)
    with pytest.raises(IndexError):
        ds.micrograph(3)


def test_micrograph_contents(ds):
    mgs = list(ds)
    assert len(mgs) == CFG.n_micrographs
    mg = mgs[0]
    p, f = CFG.particles_per_micrograph, CFG.n_frames
    assert mg.frames.shape == (f,) + CFG.micrograph_shape and mg.frames.dtype == np.uint16
    assert mg.positions.shape == (p, f, 2) and mg.velocities.shape == (p, f - 1, 2)
    assert mg.angles.shape == (p, 3) and mg.global_track.shape == (f, 2)
    assert set(mg.half_set) == {1, 2} and abs(np.sum(mg.half_set == 1) - np.sum(mg.half_set == 2)) <= 1
    assert np.all(mg.defocus_u >= mg.defocus_v)
    assert CFG.defocus_range[0] - 500 < mg.defocus_u.mean() < CFG.defocus_range[1] + 500
    # particles inside with margin and apart
    ny, nx = CFG.micrograph_shape
    assert np.all(mg.positions >= CFG.box / 2) and np.all(mg.positions[..., 0] <= nx - CFG.box / 2)
    s0 = mg.positions[:, 0]
    d = np.linalg.norm(s0[:, None] - s0[None], axis=-1) + 1e9 * np.eye(p)
    assert d.min() >= 0.75 * CFG.box
    np.testing.assert_allclose(mg.global_track[0], 0.0)
    assert mg.name == "sim_0000" and mg.gain is not None


def test_refined_centres_and_origins(ds):
    """centre = coords - origin / px equals the frame-averaged position in the globally aligned
    micrograph plus the refinement error (sd refined_position_sigma)."""
    errs = []
    for mg in ds:
        np.testing.assert_array_equal(mg.coords, np.rint(mg.coords))
        assert np.all(np.abs(mg.origins_A) <= 0.5 * CFG.pixel_size + 1e-9)
        aligned = (mg.positions - mg.global_track[None]).mean(axis=1)
        errs.append(mg.centres - aligned)
        err_global = mg.global_track - (mg.positions - mg.positions[:, :1]).mean(axis=0)
        assert np.std(err_global[1:]) < 3 * CFG.global_track_noise
    errs = np.concatenate(errs)
    assert np.std(errs) == pytest.approx(CFG.refined_position_sigma, rel=0.5)


def test_dataset_level_truth(ds):
    assert ds.volume.shape == (CFG.box,) * 3
    assert resolution_at(fsc(ds.half1, ds.half2), CFG.box, CFG.pixel_size) == pytest.approx(6.0, rel=0.1)
    assert ds.mask.max() == 1.0 and ds.mask.min() == 0.0
    assert np.all(ds.mask[ds.volume > 0.1 * ds.volume.max()] == 1.0)
    assert ds.motion_sigmas_px == CFG.motion_params.to_pixels(CFG.dose_per_frame, CFG.pixel_size)
    assert ds.optics["voltage"] == 300.0 and ds.contrast > 0


def test_default_config_is_realistic():
    c = SimulationConfig()
    assert 1.0 <= c.pixel_size <= 1.5 and 96 <= c.box <= 128 and 24 <= c.n_frames <= 30
    assert 1.0 <= c.dose_per_frame <= 1.5 and c.voltage == 300.0 and c.cs == 2.7
    assert 8000 <= c.defocus_range[0] < c.defocus_range[1] <= 25000
    assert (c.sigma_vel, c.sigma_div, c.sigma_acc) == (0.5, 5000.0, 2.0)
    assert c.dose_px == pytest.approx(c.dose_per_frame * c.pixel_size ** 2)


def test_refined_centres_from_the_data_follow_the_snr():
    """Centres found by correlating the data with the reference: close to the particles' mean
    (globally aligned) position, and closer at high SNR than at low SNR."""
    errs = {}
    for snr in (0.02, 1.0):
        cfg = SimulationConfig(seed=5, n_micrographs=1, micrograph_shape=(384, 384), n_frames=8,
                               particles_per_micrograph=8, box=48, pixel_size=1.5, snr=snr,
                               dark_particles=True, refined_from_data=True, hot_pixels=0)
        mic = simulate_dataset(cfg).micrograph(0)
        true = (mic.positions - mic.global_track[None]).mean(axis=1)
        errs[snr] = float(np.sqrt(np.mean((mic.centres - true) ** 2)))
    assert errs[1.0] < 0.25, errs
    assert errs[0.02] > errs[1.0], errs
