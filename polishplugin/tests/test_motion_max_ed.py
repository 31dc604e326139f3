"""A truncated GP basis (--max-ed K, RELION's --max_ed): the K leading eigenpairs of Sigma_V made
by Lanczos without a P x P matrix equal the dense ones; the programs' option (default: all, bit
for bit), its tracks and its refusal of bad values."""
import argparse
import json

import numpy as np
import pytest

from polishplugin.core.motion import prior
from polishplugin.core.motion.fit import fit_tracks
from polishplugin.core.motion.prior import gp_basis, leading_eigenpairs, velocity_covariance
from polishplugin.io.star import read_tracks_star
from polishplugin.programs import cli, polish, simulate, train


def _dense(pos, sv, sd, kernel="exp"):
    lam, w = np.linalg.eigh(velocity_covariance(pos, sv, sd, kernel))
    return lam[::-1], w[:, ::-1]


@pytest.mark.parametrize("kernel,k", [("exp", 12), ("sq_exp", 5), ("exp", 1)])
def test_leading_eigenpairs_equal_the_dense_ones(kernel, k):
    rng = np.random.default_rng(2)
    pos = np.concatenate([rng.uniform(0, 2048, (140, 2)), [[30.0, 40.0]] * 3])  # a null space
    sv, sd = 0.7, 4000.0 if kernel == "exp" else 3e5
    lam, w, products = leading_eigenpairs(pos, sv, sd, k, kernel)
    lam0, w0 = _dense(pos, sv, sd, kernel)
    assert w.shape == (143, k) and 0 < products < 143
    np.testing.assert_allclose(lam, lam0[:k], rtol=1e-11, atol=0)
    # the same span: the cosines of the principal angles are all 1; orthonormal columns
    cos = np.linalg.svd(w0[:, :k].T @ w, compute_uv=False)
    np.testing.assert_allclose(cos, 1.0, atol=1e-10)
    np.testing.assert_allclose(w.T @ w, np.eye(k), atol=1e-12)
    assert lam0[k] < lam[-1] * (1 - 1e-6)          # a gap: the leading span is well defined


def test_truncated_basis_is_made_without_sigma_v(monkeypatch):
    """gp_basis(max_dims=K) with K well below P never forms Sigma_V, and keeps rel_eps: an
    eigenvalue below rel_eps * the largest is dropped as by the dense path."""
    rng = np.random.default_rng(4)
    pos = rng.uniform(0, 2048, (120, 2))
    sv, sd = 0.5, 4167.0
    full, lam_full = gp_basis(pos, sv, sd)
    monkeypatch.setattr(prior, "velocity_covariance", lambda *a, **k: pytest.fail("P x P made"))
    b, lam = gp_basis(pos, sv, sd, max_dims=15)
    assert b.shape == (120, 15)
    np.testing.assert_allclose(lam, lam_full[:15], rtol=1e-11)
    np.testing.assert_allclose(b @ b.T, full[:, :15] @ full[:, :15].T, atol=1e-11 * sv ** 2)
    eps = 0.5 * (lam_full[8] + lam_full[9]) / lam_full[0]      # between the 9th and 10th
    b, lam = gp_basis(pos, sv, sd, max_dims=15, rel_eps=eps)
    assert b.shape == (120, 9) and len(lam) == 9


def _micrograph(seed, P, F, dims):
    """CC maps of P smooth particles moving along velocities in the ``dims`` leading GP
    dimensions only (high SNR), as tests/test_motion_fit.py's synthetic micrograph."""
    from polishplugin.core.fourier import fourier_shift
    from polishplugin.core.motion import energy as en
    from polishplugin.core.motion.observation import cc_maps_from_spectra, patch_spectra
    rng = np.random.default_rng(seed)
    n, r = 32, 6
    pos = rng.uniform(0, 1500, (P, 2))
    basis, lam = gp_basis(pos, 0.6, 800.0)
    c = np.zeros((F - 1, basis.shape[1], 2))
    c[:, :dims] = rng.normal(scale=0.6, size=(dims, 2)) * np.linspace(1, 0.4, F - 1)[:, None, None]
    tracks = en.positions(rng.uniform(-1, 1, (P, 2)), c, basis)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    imgs = np.fft.ifft2(np.fft.fft2(rng.normal(size=(P, n, n))) * np.exp(-2 * (np.pi * 2 * k) ** 2)).real
    patches = np.array([[fourier_shift(imgs[p], *tracks[p, f]) for f in range(F)] for p in range(P)])
    preds = np.fft.fft2(imgs)
    power = np.full(n, np.mean(np.abs(preds) ** 2) * 0.05)
    return cc_maps_from_spectra(patch_spectra(patches), preds, None, r, power), pos, tracks


