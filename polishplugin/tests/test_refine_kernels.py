"""Refinement kernels of the backend interface (slice_extract, backproject_slices, estep_scores):
every backend agrees with the numpy reference (E-step scores: with a direct einsum); slice
extraction and back-projection are adjoint with the same trilinear weights; the E-step
log-likelihoods equal a direct evaluation with loops over images, poses and pixels (and
real-space shifted predictions); pose posteriors equal a direct normalisation."""
import math

import numpy as np
import pytest

from polishplugin.backends import get_backend
from polishplugin.core.fourier import shift_phase
from polishplugin.core.geometry import euler_to_matrix, random_orientations
from polishplugin.core.projector import Projector
from polishplugin.core.refine.estep import log_likelihoods, pose_posteriors
from polishplugin.tests.opencl import OPENCL_REASON

NUMPY = get_backend("numpy")
OTHERS = [get_backend("numba")] + ([] if OPENCL_REASON else [get_backend("opencl")])


def _rots(count, seed):
    return euler_to_matrix(*random_orientations(count, np.random.default_rng(seed)))


def _disc(rng, count, radius):
    """``count`` frequencies (kx, ky) uniform in the disc |k| < radius."""
    r = radius * np.sqrt(rng.uniform(0, 1, count))
    a = rng.uniform(0, 2 * np.pi, count)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _complex(rng, shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


@pytest.mark.parametrize("be", OTHERS, ids=lambda b: b.NAME)
def test_slice_extract_matches_numpy(be):
    rng = np.random.default_rng(0)
    s = 20
    vol = _complex(rng, (s,) * 3)
    rots = _rots(9, 1)
    kxy = rng.uniform(-0.5, 0.5, (70, 2))          # reaches beyond the box: periodic wrap
    ref = NUMPY.slice_extract(vol, rots, kxy, s, s // 2)
    np.testing.assert_allclose(be.slice_extract(vol, rots, kxy, s, s // 2), ref,
                               rtol=0, atol=1e-10)
    ref32 = NUMPY.slice_extract(vol.astype(np.complex64), rots, kxy, s, s // 2)
    got32 = be.slice_extract(vol.astype(np.complex64), rots, kxy, s, s // 2)
    np.testing.assert_allclose(got32, ref32, rtol=0, atol=2e-6 * np.abs(ref).max())
    assert np.abs(ref).max() > 1.0


@pytest.mark.parametrize("shape", [(12, 12), (11, 11), (12, 9)])
def test_projector_mirrors_friedel_mates_exactly(shape):
    """The projector interpolates one pixel of each Friedel pair: its slices equal the slices
    interpolated at every pixel (the padded transform of a real map is Hermitian)."""
    rng = np.random.default_rng(12)
    proj = Projector(rng.normal(size=(10,) * 3), backend="numba")
    rots = _rots(5, 13)
    ny, nx = shape
    ky, kx = np.meshgrid(np.fft.fftfreq(ny), np.fft.fftfreq(nx), indexing="ij")
    inside = np.flatnonzero(np.hypot(ky, kx).ravel() <= 0.5)
    full = np.zeros((5, ny * nx), dtype=np.complex128)
    full[:, inside] = get_backend("numba").slice_extract(
        proj._f3, rots, np.stack([kx.ravel()[inside], ky.ravel()[inside]], axis=1), proj.npad,
        proj.npad // 2)
    expected = full.reshape(5, ny, nx) * shift_phase(ny, nx, nx // 2, ny // 2)  # centring
    got = proj._slice(rots, ny, nx)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(full).max())
    assert np.abs(full).max() > 1.0


@pytest.mark.parametrize("be", OTHERS, ids=lambda b: b.NAME)
def test_backproject_slices_matches_numpy(be):
    rng = np.random.default_rng(2)
    s, pad = 24, 2
    rots = _rots(13, 3)
    kxy = _disc(rng, 90, 5.99)                     # pad |k| < s/2; half of the points flip
    values = _complex(rng, (13, 90))
    weights = rng.uniform(0, 1, (13, 90))
    out = []
    for b in (NUMPY, be):
        d = np.zeros((s, s, s // 2 + 1), dtype=np.complex128)
        w = np.zeros(d.shape)
        b.backproject_slices(d, w, rots, kxy, values, weights, pad)
        b.backproject_slices(d, w, rots[:4], kxy, values[:4], weights[:4], pad)  # accumulates
        out.append((d, w))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=0, atol=1e-12)
    total = weights.sum() + weights[:4].sum()
    assert out[0][1].sum() == pytest.approx(total, rel=1e-12)   # trilinear weights sum to 1
    assert np.count_nonzero(out[0][1]) > 1000
    with pytest.raises(ValueError, match="edge"):
        be.backproject_slices(d, w, rots, kxy * 2.01, values, weights, pad)


def test_estep_scores_equal_einsum_on_every_backend():
    rng = np.random.default_rng(4)
    N, O, T, M = 3, 37, 5, 41
    a, p = _complex(rng, (N, M)), _complex(rng, (O, M))
    b = rng.uniform(0, 2, (N, M))
    e = np.exp(1j * rng.uniform(0, 2 * np.pi, (T, M)))
    ref = NUMPY.estep_scores(a, b, p, e)
    direct = 2 * np.einsum("nm,om,tm->not", a, p, e).real \
        - np.einsum("nm,om->no", b, np.abs(p) ** 2)[:, :, None]
    np.testing.assert_allclose(ref, direct, rtol=0, atol=1e-11 * np.abs(direct).max())
    for be in OTHERS:
        np.testing.assert_allclose(be.estep_scores(a, b, p, e), ref, rtol=0,
                                   atol=1e-11 * np.abs(ref).max())


@pytest.mark.parametrize("be", [NUMPY] + OTHERS, ids=lambda b: b.NAME)
def test_slice_extract_and_backproject_slices_are_adjoint(be):
    """Re <P X, Y> = Re <X, P^T Y> on the half grid, for a Hermitian X (the slice of X at q with
    q_x < 0 is the conjugate of the slice at -q, where back-projection puts conj(Y))."""
    rng = np.random.default_rng(5)
    s, pad, B, M = 20, 2, 6, 80
    x = np.fft.fftn(rng.normal(size=(s,) * 3))      # Hermitian, origin at index 0
    rots = _rots(B, 6)
    kxy = _disc(rng, M, 4.99)
    y = _complex(rng, (B, M))
    px = be.slice_extract(x, rots, kxy, pad, 0)     # periodic: origin 0 is the unshifted grid
    d = np.zeros((s, s, s // 2 + 1), dtype=np.complex128)
    w = np.zeros(d.shape)
    be.backproject_slices(d, w, rots, kxy, y, np.zeros((B, M)), pad)
    lhs = np.sum((np.conj(px) * y).real)
    rhs = np.sum((np.conj(x[:, :, :s // 2 + 1]) * d).real)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    assert abs(lhs) > 1.0
    assert not w.any()


def _tiny(n, seed, hermitian):
    """Images, CTFs, sigma^-2 (non-zero at Nyquist too), Hermitian projections (fft2 of real
    images), orientations and translations for a brute-force E-step."""
    rng = np.random.default_rng(seed)
    N, O = 2, 3
    p = np.fft.fft2(rng.normal(size=(O, n, n)))
    if hermitian:   # transforms of real images, even CTF and sigma (as in refinement)
        y = np.fft.fft2(rng.normal(size=(N, n, n)))
        k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
        c = np.cos(30 * k ** 2 + rng.uniform(0, 1, (N, 1, 1)))
        s = np.broadcast_to(1.0 / (1.0 + 4 * k), (N, n, n)).copy()
        s[:, k > 0.45] = 0.0
    else:           # any complex y, CTF and sigma^-2: only P and e_t need to be Hermitian
        y = _complex(rng, (N, n, n))
        c = rng.normal(size=(N, n, n))
        s = rng.uniform(0, 1, (N, n, n)) * (rng.uniform(size=(N, n, n)) > 0.3)
    return y, c, s, p


@pytest.mark.parametrize("be", [NUMPY] + OTHERS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("n", [6, 7])
def test_log_likelihoods_equal_pixel_loops(be, n):
    """-sum_k s(k) |y(k) - c(k) P(k) exp(-2 pi i k.t)|^2 with loops over images, orientations,
    translations and every pixel (k = fftfreq, sub-pixel t)."""
    y, c, s, p = _tiny(n, 7 + n, hermitian=False)
    trans = np.array([[0.0, 0.0], [0.7, -1.3], [-2.0, 0.25]])
    got = log_likelihoods(y, c, p, trans, s, backend=be)
    f = np.fft.fftfreq(n)
    brute = np.zeros(got.shape)
    for i in range(len(y)):
        for o in range(len(p)):
            for t, (tx, ty) in enumerate(trans):
                acc = 0.0
                for iy in range(n):
                    for ix in range(n):
                        e = complex(math.cos(-2 * math.pi * (f[ix] * tx + f[iy] * ty)),
                                    math.sin(-2 * math.pi * (f[ix] * tx + f[iy] * ty)))
                        r = y[i, iy, ix] - c[i, iy, ix] * p[o, iy, ix] * e
                        acc += s[i, iy, ix] * (r.real ** 2 + r.imag ** 2)
                brute[i, o, t] = -acc
    np.testing.assert_allclose(got, brute, rtol=0, atol=1e-10 * np.abs(brute).max())


@pytest.mark.parametrize("be", [NUMPY] + OTHERS, ids=lambda b: b.NAME)
def test_log_likelihoods_equal_real_space_shifted_predictions(be):
    """Integer translations: the prediction rendered in real space (ifft2 of c P, np.roll by
    t) and transformed back; sigma^-2 zero beyond 0.45 cycles/px (pixels skipped)."""
    n = 8
    y, c, s, p = _tiny(n, 3, hermitian=True)
    trans = np.array([[0.0, 0.0], [2.0, -1.0], [-3.0, 1.0]])
    got = log_likelihoods(y, c, p, trans, s[0], backend=be)
    brute = np.zeros(got.shape)
    for i in range(len(y)):
        for o in range(len(p)):
            pred = np.fft.ifft2(c[i] * p[o]).real
            for t, (tx, ty) in enumerate(trans):
                moved = np.fft.fft2(np.roll(pred, (int(ty), int(tx)), axis=(0, 1)))
                brute[i, o, t] = -np.sum(s[0] * np.abs(y[i] - moved) ** 2)
    np.testing.assert_allclose(got, brute, rtol=0, atol=1e-10 * np.abs(brute).max())


def test_pose_posteriors_equal_direct_normalisation():
    rng = np.random.default_rng(8)
    ll = -500.0 + rng.normal(0, 4.0, (3, 5, 4))
    w, log_marginal = pose_posteriors(ll, prune=0.0)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), 1.0, rtol=0, atol=1e-12)
    for i in range(len(ll)):
        flat = [float(v) for v in ll[i].ravel()]
        shift = max(flat)
        terms = [math.exp(v - shift) for v in flat]
        total = math.fsum(terms)
        np.testing.assert_allclose(w[i].ravel(), [t / total for t in terms], rtol=1e-12)
        assert log_marginal[i] == pytest.approx(shift + math.log(total), rel=1e-14)
