"""M-step of denoiser-regularised refinement (Kimanius et al. 2021) against independent
computations: the Fourier-slice projector and the back-projector into B, K (eq. 9) are adjoint;
eq. 11 and eq. 17 equal the least-squares solution of the explicit linear model; eq. 12 against
shell means taken by brute force; the CW-RED lambda schedule; the RELION grid conversions."""
import numpy as np
import pytest

from polishplugin.core.fourier import shift_phase
from polishplugin.core.geometry import euler_to_matrix, random_orientations
from polishplugin.core.projector import Projector
from polishplugin.core.reconstruct import Backprojector
from polishplugin.core.refine.confidence import cw_red_lambda, nominal_resolution
from polishplugin.core.fourier import half_transform_shells
from polishplugin.core.refine.mstep import (backproject, map_update, prior_precision, tau2_from_fsc,
                                            unregularised)
from polishplugin.core.refine.relion_grid import half_to_map, map_to_half
from polishplugin.core.refine.update import regularised_map


def _full_from_half(h, size):
    """Full (size^3) Hermitian grid from the half grid (z, y, x <= size//2)."""
    full = np.zeros((size,) * 3, dtype=h.dtype)
    full[:, :, :size // 2 + 1] = h
    neg = (-np.arange(size)) % size
    for x in range(size // 2 + 1, size):
        full[:, :, x] = np.conj(h[neg][:, neg, size - x])
    return full


def test_projection_and_backprojection_with_ctf_are_adjoint():
    """<c H X, Y>_{sigma^-2} = <X, B(Y)> with B accumulated by backproject (eq. 9)."""
    rng = np.random.default_rng(0)
    n, pad, count = 12, 2, 5
    size = pad * n
    x3 = np.fft.fftn(rng.normal(size=(size,) * 3))               # Hermitian, unshifted
    angles = np.stack(random_orientations(count, rng), axis=1)
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    y = np.fft.fft2(rng.normal(size=(count, n, n)))               # Hermitian images
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    ctf = np.cos(40 * k ** 2 + rng.uniform(0, 1, (count, 1, 1)))  # real, even in k
    inv_s2 = 1.0 + 3 * k[None] ** 2 * np.ones((count, 1, 1))
    r_max = n // 2 - 1
    proj = Projector(np.zeros((n,) * 3), pad=pad, r_max=r_max / n, backend="numpy")
    proj._f3 = np.fft.fftshift(x3).astype(np.complex128)        # the slice operator H on X
    hx = proj.project_many(angles) / shift_phase(n, n, n // 2, n // 2)
    lhs = np.sum((np.conj(ctf * hx) * inv_s2 * y).real)
    bp = Backprojector(n, pad, r_max=r_max)
    backproject(bp, y, rots, ctfs=ctf, inv_sigma2=inv_s2)
    rhs = np.sum((np.conj(x3) * _full_from_half(bp.fourier_data(), size)).real)
    assert lhs == pytest.approx(rhs, rel=1e-9)
    # K is the back-projection of c^2 sigma^-2 (the same adjoint applied to the weights)
    kb = Backprojector(n, pad, r_max=r_max)
    backproject(kb, ctf ** 2 * inv_s2, rots)
    np.testing.assert_allclose(bp.fourier_weights(), kb.fourier_data().real, atol=1e-9)


def _grid_rotations():
    """Rotations by multiples of 90 degrees: slices land on grid points, H^* H is diagonal."""
    q = np.pi / 2
    return np.array([[0, 0, 0], [q, q, 0], [0, q, q], [q, 2 * q, 3 * q], [2 * q, q, q]])


@pytest.mark.parametrize("with_prior_mean", [False, True])
def test_updates_equal_least_squares_of_the_explicit_model(with_prior_mean):
    """Eq. 11 (prior mean 0) and eq. 17's form (prior mean m) equal argmin_X
    sum_i |sigma^-1 (y_i - c_i H_i X)|^2 + |tau^-1 (X - m)|^2, solved as an explicit lstsq."""
    rng = np.random.default_rng(1)
    n, pad = 8, 1
    r_max = n // 2 - 1
    angles = _grid_rotations()
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    count = len(angles)
    y = np.fft.fft2(rng.normal(size=(count, n, n)))
    ky, kx = np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij")
    ctf = 0.3 + np.cos(0.2 * (kx ** 2 + ky ** 2) + rng.uniform(0, 1, (count, 1, 1)))
    inv_s2 = rng.uniform(0.5, 2.0, (count, 1, 1)) * np.ones((1, n, n))
    inv_s2 = 0.5 * (inv_s2 + inv_s2[:, (-np.arange(n)) % n][:, :, (-np.arange(n)) % n])
    prec_full = rng.uniform(0.2, 1.0, (n,) * 3)
    prec_full = 0.5 * (prec_full + prec_full[np.ix_(*[(-np.arange(n)) % n] * 3)])
    m_full = np.fft.fftn(rng.normal(size=(n,) * 3)) if with_prior_mean else np.zeros((n,) * 3)
    # explicit model: rows (i, k) for |k| <= r_max, column = voxel R_i^T k (rounded, mod n)
    rows, cols, vals, rhs = [], [], [], []
    sel = np.hypot(kx, ky) <= r_max
    for i in range(count):
        q = np.rint(np.einsum("ja,jk->ka", rots[i][:2], np.stack([kx[sel], ky[sel]])))
        q = q.astype(int) % n
        col = np.ravel_multi_index((q[:, 2], q[:, 1], q[:, 0]), (n,) * 3)
        w = np.sqrt(inv_s2[i][sel])
        rows.append(len(rhs) + np.arange(sel.sum()))
        cols.append(col)
        vals.append(w * ctf[i][sel])
        rhs.extend(w * y[i][sel])
    a = np.zeros((len(rhs) + n ** 3, n ** 3), dtype=np.complex128)
    for r, c, v in zip(rows, cols, vals):
        a[r, c] = v
    a[len(rhs):] = np.diag(np.sqrt(prec_full.ravel()))
    b = np.concatenate([np.array(rhs), np.sqrt(prec_full.ravel()) * m_full.ravel()])
    truth = np.linalg.lstsq(a, b, rcond=None)[0].reshape((n,) * 3)
    bp = Backprojector(n, pad, r_max=r_max)
    backproject(bp, y, rots, ctfs=ctf, inv_sigma2=inv_s2)
    half = slice(0, n // 2 + 1)
    got = map_update(bp.fourier_data(), bp.fourier_weights(), prec_full[:, :, half],
                     m_full[:, :, half] if with_prior_mean else None)
    np.testing.assert_allclose(got, truth[:, :, half], atol=1e-8)


def test_red_reduces_to_tikhonov_and_to_the_unregularised_map():
    """Eq. 17: lambda = 0 gives eq. 11; f = identity with lambda = 1 gives x~ = B / K; the result
    is affine in lambda."""
    rng = np.random.default_rng(2)
    shape = (6, 6, 4)
    data = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    weight = rng.uniform(0.1, 3.0, shape)
    prec = rng.uniform(0.1, 2.0, shape)
    xt = unregularised(data, weight)
    tik = map_update(data, weight, prec)
    np.testing.assert_allclose(tik, data / (weight + prec))
    np.testing.assert_allclose(map_update(data, weight, prec, 0.0 * xt), tik)
    np.testing.assert_allclose(map_update(data, weight, prec, xt), xt)
    half = map_update(data, weight, prec, 0.5 * xt)
    np.testing.assert_allclose(half, 0.5 * (tik + xt))


def test_infinite_precision_returns_the_prior_mean():
    """No data and no signal (K = 0, tau^2 = 0): eq. 11 gives 0, eq. 17 gives lambda f(x~)."""
    data = np.zeros((2, 2, 2), complex)
    weight = np.zeros((2, 2, 2))
    prec = prior_precision(np.zeros(4), weight, pad=1)
    assert np.all(np.isinf(prec))
    np.testing.assert_array_equal(map_update(data, weight, prec), 0)
    m = np.full((2, 2, 2), 3.0 + 1j)
    np.testing.assert_array_equal(map_update(data, weight, prec, m), m)


def test_tau2_from_fsc_against_brute_force_shell_means():
    """Eq. 12: tau^2 = FSC/(1-FSC) / mean K(shell), K = pad^3 W; FSC clamped to [0.001, 0.999];
    prior_precision turns it back into mean W / (SSNR fudge)."""
    rng = np.random.default_rng(3)
    n, pad = 8, 2
    size = n * pad
    weight = rng.uniform(1.0, 5.0, (size, size, size // 2 + 1))
    fsc = np.array([1.0, 0.95, 0.6, 0.1, -0.2, 0.3])    # shell 5 lies beyond the grid's r_max
    tau2 = tau2_from_fsc(fsc, weight, pad)
    assert tau2[5] == 0.0
    shells = half_transform_shells(size, pad)
    kz = np.fft.fftfreq(size) * size
    for s in range(len(fsc) - 1):
        vals = [weight[i, j, x]
                for i in range(size) for j in range(size) for x in range(size // 2 + 1)
                if np.sqrt(kz[i] ** 2 + kz[j] ** 2 + x ** 2) < size // 2 and shells[i, j, x] == s]
        f = min(max(fsc[s], 0.001), 0.999)
        assert tau2[s] == pytest.approx(f / (1 - f) / (pad ** 3 * np.mean(vals)), rel=1e-12)
    prec = prior_precision(tau2, weight, pad, fudge=2.0)
    s = 2
    ssnr = 0.6 / 0.4
    inside = (shells == s) & (np.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2
                                      + np.arange(size // 2 + 1) ** 2) < size // 2)
    np.testing.assert_allclose(prec[shells == s], weight[inside].mean() / (ssnr * 2.0))
    with pytest.raises(ValueError, match="fudge"):
        prior_precision(tau2, weight, pad, fudge=0.0)


def test_shells_round_halves_up_like_relion():
    """ROUND(|q| / pad): |q| = 1 with pad 2 is shell 1 (numpy's rint would give 0)."""
    shells = half_transform_shells(8, 2)
    assert shells[0, 0, 1] == 1 and shells[0, 0, 2] == 1 and shells[0, 0, 3] == 2


@pytest.mark.parametrize("res, lam",
                         [(20.0, 0.0), (10.0, 0.0), (7.25, 0.5), (4.5, 1.0), (3.0, 1.0)])
def test_cw_red_lambda_schedule(res, lam):
    assert cw_red_lambda(res) == pytest.approx(lam)


def test_cw_red_thresholds_are_configurable_and_checked():
    assert cw_red_lambda(6.0, low_A=8.0, high_A=6.0) == 1.0
    assert cw_red_lambda(7.0, low_A=8.0, high_A=6.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="thresholds"):
        cw_red_lambda(5.0, low_A=4.0, high_A=6.0)


def test_nominal_resolution_from_the_half_map_fsc():
    """FSC crossing 0.143 half way between shells 9 and 10 of a 64 box at 1.5 A: 64*1.5/9.5 A."""
    fsc = np.concatenate([np.ones(10), [0.043], np.zeros(22)])
    fsc[9] = 0.243
    assert nominal_resolution(fsc, 64, 1.5) == pytest.approx(64 * 1.5 / 9.5)


def test_grid_round_trip_inside_the_sphere():
    """half_to_map(map_to_half(v)) = v inside the radius-n/2 sphere, at paddings 1 and 2."""
    rng = np.random.default_rng(4)
    n = 16
    vol = rng.normal(size=(n,) * 3)
    c = np.arange(n) - n // 2
    inside = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2) < n / 2
    for pad in (1, 2):
        back = half_to_map(map_to_half(vol, pad), n, pad)
        np.testing.assert_allclose(back[inside], vol[inside], atol=1e-10)


def test_red_hands_the_denoiser_the_unregularised_real_space_map():
    """The denoiser sees half_to_map(B / K); with lambda = 0 the result is the Tikhonov map."""
    rng = np.random.default_rng(5)
    n, pad = 12, 2
    size = n * pad
    data = np.fft.rfftn(rng.normal(size=(size,) * 3))
    weight = rng.uniform(0.5, 2.0, data.shape)
    tau2 = np.full(n // 2 + 1, 0.5)
    seen = []

    def spy(v):
        seen.append(v.copy())
        return 2.0 * v
    tik, _ = regularised_map(data, weight, tau2, n, pad, n)
    red0, _ = regularised_map(data, weight, tau2, n, pad, n, mode="red", denoiser=spy, lam=0.0)
    np.testing.assert_allclose(red0, tik)
    red, xt = regularised_map(data, weight, tau2, n, pad, n, mode="red", denoiser=spy, lam=0.5)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], xt)
    assert not np.allclose(red, tik)


def test_per_shell_weight_of_the_prior_mean():
    """shell_weight scales the denoised prior mean per shell: all 0 gives the Tikhonov map,
    all 1 plain RED; weight 1 up to shell 3 only changes the map from RED's in the outer shells,
    and the inner shells of the map's transform agree with RED's there."""
    rng = np.random.default_rng(6)
    n, pad = 12, 2
    size = n * pad
    data = np.fft.rfftn(rng.normal(size=(size,) * 3))
    weight = rng.uniform(0.5, 2.0, data.shape)
    tau2 = np.full(n // 2 + 1, 0.5)

    def f(v):
        return 2.0 * v + 1.0
    args = (data, weight, tau2, n, pad, n)
    tik, _ = regularised_map(*args)
    red, _ = regularised_map(*args, mode="red", denoiser=f, lam=0.7)
    zero, _ = regularised_map(*args, mode="red", denoiser=f, lam=0.7, shell_weight=np.zeros(7))
    ones, _ = regularised_map(*args, mode="red", denoiser=f, lam=0.7, shell_weight=np.ones(7))
    np.testing.assert_allclose(zero, tik, atol=1e-12)
    np.testing.assert_allclose(ones, red, atol=1e-12)
    inner, _ = regularised_map(*args, mode="red", denoiser=f, lam=0.7,
                               shell_weight=[1.0, 1.0, 1.0, 1.0])
    k = np.fft.fftfreq(n) * n
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    fi, fr, ft = (np.fft.fftn(np.fft.ifftshift(v)) for v in (inner, red, tik))
    assert np.abs(fi - fr)[r <= 2].max() < 0.2 * np.abs(fr - ft)[r <= 2].max()
    assert np.abs(fi - fr)[r >= 5].max() > 0.5 * np.abs(fr - ft)[r >= 5].max()
