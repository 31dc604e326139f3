"""The faster paths of issue 14 give the numbers of the plain definitions (patch cutting with
defects, CTF of many particles, defect tile statistics, projector setup)."""
import numpy as np

from polishplugin.core.motion.patches import extract_patches


def _naive_patches(frames, centres, tracks, n, defects):
    q = np.rint(centres[:, None, :] + tracks).astype(int)
    P, F = q.shape[:2]
    out = np.empty((P, F, n, n), np.float32)
    for f, frame in enumerate(frames):
        fill = float(frame[~defects].astype(np.float64).mean())
        m = 4 * n
        big = np.full((frame.shape[0] + 2 * m, frame.shape[1] + 2 * m), fill, np.float32)
        big[m:-m, m:-m] = np.where(defects, fill, frame)
        for p in range(P):
            x0, y0 = q[p, f, 0] - n // 2 + m, q[p, f, 1] - n // 2 + m
            out[p, f] = big[y0:y0 + n, x0:x0 + n]
    return out


def test_patches_with_defects_and_edges_match_naive_cut():
    rng = np.random.default_rng(3)
    ny, nx, n, F = 70, 90, 16, 3
    frames = [rng.normal(5, 1, (ny, nx)).astype(np.float32) for _ in range(F)]
    defects = np.zeros((ny, nx), bool)
    defects[rng.integers(0, ny, 30), rng.integers(0, nx, 30)] = True
    defects[40, :] = True
    # inside, across the edges, in a corner, fully outside, on the defect row, clean
    centres = np.array([[45.0, 30.0], [2.0, 35.0], [88.0, 68.0], [-30.0, 10.0], [20.0, 40.0],
                        [60.0, 12.0]])
    tracks = rng.uniform(-3, 3, (len(centres), F, 2))
    got, cut = extract_patches(frames, centres, tracks, n, defects, padded=True)
    want = _naive_patches(frames, centres, tracks, n, defects)
    np.testing.assert_array_equal(got, want)
    assert np.all(np.abs(cut - tracks) <= 0.5)


def test_projector_transform_matches_shifted_fftn():
    from polishplugin.core.projector import _centred_fft3
    rng = np.random.default_rng(5)
    for n, npad in ((12, 24), (11, 22), (10, 21), (7, 14)):
        v = rng.normal(size=(n,) * 3).astype(np.float32)
        big = np.zeros((npad,) * 3, np.float32)
        o = npad // 2 - n // 2
        big[o:o + n, o:o + n, o:o + n] = v
        want = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(big.astype(np.float64))))
        got = _centred_fft3(v, npad)
        assert got.dtype == np.complex64 and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_ctf_on_cached_grid_matches_chi_definition():
    from polishplugin.core.ctf import CtfParams, ctf_2d, ctf_chi
    from polishplugin.core.fourier import freq_grid
    for p, n, ny, px in ((CtfParams(15000, 14000, 33.0), 64, None, 1.1),
                         (CtfParams(8000, 9500, -70.0, 200.0, 0.01, 0.07, 40.0, 60.0), 48, 40,
                          0.8)):
        ky, kx = freq_grid(ny or n, n, px)
        want = -np.sin(ctf_chi(p, ky, kx)) * np.exp(-p.bfactor * (kx ** 2 + ky ** 2) / 4.0)
        for _ in range(2):                       # the second call reads the cached grid
            got = ctf_2d(p, n, px, ny)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_tile_interpolation_matches_map_coordinates():
    from scipy import ndimage

    from polishplugin.core.defects import _interp_rows, _linear_weights, _tile_values
    rng = np.random.default_rng(9)
    img = rng.normal(10, 2, (100, 75))
    img[:20, :20] = np.nan                      # one tile without a value
    for tile in (16, 25, 40):
        ny, nx = img.shape
        ty, tx = -(-ny // tile), -(-nx // tile)
        vals = np.array([[np.nanmedian(img[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile])
                          if tile > 20 or (i, j) != (0, 0) else np.nan for j in range(tx)]
                         for i in range(ty)])
        yc = np.clip((np.arange(ny) + 0.5) / tile - 0.5, 0, ty - 1)
        xc = np.clip((np.arange(nx) + 0.5) / tile - 0.5, 0, tx - 1)
        yy, xx = np.meshgrid(yc, xc, indexing="ij")
        want = ndimage.map_coordinates(vals, [yy, xx], order=1, mode="nearest")
        med, _ = _tile_values(img, None, tile)
        np.testing.assert_array_equal(med, vals)
        got = _interp_rows(med, _linear_weights((np.arange(ny) + 0.5) / tile - 0.5, ty),
                           _linear_weights((np.arange(nx) + 0.5) / tile - 0.5, tx))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12)


def test_tile_median_and_mad_match_per_tile():
    """The kernel's tile statistics equal numpy's nanmedian and MAD of each tile's finite
    gain-corrected values (pixels of gain <= 0 left out), at the edges and with NaN too."""
    from polishplugin.core.defects import _mad, _tile_values
    rng = np.random.default_rng(11)
    img = rng.poisson(30, (70, 90)).astype(np.float64)
    img[5, 7] = np.nan
    img[40:70, 64:90] = np.nan                   # tile (2, 2) has no value at all
    gain = rng.uniform(0.7, 1.3, img.shape)
    gain[33, :] = 0.0
    for g in (None, gain):
        med, mad = _tile_values(img, g, 32)
        assert med.shape == (3, 3)
        c = img if g is None else np.where(g > 0, img * g, np.nan)
        for i in range(3):
            for j in range(3):
                b = c[i * 32:(i + 1) * 32, j * 32:(j + 1) * 32]
                if np.isfinite(b).any():
                    assert med[i, j] == np.nanmedian(b) and mad[i, j] == _mad(b)
                else:
                    assert np.isnan(med[i, j]) and mad[i, j] == 0.0
