"""Denoisers of RED (Kimanius et al. 2021, §3.1): they act on the standardised map, so they commute
with the map's offset and scale; the TV denoiser brings a noisy pseudo-protein closer to the truth;
the cube-group average (test-time augmentation) leaves an equivariant function unchanged and makes
any function equivariant."""
import numpy as np
import pytest
from scipy import ndimage

from polishplugin.core.refine.denoisers import cube_group, get_denoiser, group_averaged
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


def test_cube_group_is_a_group_of_distinct_elements():
    x = np.random.default_rng(0).normal(size=(5, 5, 5))
    for order in (1, 8, 48):
        g = cube_group(order)
        images = {np.flip(x, f).transpose(p).tobytes() for f, p in g}
        assert len(g) == order and len(images) == order
        for f, p in g:   # closed: g applied twice is again in the group
            y = np.flip(np.flip(x, f).transpose(p), f).transpose(p)
            assert y.tobytes() in images
    with pytest.raises(ValueError, match="1, 8, 48"):
        cube_group(6)


@pytest.mark.parametrize("order", [8, 48])
def test_group_average_leaves_an_equivariant_function_unchanged(noisy, order):
    """An isotropic Gaussian blur on a periodic box commutes with axis flips and permutations."""
    _, x = noisy
    blur = lambda v: ndimage.gaussian_filter(v, 1.3, mode="wrap")  # noqa: E731
    np.testing.assert_allclose(group_averaged(blur, x, cube_group(order)), blur(x), atol=1e-12)


@pytest.mark.parametrize("order", [8, 48])
def test_group_average_of_a_biased_function_is_equivariant(noisy, order):
    """A one-voxel shift plus a ramp commutes with no flip or permutation; its group average
    commutes with all of them."""
    _, x = noisy
    i, j, k = np.indices(x.shape)
    ramp = i + 2.0 * j + 3.0 * k

    def biased(v):
        return np.roll(v, 1, axis=(0, 1, 2)) + 0.1 * ramp + 0.2 * v ** 2
    avg = lambda v: group_averaged(biased, v, cube_group(order))  # noqa: E731
    assert not np.allclose(avg(x), biased(x))
    for flips, perm in cube_group(order):
        gx = np.flip(x, flips).transpose(perm)
        np.testing.assert_allclose(avg(gx), np.flip(avg(x), flips).transpose(perm), atol=1e-10)
        gx_biased = biased(gx)
        if (flips, perm) != ((), (0, 1, 2)):
            assert not np.allclose(gx_biased, np.flip(biased(x), flips).transpose(perm))


def test_group_average_of_order_one_is_the_function_itself(noisy):
    _, x = noisy
    fn = lambda v: v * 2.0 + 1.0  # noqa: E731
    assert np.array_equal(group_averaged(fn, x, cube_group(1)), fn(x))
    with pytest.raises(ValueError, match="need a cube"):
        group_averaged(fn, x[:, :, :-1], cube_group(48))
    with pytest.raises(ValueError, match="for the unet denoiser"):
        get_denoiser("tv", tta=8)