def test_truncated_fit_close_to_the_full_one(monkeypatch):
    """Motion in the 6 leading dimensions: the fit in the 20 leading ones (Lanczos: 41 Krylov
    vectors < 60 particles) gives the tracks of the dense basis cut to 20 and is as near the
    truth as the full basis (nearer: the noise has fewer dimensions); in 2 dimensions it cannot."""
    cc, pos, truth = _micrograph(1, 60, 7, 6)
    sig = (0.6, 800.0, 0.3)
    rms = lambda a, b: float(np.sqrt(np.mean(np.sum((a - b) ** 2, -1))))  # noqa: E731
    full = fit_tracks(cc, pos, sig, backend="numpy")
    part = fit_tracks(cc, pos, sig, backend="numpy", max_dims=20)
    two = fit_tracks(cc, pos, sig, backend="numpy", max_dims=2)
    assert full.n_dims == 60 and part.n_dims == 20 and two.n_dims == 2
    assert rms(full.tracks, truth) < 0.1 and rms(part.tracks, truth) < 0.03
    assert rms(part.tracks, full.tracks) < 0.1 and rms(two.tracks, truth) > 0.3
    monkeypatch.setattr(prior, "krylov_size", lambda P, k: P)       # the dense path, cut to 20
    dense = fit_tracks(cc, pos, sig, backend="numpy", max_dims=20)
    np.testing.assert_allclose(part.tracks, dense.tracks, atol=1e-3)


@pytest.mark.parametrize("text", ["0", "-2", "1.5", "x"])
def test_bad_max_ed_refused(text, capsys):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.max_ed(text)
    for program in (polish, train):
        with pytest.raises(SystemExit) as exc:
            program.build_parser().parse_args(["--particles", "p", "--mics", "m", "--max-ed",
                                               text])
        assert exc.value.code == 2
        assert "--max-ed" in capsys.readouterr().err
    assert cli.max_ed("-1") == -1 and cli.max_ed("7") == 7


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate.main(["--out", str(out), "--micrographs", "2", "--mic-size", "320", "--frames", "6",
                   "--particles", "4", "--box", "48", "--pixel-size", "1.5", "--snr", "0.1",
                   "--no-figures", "--seed", "3"])
    return out


def _polish(sim, out, *extra):
    f = simulate.project_files(sim)
    assert polish.main(["--particles", f["particles"], "--mics", f["mics"], "--postprocess",
                        f["postprocess"], "--root", str(sim), "--out", str(out), "--no-figures",
                        "--sigma-vel", "0.5", "--sigma-div", "5000", "--sigma-acc", "2"]
                       + list(extra)) == 0
    stars = sorted(out.glob("tracks/**/*_tracks.star"))
    assert len(stars) == 2
    dims = [json.loads(p.read_text())["gp_dims"] for p in sorted(out.glob("diag/**/*.json"))]
    return [read_tracks_star(p) for p in stars], dims


def test_polish_max_ed(sim, tmp_path):
    """-1 (and K >= the particles) is the default job bit for bit; K = 2 of 4 particles fits in
    2 dimensions, tracks near the full basis' but not equal; the setting is recorded."""
    base, dims = _polish(sim, tmp_path / "base")
    assert dims == [4, 4]
    for k in ("-1", "4"):
        same, _ = _polish(sim, tmp_path / ("k" + k), "--max-ed", k)
        for a, b in zip(base, same):
            np.testing.assert_array_equal(a, b)
    two, dims = _polish(sim, tmp_path / "k2", "--max-ed", "2")
    assert dims == [2, 2]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(base, two))
    assert 0 < diff < 1.0                                  # A
    assert json.loads((tmp_path / "k2" / "settings.json").read_text())["settings"]["max_ed"] == 2
    assert "max_ed" not in json.loads((tmp_path / "base" / "settings.json").read_text())["settings"]


@pytest.mark.parametrize("method", ["evidence", "tcc"])
def test_train_max_ed_reaches_every_fit(sim, tmp_path, monkeypatch, method):
    """train --max-ed 3: every alignment of the subset (both methods) fits in 3 dimensions."""
    from polishplugin.core.motion import train_data
    seen = []

    def fit(*a, **k):
        seen.append(k.get("max_dims"))
        return fit_tracks(*a, **k)
    monkeypatch.setattr(train_data, "fit_tracks", fit)
    f = simulate.project_files(sim)
    assert train.main(["--particles", f["particles"], "--mics", f["mics"], "--postprocess",
                       f["postprocess"], "--root", str(sim), "--out", str(tmp_path / "t"),
                       "--min-particles", "8", "--restarts", "1", "--max-evals", "3",
                       "--eval-max-res", "7", "--method", method, "--no-figures",
                       "--max-ed", "3"]) == 0
    assert seen and set(seen) == {3}
    assert json.loads((tmp_path / "t" / "settings.json").read_text())["settings"]["max_ed"] == 3
