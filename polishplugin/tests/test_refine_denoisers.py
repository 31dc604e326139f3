"""Denoisers of RED (Kimanius et al. 2021, §3.1): they act on the standardised map, so they commute
with the map's offset and scale; the TV denoiser brings a noisy pseudo-protein closer to the truth."""
import numpy as np
import pytest

from polishplugin.core.refine.denoisers import get_denoiser
from polishplugin.core.simulate.volumes import pseudo_protein


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(3)
    truth = pseudo_protein(32, 2.0, rng).astype(np.float64)
    return truth, truth + rng.normal(0, truth.std(), truth.shape)


@pytest.mark.parametrize("name", ["identity", "tv"])
def test_denoisers_commute_with_offset_and_scale(noisy, name):
    _, x = noisy
    f = get_denoiser(name)
    np.testing.assert_allclose(f(3.0 * x - 7.0), 3.0 * f(x) - 7.0, rtol=1e-6, atol=1e-6)


def test_identity_returns_its_input(noisy):
    _, x = noisy
    np.testing.assert_allclose(get_denoiser("identity")(x), x, atol=1e-12)


def test_tv_brings_a_noisy_map_closer_to_the_truth(noisy):
    truth, x = noisy
    err_in = np.linalg.norm(x - truth)
    err_out = np.linalg.norm(get_denoiser("tv", tv_weight=0.3)(x) - truth)
    assert err_out < 0.7 * err_in


def test_unknown_denoiser_and_bad_weight_are_refused():
    with pytest.raises(ValueError, match="available: identity, tv, unet"):
        get_denoiser("bm4d")
    with pytest.raises(ValueError, match="positive"):
        get_denoiser("tv", tv_weight=0.0)
