"""Frame recombination (shiny particles), section 2.3 of Zivanov et al. (2019)."""
import numpy as np

from polishplugin.core.dose.recombine import fourier_resize, recombine_frames
from polishplugin.core.dose.weights import weight_maps
from polishplugin.core.fourier import crop_center, fourier_shift, radius_grid


def _band_limited(rng, p, n):
    f = np.fft.fft2(rng.normal(size=(p, n, n)))
    f[..., radius_grid(n, n) >= 0.4] = 0.0
    return np.fft.ifft2(f).real


def test_uniform_weights_undo_known_tracks():
    rng = np.random.default_rng(6)
    p, nf, n = 3, 5, 24
    img = _band_limited(rng, p, n)
    tracks = rng.uniform(-4, 4, (p, nf, 2))
    frames = np.stack([[fourier_shift(img[i], *tracks[i, f]) for f in range(nf)]
                       for i in range(p)])
    w = np.full((nf, n, n), 1.0 / nf)
    out = recombine_frames(frames, tracks, w, dtype=np.float64)
    np.testing.assert_allclose(out, img, atol=1e-10)
    out_c = recombine_frames(np.fft.fft2(frames), tracks, w, dtype=np.float64)
    np.testing.assert_allclose(out_c, img, atol=1e-10)
    single = recombine_frames(frames[1], tracks[1], w, dtype=np.float64)
    np.testing.assert_allclose(single, img[1], atol=1e-10)
    # without undoing the tracks the average is blurred
    assert np.abs(recombine_frames(frames, np.zeros_like(tracks), w) - img).max() > 0.1


def test_weighted_sum_matches_integer_roll_reference():
    rng = np.random.default_rng(7)
    nf, n, px = 4, 16, 2.0
    frames = rng.normal(size=(nf, n, n))
    tracks = rng.integers(-3, 4, (nf, 2)).astype(float)
    w = weight_maps([0.0, -20.0, -60.0, -150.0], [0.0, 0.1, -0.1, -0.3], n, px, dtype=np.float64)
    ref = np.zeros((n, n), dtype=complex)
    for f in range(nf):
        back = np.roll(frames[f], (-int(tracks[f, 1]), -int(tracks[f, 0])), axis=(0, 1))
        ref += w[f] * np.fft.fft2(back)
    ref = np.fft.ifft2(ref).real
    np.testing.assert_allclose(recombine_frames(frames, tracks, w, dtype=np.float64), ref,
                               atol=1e-10)
    out = recombine_frames(frames, tracks, w, out_box=10, dtype=np.float16)
    assert out.dtype == np.float16 and out.shape == (10, 10)
    np.testing.assert_allclose(out, crop_center(ref, 10, 10), atol=2e-2)


