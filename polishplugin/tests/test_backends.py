"""Backends: numba agrees with numpy; Catmull-Rom interpolation is exact on the grid and its
analytic gradient matches finite differences; backend selection."""
import numpy as np
import pytest

from polishplugin.backends import BackendError, get_backend
from polishplugin.tests.opencl import OPENCL_REASON


def _backends():
    out = [get_backend("numpy"), get_backend("numba")]
    if not OPENCL_REASON:
        out.append(get_backend("opencl"))   # PoCL or a GPU, double precision where it has it
    return out


BACKENDS = _backends()


def _random(seed=0, P=4, F=6, W=9):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(P, F, W, W)), rng.uniform(-7, 7, size=(P, F, 2))


def test_numba_matches_numpy():
    cc, pos = _random()
    v1, g1 = get_backend("numpy").cc_interp(cc.astype(np.float32), pos)
    v2, g2 = get_backend("numba").cc_interp(cc.astype(np.float32), pos)
    np.testing.assert_allclose(v2, v1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g2, g1, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("be", BACKENDS, ids=lambda b: b.NAME)
def test_interp_reproduces_grid_values(be):
    cc, _ = _random(1, W=7)
    P, F, W = cc.shape[:3]
    rng = np.random.default_rng(2)
    ij = rng.integers(0, W, size=(P, F, 2))                    # (col, row) window indices
    val, _ = be.cc_interp(cc, ij - W // 2.0)
    expected = cc[np.arange(P)[:, None], np.arange(F)[None], ij[..., 1], ij[..., 0]]
    np.testing.assert_allclose(val, expected, atol=1e-12)


@pytest.mark.parametrize("be", BACKENDS, ids=lambda b: b.NAME)
def test_interp_periodic_wrap(be):
    cc, pos = _random(3, W=9)
    v1, g1 = be.cc_interp(cc, pos)
    v2, g2 = be.cc_interp(cc, pos + np.array([9.0, -18.0]))
    np.testing.assert_allclose(v2, v1, atol=1e-10)
    np.testing.assert_allclose(g2, g1, atol=1e-10)


@pytest.mark.parametrize("be", BACKENDS, ids=lambda b: b.NAME)
def test_interp_gradient_finite_differences(be):
    cc, pos = _random(4)
    _, g = be.cc_interp(cc, pos)
    h = 1e-6
    for k in range(2):
        d = np.zeros(2)
        d[k] = h
        fd = (be.cc_interp(cc, pos + d)[0] - be.cc_interp(cc, pos - d)[0]) / (2 * h)
        np.testing.assert_allclose(g[..., k], fd, rtol=1e-5, atol=1e-6)


def test_interp_exact_for_quadratic():
    # Catmull-Rom reproduces polynomials up to degree 2 away from the wrap seam
    W = 11
    y, x = np.mgrid[:W, :W] - W // 2
    f = lambda x, y: 0.3 * x * x - 0.2 * x * y + 0.5 * y * y + x - 2 * y + 1
    cc = np.broadcast_to(f(x, y), (1, 1, W, W)).copy()
    pos = np.array([[[1.37, -2.81]]])
    for be in BACKENDS:
        val, grad = be.cc_interp(cc, pos)
        px, py = pos[0, 0]
        assert val[0, 0] == pytest.approx(f(px, py), abs=1e-12)
        assert grad[0, 0, 0] == pytest.approx(0.6 * px - 0.2 * py + 1, abs=1e-12)
        assert grad[0, 0, 1] == pytest.approx(-0.2 * px + py - 2, abs=1e-12)


def test_get_backend_selection(monkeypatch):
    monkeypatch.setenv("POLISHPLUGIN_BACKEND", "numpy")
    assert get_backend().NAME == "numpy"
    monkeypatch.delenv("POLISHPLUGIN_BACKEND")
    assert get_backend().NAME == "numba"
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("cuda")
    assert get_backend(get_backend("numpy")).NAME == "numpy"     # a module passes through
    if OPENCL_REASON:
        with pytest.raises(BackendError):
            get_backend("opencl")
    else:
        assert get_backend("opencl").NAME == "opencl"


def test_trilinear_numba_matches_numpy():
    rng = np.random.default_rng(5)
    vol = (rng.normal(size=(6, 7, 8)) + 1j * rng.normal(size=(6, 7, 8))).astype(np.complex64)
    coords = rng.uniform(-9, 17, size=(3, 500))                 # wraps on every side
    a = get_backend("numpy").interp_trilinear(vol, coords)
    b = get_backend("numba").interp_trilinear(vol, coords)
    assert b.dtype == np.complex64
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("be", BACKENDS, ids=lambda b: b.NAME)
def test_trilinear_exact_for_linear_functions(be):
    # inside one period, trilinear interpolation reproduces a + b.z + c.y + d.x exactly
    z, y, x = np.meshgrid(np.arange(5), np.arange(6), np.arange(7), indexing="ij")
    vol = (1.0 + 0.5 * z - 2.0 * y + 0.25 * x) + 1j * (3.0 * x - z)
    rng = np.random.default_rng(6)
    c = rng.uniform(0, 1, size=(3, 200)) * np.array([[4], [5], [6]])
    want = (1.0 + 0.5 * c[0] - 2.0 * c[1] + 0.25 * c[2]) + 1j * (3.0 * c[2] - c[0])
    np.testing.assert_allclose(be.interp_trilinear(vol, c), want, rtol=1e-12, atol=1e-12)


def test_numba_parallel_and_serial_paths_agree(monkeypatch):
    import polishplugin.backends.numba_backend as nb
    cc, pos = _random(7, P=30, F=5)
    v1, g1 = nb.cc_interp(cc, pos)
    monkeypatch.setattr(nb, "PARALLEL_MIN", 0)
    monkeypatch.setattr(nb.numba, "get_num_threads", lambda: 2)
    v2, g2 = nb.cc_interp(cc, pos)
    np.testing.assert_allclose(v2, v1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g2, g1, rtol=1e-12, atol=1e-12)


def test_ring_correlation_backends_agree_with_a_direct_sum():
    """sum Re[(offset (1+i) + scale (q0 + i q1)) exp(2 pi i (kx sx + ky sy) / n)] by a plain
    loop over a few pixels, against both backends (int8 and int16 blocks)."""
    rng = np.random.default_rng(5)
    P, F, M, n = 3, 4, 7, 20
    kx = rng.integers(-9, 10, size=M).astype(np.int32)
    ky = rng.integers(-9, 10, size=M).astype(np.int32)
    tracks = rng.normal(scale=2.0, size=(P, F, 2))
    scale = rng.uniform(0.5, 2.0, size=(P, F)).astype(np.float32)
    offset = rng.normal(size=(P, F)).astype(np.float32)
    for dtype in (np.int8, np.int16):
        q = rng.integers(-100, 101, size=(P, F, M, 2)).astype(dtype)
        want = 0.0
        for p in range(P):
            for f in range(F):
                for m in range(M):
                    z = complex(offset[p, f] + scale[p, f] * q[p, f, m, 0],
                                offset[p, f] + scale[p, f] * q[p, f, m, 1])
                    phase = 2 * np.pi * (kx[m] * tracks[p, f, 0] + ky[m] * tracks[p, f, 1]) / n
                    want += (z * np.exp(1j * phase)).real
        for be in BACKENDS:
            got = be.ring_correlation(q, scale, offset, kx, ky, tracks, n)
            assert got == pytest.approx(want, rel=1e-5, abs=1e-3), be.NAME


def _spectra_case(seed, dtype, P=3, F=4, n=12):
    """Random complex spectra (P, F, n, n//2+1), weights (P, n, nh) and damage (F, n, nh)."""
    rng = np.random.default_rng(seed)
    nh = n // 2 + 1

    def cplx(*shape):
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    real = np.finfo(dtype).dtype
    return cplx(P, F, n, nh), cplx(P, n, nh), rng.uniform(0.2, 1.0, (F, n, nh)).astype(real)


@pytest.mark.parametrize("be", BACKENDS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("with_damage", [True, False])
def test_cc_windows_are_the_inverse_transform_at_the_window_shifts(be, dtype, with_damage):
    """Each backend's CC window = irfft2 of X D w (numpy's FFT, float64) read at the shifts
    -r..r: the two DFT products on the half-plane with Hermitian columns are that transform."""
    from polishplugin.core.motion.observation import _window_dft
    n, r = 12, 3
    x, w, dmg = _spectra_case(7, dtype, n=n)
    ey, ex = _window_dft(n, r, dtype)
    got = be.cc_windows(x, w, dmg if with_damage else None, ey, ex)
    prod = x.astype(np.complex128) * w[:, None].astype(np.complex128)
    if with_damage:
        prod = prod * dmg.astype(np.float64)
    full = np.fft.irfft2(prod, s=(n, n))                      # (P, F, n, n), row = y
    idx = np.arange(-r, r + 1) % n
    want = full[:, :, idx[:, None], idx[None, :]]
    assert got.shape == want.shape and got.dtype == np.finfo(dtype).dtype
    tol = 1e-12 if dtype == np.complex128 and be.NAME != "opencl" else 2e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("be", BACKENDS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_fcc_pixel_sums_equal_a_direct_sum(be, dtype):
    """Each backend's FCC numerator per pixel against sum_p Re[X conj(V) ey ex] by a plain loop
    in float64."""
    x, v, _ = _spectra_case(8, dtype)
    P, F, n, nh = x.shape
    rng = np.random.default_rng(9)
    ey = np.exp(2j * np.pi * rng.uniform(size=(P, F, n))).astype(dtype)
    ex = np.exp(2j * np.pi * rng.uniform(size=(P, F, nh))).astype(dtype)
    want = np.zeros((F, n, nh))
    for p in range(P):
        for f in range(F):
            z = x[p, f].astype(np.complex128) * np.conj(v[p].astype(np.complex128))
            want[f] += (z * ey[p, f, :, None] * ex[p, f, None, :]).real
    got = be.fcc_pixel_sums(x, v, ey, ex)
    assert got.shape == want.shape and got.dtype == np.float64
    tol = 1e-12 if dtype == np.complex128 and be.NAME != "opencl" else 2e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


def test_numba_fcc_pixel_sums_equal_numpys_on_a_memory_map(tmp_path):
    """numba's one-pass FCC kernel against numpy's reference, complex64 spectra read from a
    memory map (as the scratch store hands them out) and complex128 predictions."""
    x, v, _ = _spectra_case(10, np.complex64, P=5, F=3, n=16)
    P, F, n, nh = x.shape
    mm = np.memmap(tmp_path / "spectra", dtype=np.complex64, mode="w+", shape=x.shape)
    mm[...] = x
    rng = np.random.default_rng(11)
    ey = np.exp(2j * np.pi * rng.uniform(size=(P, F, n))).astype(np.complex64)
    ex = np.exp(2j * np.pi * rng.uniform(size=(P, F, nh))).astype(np.complex64)
    want = get_backend("numpy").fcc_pixel_sums(x, v.astype(np.complex128), ey, ex)
    got = get_backend("numba").fcc_pixel_sums(mm, v.astype(np.complex128), ey, ex)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
