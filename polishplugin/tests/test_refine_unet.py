"""The learned 3D U-Net denoiser (Kimanius et al. 2021, §3.1): the shipped weights bring a noisy map
of a structure held out of training closer to its truth; any box size works; a tiny training run
of programs/train_denoiser.py writes weights that load; without torch the error names the extra."""
import builtins
import json
import os

import numpy as np
import pytest

from polishplugin.core.refine import unet_pairs
from polishplugin.core.refine.denoisers import get_denoiser
from polishplugin.core.simulate.volumes import pseudo_protein

torch = pytest.importorskip("torch")

HELDOUT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "models",
                       "5me2.pdb")


@pytest.fixture(scope="module")
def unet():
    return get_denoiser("unet")


@pytest.fixture(scope="module")
def heldout():
    """5me2 (held out of the shipped network's training), box 64 at 1.5 A, its own orientation."""
    if not os.path.isfile(HELDOUT):
        pytest.skip("held-out model %s not available" % HELDOUT)
    rng = np.random.default_rng(11)
    truth = unet_pairs.model_truth(HELDOUT, 64, 1.5, rng, tries=0)
    return truth, rng


@pytest.mark.parametrize("kind", ["coloured noise at 4.5 A", "B/K of 1000 particles"])
def test_shipped_unet_improves_a_heldout_noisy_map(unet, heldout, kind):
    """Where the shipped network helps on 5me2 (it hurts coloured-noise maps at 5-8 A: MODEL_CARD)."""
    truth, rng = heldout
    if kind.startswith("coloured"):
        x, _, _ = unet_pairs.gaussian_pair(truth, 1.5, rng, 4.5, bfactor=30.0)
    else:
        x, _, _ = unet_pairs.reconstruction_pair(truth, 1.5, rng, 1000, 0.02, angle_error_deg=2.0)
    before = unet_pairs.mean_fsc(x, truth, 1.5)
    after = unet_pairs.mean_fsc(unet(x), truth, 1.5)
    tv = unet_pairs.mean_fsc(get_denoiser("tv")(x), truth, 1.5)
    print("%s: mean FSC 10-4 A input %.3f, TV %.3f, U-Net %.3f" % (kind, before, tv, after))
    assert after > before + 0.04
    assert after > tv + 0.03


@pytest.mark.parametrize("n", [30, 37, 42])
def test_any_box_gives_a_finite_map_of_the_same_shape(unet, n):
    rng = np.random.default_rng(n)
    x = pseudo_protein(n, 2.0, rng).astype(np.float32) + rng.normal(0, 0.05, (n, n, n))
    y = unet(x)
    assert y.shape == x.shape and y.dtype == np.float64 and np.all(np.isfinite(y))
    assert not np.allclose(y, x)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tta_one_is_the_plain_network_bit_for_bit_and_the_default_is_unet_tta(precision):
    from polishplugin.core.refine import unet
    from polishplugin.core.refine.denoisers import standardised
    model = unet.load_unet(precision=precision)
    x = np.random.default_rng(5).normal(size=(34, 34, 34))
    plain = standardised(lambda v: unet.apply_unet(model, v), x)
    assert np.array_equal(get_denoiser("unet", tta=1, unet_precision=precision)(x), plain)
    from polishplugin.core.refine.denoisers import UNET_TTA
    assert np.array_equal(get_denoiser("unet", unet_precision=precision)(x),
                          get_denoiser("unet", tta=UNET_TTA, unet_precision=precision)(x))
    assert not np.allclose(get_denoiser("unet", unet_precision=precision)(x), plain)


def test_bfloat16_rounds_only_the_correction_and_auto_follows_the_cpu(heldout, monkeypatch):
    """The bfloat16 network's correction g(x) within 2 % of float32's (measured 0.3 %: 8-bit
    mantissas), the input kept exactly (x + g with x in float32, not rounded to bfloat16); auto
    picks bfloat16 only where the CPU multiplies it natively."""
    from polishplugin.core.refine import unet
    truth, rng = heldout
    x = unet_pairs.gaussian_pair(truth, 1.5, rng, 6.0, bfactor=30.0)[0]
    x = (x - x.mean()) / x.std()
    m32, m16 = unet.load_unet(precision="float32"), unet.load_unet(precision="bfloat16")
    g32, g16 = unet.apply_unet(m32, x) - x, unet.apply_unet(m16, x) - x
    assert np.linalg.norm(g16 - g32) < 0.02 * np.linalg.norm(g32)
    assert np.linalg.norm(g16 - g32) > 0            # the bfloat16 path ran
    zero = unet.load_unet(precision="bfloat16")      # g = 0: the output is the input, unrounded
    zero.residual = lambda v: torch.zeros_like(v)
    assert np.array_equal(unet.apply_unet(zero, x), x.astype(np.float32))
    monkeypatch.setattr(unet, "native_bfloat16", lambda: False)
    assert unet.resolve_precision("auto") == "float32"
    monkeypatch.setattr(unet, "native_bfloat16", lambda: True)
    assert unet.resolve_precision("auto") == "bfloat16"
    assert unet.resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        unet.resolve_precision("float16")


