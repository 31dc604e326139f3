"""Direct Fourier inversion (core.reconstruct) against analytic projections and brute force."""
import numpy as np
import pytest

from polishplugin.core.ctf import CtfParams, ctf_2d
from polishplugin.core.geometry import euler_to_matrix, random_orientations
from polishplugin.core.reconstruct import Backprojector, centered_fft, reconstruct_halves

N = 16
BLOBS = [((2.0, -1.5, 1.0), 1.0, 1.6), ((-3.0, 2.0, -1.0), 0.7, 1.8),
         ((0.5, 3.5, 2.5), 0.8, 1.5), ((-1.0, -3.0, -3.0), 0.6, 1.7)]


def _truth():
    c = np.arange(N) - N // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = sum(a * np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * s * s))
              for (bx, by, bz), a, s in BLOBS)
    return vol, (x ** 2 + y ** 2 + z ** 2) <= 7 ** 2


def _projections(angles, shifts):
    """Closed-form line integrals along z of the blobs rotated by A: p(r) = int V(A^T r) dz, so a
    blob at c appears at (A c)_xy, plus the particle shift."""
    a = euler_to_matrix(*angles.T)
    c = np.arange(N) - N // 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    imgs = np.zeros((len(a), N, N))
    for centre, amp, s in BLOBS:
        p = a @ np.asarray(centre)
        px, py = p[:, 0] + shifts[:, 0], p[:, 1] + shifts[:, 1]
        imgs += amp * s * np.sqrt(2 * np.pi) * np.exp(
            -((xx - px[:, None, None]) ** 2 + (yy - py[:, None, None]) ** 2) / (2 * s * s))
    return imgs


def _data(n_img, seed):
    rng = np.random.default_rng(seed)
    angles = np.stack(random_orientations(n_img, rng), axis=1)
    shifts = rng.uniform(-1.5, 1.5, (n_img, 2))
    return angles, shifts, _projections(angles, shifts)