def test_rescale_matches_resampled_gaussian():
    n, m, sigma = 48, 24, 4.0
    y, x = np.mgrid[:n, :n] - n // 2
    g = np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    y2, x2 = (np.mgrid[:m, :m] - m // 2) * (n / m)
    g2 = np.exp(-(x2 ** 2 + y2 ** 2) / (2 * sigma ** 2))
    np.testing.assert_allclose(fourier_resize(g, m), g2, atol=1e-6)
    frames = np.stack([g, g])
    out = recombine_frames(frames, np.zeros((2, 2)), np.full((2, n, n), 0.5), out_box=32,
                           rescale=16, dtype=np.float64)
    y3, x3 = (np.mgrid[:16, :16] - 8) * 2.0
    np.testing.assert_allclose(out, np.exp(-(x3 ** 2 + y3 ** 2) / (2 * sigma ** 2)), atol=1e-4)


def test_half_plane_sum_equals_the_full_plane_sum_at_nyquist():
    """ShinySum (rfft2 half-plane, separable phases) against the full-plane sum
    Re ifft2(sum_f w_f X_f exp(+2 pi i k.t_f)) with sub-pixel shifts, Hermitian random weights
    and even n (Nyquist row, column and corner) and odd n."""
    from polishplugin.core.dose.recombine import ShinySum
    from polishplugin.core.fourier import shift_phase
    rng = np.random.default_rng(12)
    for n in (8, 9):
        p, nf = 3, 4
        frames = rng.normal(size=(p, nf, n, n))
        tracks = rng.uniform(-2, 2, (p, nf, 2))
        w = rng.uniform(0, 1, (nf, n, n))
        neg = (-np.arange(n)) % n
        w = 0.5 * (w + w[:, neg][:, :, neg])
        full = sum(w[f] * np.fft.fft2(frames[:, f]) * shift_phase(n, n, -tracks[:, f, 0],
                                                                   -tracks[:, f, 1])
                   for f in range(nf))
        acc = ShinySum(p, n)
        for f in range(nf):
            acc.add(frames[:, f], tracks[:, f], w[f])
        np.testing.assert_allclose(acc.images(), np.fft.ifft2(full).real, atol=1e-12)


def test_sums_of_float32_frames_are_single_precision():
    """Float32 frames (the programs' patches) are summed in complex64 (half the memory of
    complex128) and give the images of the same frames summed in double precision to 2e-6 of
    their range (F = 32 terms of ~6e-8 relative rounding)."""
    from polishplugin.core.dose.recombine import ShinySum
    rng = np.random.default_rng(5)
    p, nf, n, px = 4, 32, 64, 1.2
    frames = rng.poisson(8.0, (p, nf, n, n)).astype(np.float32)
    tracks = rng.uniform(-3, 3, (p, nf, 2))
    w = weight_maps(np.linspace(0, -200, nf), np.zeros(nf), n, px, dtype=np.float64)
    single, double = ShinySum(p, n), ShinySum(p, n)
    for f in range(nf):
        single.add(frames[:, f], tracks[:, f], w[f])
        double.add(frames[:, f].astype(np.float64), tracks[:, f], w[f])
    assert single.acc.dtype == np.complex64 and double.acc.dtype == np.complex128
    a, b = single.images(), double.images()
    assert a.dtype == np.float32
    err = np.abs(a - b).max() / np.ptp(b)
    assert 0 < err < 2e-6, err


def test_shiny_sum_kernel_equals_the_phase_products():
    """ShinySum.add's one-pass kernel against the sum written with numpy: w X ey(ky) ex(kx)
    on the half-plane, the even-n Nyquist row's ey real and the corner's phase cos(pi (tx +
    ty)); complex64 (float32 patches) and complex128 (fft2 input), odd and even n, a block of
    rows."""
    from polishplugin.core.dose.recombine import ShinySum
    rng = np.random.default_rng(11)
    for n, dtype in ((12, np.float32), (11, np.float32), (12, np.float64)):
        nh, P, b = n // 2 + 1, 5, 3
        patches = rng.normal(size=(b, n, n)).astype(dtype)
        shifts = rng.uniform(-3, 3, (b, 2))
        w = rng.uniform(0.1, 1.0, (n, n))
        s = ShinySum(P, n)
        s.add(patches if dtype == np.float32 else np.fft.fft2(patches), shifts, w, slice(1, 4))
        x = np.fft.rfft2(patches.astype(np.float64))
        k = np.fft.fftfreq(n)
        ey = np.exp(2j * np.pi * shifts[:, 1, None] * k)
        if n % 2 == 0:
            ey[:, n // 2] = ey[:, n // 2].real
        ex = np.exp(2j * np.pi * shifts[:, 0, None] * k[:nh])
        want = x * ey[:, :, None] * ex[:, None, :] * w[:, :nh]
        if n % 2 == 0:
            want[:, n // 2, nh - 1] = x[:, n // 2, nh - 1] * w[n // 2, n // 2] * np.cos(
                np.pi * shifts.sum(axis=1))
        assert s.acc.dtype == (np.complex64 if dtype == np.float32 else np.complex128)
        assert not s.acc[0].any() and not s.acc[4].any()
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(s.acc[1:4], want, rtol=0, atol=tol * np.abs(want).max())