@pytest.mark.parametrize("order", [8, 48])
def test_tta_unet_is_equivariant_where_the_plain_one_is_not(order):
    """The averaged network commutes with every element of its group (the 8 flips; 2 of the 48,
    for time), to float32 rounding; the plain network does not (it learnt flips only
    approximately). Box 18, so the reflect padding to 20 breaks the plain network's symmetry once
    more."""
    from polishplugin.core.refine.denoisers import cube_group
    rng = np.random.default_rng(order)
    x = pseudo_protein(18, 2.0, rng).astype(np.float64) + rng.normal(0, 0.02, (18, 18, 18))
    plain = get_denoiser("unet", tta=1, unet_precision="float32")
    avg = get_denoiser("unet", tta=order, unet_precision="float32")
    fx, ax = plain(x), avg(x)
    sd = float(x.std())
    plain_err = []
    group = cube_group(order)
    for flips, perm in (group[13::28] if order == 48 else group[1:]):  # float32: exact to 1e-5
        gx = np.flip(x, flips).transpose(perm)
        g = lambda y: np.flip(y, flips).transpose(perm)  # noqa: E731
        np.testing.assert_allclose(avg(gx), g(ax), atol=1e-5 * sd)
        plain_err.append(np.abs(plain(gx) - g(fx)).max() / sd)
    assert min(plain_err) > 1e-3
    assert not np.allclose(ax, fx, atol=1e-3 * sd)


def test_unet_commutes_with_offset_and_scale(unet):
    rng = np.random.default_rng(5)
    x = pseudo_protein(32, 2.0, rng).astype(np.float64) + rng.normal(0, 0.02, (32,) * 3)
    np.testing.assert_allclose(unet(3.0 * x - 7.0), 3.0 * unet(x) - 7.0, rtol=1e-4, atol=1e-4)


def test_fsc_target_multiplies_the_truth_by_the_curve():
    rng = np.random.default_rng(2)
    t = rng.normal(size=(16, 16, 16))
    np.testing.assert_allclose(unet_pairs.fsc_target(t, np.ones(20)), t, atol=1e-12)
    low = unet_pairs.fsc_target(t, np.r_[np.ones(4), np.zeros(5)])
    f = np.fft.fftn(low)
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.fft.fftfreq(16) * 16] * 3, indexing="ij")))
    assert np.abs(f[np.rint(k) >= 4]).max() < 1e-9
    np.testing.assert_allclose(f[np.rint(k) < 4], np.fft.fftn(t)[np.rint(k) < 4], atol=1e-9)


def test_gaussian_pair_half_map_fsc_crosses_at_the_asked_resolution():
    rng = np.random.default_rng(4)
    truth = pseudo_protein(48, 2.0, rng).astype(np.float64)
    _, target, curve = unet_pairs.gaussian_pair(truth, 2.0, rng, 8.0)
    s = np.arange(len(curve))
    cross = s[np.argmax(curve < 0.143)]
    assert abs(48 * 2.0 / cross - 8.0) < 1.0
    assert np.linalg.norm(target) < np.linalg.norm(truth)


def test_tiny_training_run_writes_loadable_weights(tmp_path):
    from polishplugin.programs.train_denoiser import main
    out = tmp_path / "job"
    rc = main(["--out", str(out), "--pseudo", "2", "--box", "24", "--patch", "16", "--steps", "3",
               "--gauss-per-truth", "1", "--recon-every", "2", "--particles", "20", "20",
               "--eval-box", "24", "--eval-pixel", "2.0", "--eval-pseudo", "1", "--eval-particles",
               "40", "--base", "4", "--engine-runs", "1", "--engine-particles", "40", "40",
               "--engine-max-iter", "2", "--cache", str(tmp_path / "cache")])
    assert rc == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["info"]["steps"] == 3 and scores["info"]["pairs"] == 3 + 4
    assert {p["kind"] for p in scores["pairs"]} == {"gaussian", "reconstruction", "engine"}
    assert len(os.listdir(tmp_path / "cache")) == 1
    assert len(scores["heldout"]) == 6 and "| **mean** (6 maps) |" in (out / "scores.md").read_text()
    f = get_denoiser("unet", unet_weights=str(out / "unet3d.npz"))
    y = f(np.random.default_rng(0).normal(size=(20, 20, 20)))
    assert y.shape == (20, 20, 20) and np.all(np.isfinite(y))