def test_line_integral_matches_quadrature():
    """The closed-form projection equals a numerical line integral of the rotated density."""
    angles = np.array([[0.3, 1.1, -2.0]])
    img = _projections(angles, np.zeros((1, 2)))[0]
    a = euler_to_matrix(*angles[0])
    zs = np.linspace(-20, 20, 2001)
    iy, ix = 9, 5
    r = np.stack([np.full_like(zs, ix - N // 2), np.full_like(zs, iy - N // 2), zs])
    u = a.T @ r
    dens = sum(amp * np.exp(-((u.T - np.asarray(c)) ** 2).sum(1) / (2 * s * s))
               for c, amp, s in BLOBS)
    assert img[iy, ix] == pytest.approx(np.trapz(dens, zs), rel=1e-6)


def test_reconstruction_matches_truth_and_fsc():
    angles, shifts, imgs = _data(2000, 10)
    truth, mask = _truth()
    half = np.where(np.arange(len(imgs)) % 2 == 0, 1, 2)
    h1, h2, curve, res = reconstruct_halves(imgs, angles, shifts, None, half, pixel_size=2.0)
    for h in (h1, h2):
        assert np.corrcoef(h[mask], truth[mask])[0, 1] > 0.95
        # absolute scale kept (p = sum_z V); fails without the gridding correction
        assert np.sum(h * truth) / np.sum(truth * truth) == pytest.approx(1.0, abs=0.05)
        assert np.abs(h - truth)[mask].max() < 0.05 * truth.max()
    assert np.all(curve[:6] > 0.99)
    assert res <= 2 * 2.0 * N / 6.0
    # the shifts matter: ignoring them degrades the map
    g1 = reconstruct_halves(imgs, angles, None, None, half)[0]
    assert np.corrcoef(g1[mask], truth[mask])[0, 1] < np.corrcoef(h1[mask], truth[mask])[0, 1]


def test_reconstruction_with_ctf():
    angles, shifts, imgs = _data(1500, 11)
    truth, mask = _truth()
    rng = np.random.default_rng(12)
    ctfs = np.stack([ctf_2d(CtfParams(d, d, 0.0), N, 2.0) for d in rng.uniform(5e3, 2e4, 1500)])
    imgs = np.fft.ifft2(np.fft.fft2(imgs) * ctfs).real
    h1, h2, curve, _ = reconstruct_halves(imgs, angles, shifts, ctfs, np.arange(1500) % 2 + 1,
                                          pixel_size=2.0)
    assert np.corrcoef(h1[mask], truth[mask])[0, 1] > 0.95
    h_noctf = reconstruct_halves(imgs, angles, shifts, None, np.arange(1500) % 2 + 1)[0]
    assert np.corrcoef(h_noctf[mask], truth[mask])[0, 1] < 0.9


def test_identical_halves_give_fsc_one():
    angles, shifts, imgs = _data(300, 13)
    both = np.concatenate([imgs, imgs])
    h1, h2, curve, res = reconstruct_halves(both, np.concatenate([angles, angles]),
                                            np.concatenate([shifts, shifts]), None,
                                            np.repeat([1, 2], 300), pixel_size=1.5)
    np.testing.assert_allclose(h1, h2)
    np.testing.assert_allclose(curve[:N // 2], 1.0, atol=1e-9)


def test_single_image_weights_equal_brute_force_slice():
    pad = 2
    bp = Backprojector(N, pad)
    rot = euler_to_matrix(0.7, 1.2, -0.4)
    bp.insert(np.ones((1, N, N), dtype=complex), rot[None])
    # brute force: every Fourier pixel with |k| <= N/2 - 1 at pad A^T (kx, ky, 0), trilinear
    # weights max(0, 1 - |d|) per axis to every voxel of the full (pad N)^3 grid
    size = pad * N
    k = np.fft.fftfreq(N) * N
    ky, kx = np.meshgrid(k, k, indexing="ij")
    sel = np.hypot(ky, kx) <= N // 2 - 1
    pts = pad * (kx[sel][:, None] * rot[0] + ky[sel][:, None] * rot[1])         # (M, 3) x,y,z
    g = np.fft.fftfreq(size) * size
    gz, gy, gx = np.meshgrid(g, g, g, indexing="ij")
    full = np.zeros((size, size, size))
    for px, py, pz in pts:
        full += (np.maximum(0, 1 - np.abs(gx - px)) * np.maximum(0, 1 - np.abs(gy - py))
                 * np.maximum(0, 1 - np.abs(gz - pz)))
    np.testing.assert_allclose(bp.fourier_weights(), full[:, :, :size // 2 + 1], atol=1e-12)
    assert full[:, :, :size // 2 + 1].sum() > 0.4 * sel.sum()


def test_merge_and_streaming_equal_one_pass():
    angles, shifts, imgs = _data(60, 14)
    rots = euler_to_matrix(*angles.T)
    f = centered_fft(imgs, shifts)
    whole, a, b = Backprojector(N), Backprojector(N), Backprojector(N)
    whole.insert(f, rots)
    a.insert(f[:25], rots[:25])
    b.insert(f[25:], rots[25:])
    a.merge(b)
    np.testing.assert_allclose(a.data, whole.data, atol=1e-9)
    np.testing.assert_allclose(a.weight, whole.weight, atol=1e-12)
    with pytest.raises(ValueError):
        a.merge(Backprojector(N, pad=1))


def test_ssnr_regularisation_per_shell():
    angles, shifts, imgs = _data(400, 15)
    bp = Backprojector(N)
    bp.insert(centered_fft(imgs, shifts), euler_to_matrix(*angles.T))
    np.testing.assert_allclose(bp.reconstruct(ssnr=np.full(N // 2 + 1, 1e12)),
                               bp.reconstruct(reg=1e-12), atol=1e-6)
    # shells of the half grid, in pixels of the n box
    size = 2 * N
    g = np.fft.fftfreq(size) * size
    kz, ky, kx = np.meshgrid(g, g, np.arange(size // 2 + 1), indexing="ij")
    shell = np.rint(np.sqrt(kx ** 2 + ky ** 2 + kz ** 2) / 2).astype(int)
    w, d = bp.fourier_weights(), bp.fourier_data()
    ssnr = np.array([1e6, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01])
    f = bp.fourier_estimate(ssnr=ssnr)
    for s in range(N // 2 + 1):
        on = (shell == s) & (w > 0)
        lam = w[on].mean() / ssnr[s]
        np.testing.assert_allclose(f[on], d[on] / (w[on] + lam), rtol=1e-10)
    assert np.all(f[shell > N // 2] == 0)
    with pytest.raises(ValueError):
        reconstruct_halves(imgs, angles, shifts, None, np.zeros(len(imgs)))