def test_without_torch_the_error_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=r"'unet' extra.*\[unet\]"):
        get_denoiser("unet")


def test_foreign_or_missing_weights_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        get_denoiser("unet", unet_weights=str(tmp_path / "none.npz"))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a U-Net weights file"):
        get_denoiser("unet", unet_weights=str(tmp_path / "other.npz"))


def test_engine_pairs_are_the_refinements_half_maps_with_fsc_filtered_targets():
    """Every iteration gives both halves' x~ = B / K; their target is the truth times the FSC of
    the two halves (§3.1), the same for both, and x~ holds the truth at low resolution."""
    from polishplugin.core.fourier import fsc
    rng = np.random.default_rng(8)
    truth = pseudo_protein(24, 3.0, rng).astype(np.float64)
    truth /= truth.std()
    got = unet_pairs.engine_pairs(truth, 3.0, rng, count=60, snr=0.5, max_iter=2,
                                  healpix_order=0, max_order=1)
    assert [(g[3]["iteration"], g[3]["half"]) for g in got] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for i in (0, 2):
        (x1, t1, c1, _), (x2, t2, c2, _) = got[i], got[i + 1]
        assert not np.allclose(x1, x2)
        curve = fsc(x1, x2)
        np.testing.assert_allclose(c1, curve)
        np.testing.assert_allclose(t1, unet_pairs.fsc_target(truth, curve), atol=1e-9)
        np.testing.assert_allclose(t2, t1)
        assert fsc(x1, truth)[2] > 0.5 and np.linalg.norm(t1) < np.linalg.norm(truth)


def test_red_blend_is_eq17_shell_by_shell():
    """FSC 1: the data alone; FSC 0: lambda x the prior mean; prior mean 0: FSC x x~ (eq. 11)."""
    rng = np.random.default_rng(3)
    x, m = rng.normal(size=(2, 16, 16, 16))
    np.testing.assert_allclose(unet_pairs.red_blend(x, m, np.ones(20)), x, atol=1e-12)
    np.testing.assert_allclose(unet_pairs.red_blend(x, m, np.zeros(20), 0.3), 0.3 * m, atol=1e-12)
    half = unet_pairs.red_blend(x, 0 * m, np.full(20, 0.5))
    np.testing.assert_allclose(half, 0.5 * x, atol=1e-12)


def test_relative_loss_weighs_low_resolution_maps_up():
    from polishplugin.programs.train_denoiser import pair_weights, standardise_pair
    rng = np.random.default_rng(6)
    truth = pseudo_protein(32, 2.0, rng).astype(np.float64)
    pairs = [standardise_pair(*unet_pairs.gaussian_pair(truth, 2.0, rng, r)[:2]) for r in (5, 12)]
    np.testing.assert_allclose(pair_weights(pairs, "mse", 0.01), [1, 1])
    w = pair_weights(pairs, "relative", 0.01)
    assert w.mean() == pytest.approx(1.0) and w[1] > 5 * w[0]


def test_maps_out_of_the_truths_frame_are_told_apart():
    """A map that agrees with the truth passes; the same map shifted by 3 voxels (its halves
    still agreeing with each other) does not."""
    rng = np.random.default_rng(9)
    truth = pseudo_protein(32, 2.0, rng).astype(np.float64)
    x, target, curve = unet_pairs.gaussian_pair(truth, 2.0, rng, 6.0)
    assert unet_pairs.in_truth_frame(x, target, curve)
    assert not unet_pairs.in_truth_frame(np.roll(x, 3, axis=0), target, curve)


def test_zero_steps_scores_the_given_weights_unchanged(tmp_path):
    from polishplugin.core.refine.unet import DEFAULT_WEIGHTS
    from polishplugin.programs.train_denoiser import main
    out = tmp_path / "score"
    assert main(["--out", str(out), "--init", DEFAULT_WEIGHTS, "--steps", "0", "--eval-box", "24",
                 "--eval-pixel", "2.0", "--eval-pseudo", "1", "--eval-particles", "40"]) == 0
    with np.load(DEFAULT_WEIGHTS) as a, np.load(out / "unet3d.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")
    assert len(json.loads((out / "scores.json").read_text())["heldout"]) == 6
    assert main(["--out", str(tmp_path / "x"), "--steps", "0"]) != 0
