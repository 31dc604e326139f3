"""Spectra kept only up to the data term's highest ring (issue 14): the CC maps, the amplitude's
auto-correlation and the FCC sums from cropped spectra equal brute-force ones on the full grid
with every ring beyond the limit removed; the projector cut to r_max gives the same slices."""
import numpy as np

from polishplugin.core.motion import micrograph as M
from polishplugin.core.motion import observation as ob
from polishplugin.core.motion.patches import extract_patches, extract_spectra
from polishplugin.core.projector import Projector
from polishplugin.core.fourier import ring_index


def _data(n=48, P=3, F=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(F, 120, 130)).astype(np.float32)
    centres = np.array([[40.0, 50.0], [80.3, 60.7], [20.0, 100.0]])[:P]
    tracks = rng.normal(scale=1.5, size=(P, F, 2))
    preds = np.fft.fft2(rng.normal(size=(P, n, n)))
    damage = np.exp(-0.01 * np.arange(1, F + 1)[:, None, None] * ring_index(n)[None] / 4.0)
    return frames, centres, tracks, preds, damage


def test_cropped_spectra_equal_full_with_rings_removed():
    n, r, radius = 48, 13, 5
    frames, centres, tracks, preds, damage = _data(n)
    m = ob.crop_size(n, r)
    assert m == 28
    full, cut = extract_patches(list(frames), centres, tracks, n)
    spec_c, cut_c = extract_spectra(list(frames), centres, tracks, n, m)
    assert np.array_equal(cut, cut_c)
    spec = ob.patch_spectra(full)
    noise = ob.noise_power_from_spectra(spec)
    # brute force: irfft2 of X conj(D V) / S with rings > r (and DC) removed, on the window
    rings, _ = ob.rfft_rings(n)
    filt2 = np.where((rings <= r) & (rings > 0), 1.0 / noise[rings], 0.0) * n * n
    nh = n // 2 + 1
    prod = spec.astype(np.complex128) * np.conj(preds[:, None, :, :nh] * damage[None, :, :, :nh]) \
        * filt2
    cc_full = np.fft.irfft2(prod, s=(n, n))
    idx = np.arange(-radius, radius + 1) % n
    want = cc_full[..., idx[:, None], idx[None, :]]
    got = ob.cc_maps_from_spectra(spec_c, preds, damage, radius, noise, n=n, max_ring=r,
                                  dtype=np.float64)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the same from the full spectra with the ring limit, and different without it
    same = ob.cc_maps_from_spectra(spec, preds, damage, radius, noise, max_ring=r)
    assert np.allclose(same, got, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    wide = ob.cc_maps_from_spectra(spec, preds, damage, radius, noise)
    assert not np.allclose(wide, got, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    # zero-shift auto-correlation of the prediction (the amplitude's denominator)
    a_full = (np.abs(np.fft.fft2(np.fft.ifft2(preds)[:, None] * 1) * damage[None]) ** 2
              * np.where((ring_index(n) <= r) & (ring_index(n) > 0),
                         1.0 / noise[np.minimum(ring_index(n), len(noise) - 1)], 0.0)).sum((-2, -1))
    a_crop = M._auto_cc(ob.crop_plane(preds, m), ob.crop_plane(damage, m), noise, "likelihood",
                        r, n)
    assert np.allclose(a_crop, a_full, rtol=1e-10)


def test_cropped_fcc_equals_full_fcc_up_to_the_ring():
    n, r = 48, 13
    frames, centres, tracks, preds, _ = _data(n, seed=1)
    m = ob.crop_size(n, r)
    full, _ = extract_patches(list(frames), centres, tracks, n)
    spec_c, _ = extract_spectra(list(frames), centres, tracks, n, m)
    shifts = np.random.default_rng(2).normal(size=tracks.shape)
    ref = M.fcc_from_spectra(ob.patch_spectra(full), preds, shifts)
    got = M.fcc_from_spectra(spec_c, preds, shifts, n=n, max_ring=r)
    assert got.num.shape == ref.num.shape
    for a, b in ((got.num, ref.num), (got.wobs, ref.wobs), (got.wpred, ref.wpred)):
        assert np.allclose(a[:, :r + 1], b[:, :r + 1], rtol=1e-4, atol=1e-4 * np.abs(b).max())
        assert np.all(a[:, r + 1:] == 0)
        assert np.any(b[:, r + 1:] != 0)


def test_projector_cut_to_r_max_gives_the_same_slices():
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(24, 24, 24))
    ang = rng.uniform(0, np.pi, size=(5, 3))
    r_max = 0.2
    full = Projector(vol).project_many(ang, shape=(40, 40))
    cut = Projector(vol, r_max=r_max)
    assert cut._f3.shape[0] < 2 * 24 // 2 * 2
    got = cut.project_many(ang, shape=(40, 40))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(40), np.fft.fftfreq(40), indexing="ij"))
    inside = k <= r_max
    assert np.allclose(got[:, inside], full[:, inside], rtol=1e-5, atol=1e-6 * np.abs(full).max())
    assert np.all(got[:, ~inside] == 0)


def test_cropped_predictions_equal_the_cropped_full_ones():
    from polishplugin.core.ctf import CtfParams
    from polishplugin.core.predict import make_projectors, predict_particles
    rng = np.random.default_rng(4)
    h1, h2 = rng.normal(size=(2, 20, 20, 20))
    proj = make_projectors(h1, h2, r_max=0.3)
    ang = rng.uniform(0, np.pi, size=(3, 3))
    ctfs = [CtfParams(15000.0 + 1000 * i, 14000.0, 30.0 * i, 300.0, 2.7, 0.1) for i in range(3)]
    full = predict_particles(proj, ang, [1, 2, 1], ctfs, 32, 1.1)
    got = predict_particles(proj, ang, [1, 2, 1], ctfs, 32, 1.1, crop=22)
    assert got.shape == (3, 22, 22)
    assert np.allclose(got, ob.crop_plane(full, 22), rtol=1e-12, atol=1e-12 * np.abs(full).max())
    assert not np.allclose(got, full[:, :22, :22])


def test_fcc_on_the_rings_of_the_particle_box():
    """The FCC sums are written on RELION's rings: ring j of the particle box holds the patch
    frequencies |k| in [j - 1/2, j + 1/2) / box (box//2 + 1 rings), from cropped spectra of a
    patch twice the box (a frequency half-way between rings goes up); a plane wave of frequency 5 / box lands in ring 5, not in the patch's
    ring 10. Brute force: the full-plane products of the patch binned by round(|k| box)."""
    n, box, r = 48, 24, 13
    frames, centres, tracks, preds, _ = _data(n, seed=4)
    m = ob.crop_size(n, r)
    full, _ = extract_patches(list(frames), centres, tracks, n)
    spec_c, _ = extract_spectra(list(frames), centres, tracks, n, m)
    shifts = np.random.default_rng(5).normal(size=tracks.shape)
    got = M.fcc_from_spectra(spec_c, preds, shifts, n=n, max_ring=r, box=box)
    assert got.box == box and got.num.shape == (4, box // 2 + 1)
    from polishplugin.core.fourier import shift_phase
    i = np.r_[0:n // 2, -n // 2:0]            # integer frequency indices of the patch
    rings = np.floor(np.hypot(i[:, None], i[None, :]) * box / n + 0.5).astype(int).ravel()
    top = 6                                  # rings of the box wholly inside ring 13 of n
    x = np.fft.fft2(full)
    for f in range(4):
        vs = preds * shift_phase(n, n, shifts[:, f, 0], shifts[:, f, 1])
        for a, v in ((got.num, (x[:, f] * np.conj(vs)).real), (got.wobs, np.abs(x[:, f]) ** 2),
                     (got.wpred, np.abs(vs) ** 2)):
            want = np.bincount(rings, v.sum(0).ravel(), minlength=box * 2)[:top + 1]
            assert np.allclose(a[f, :top + 1], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
            assert np.all(a[f, top + 1:] == 0)
    # a plane wave of 5 cycles per box (10 per patch)
    wave = np.cos(2 * np.pi * 5 / box * np.arange(n))[None, None, None, :] * np.ones((1, 2, n, 1))
    acc = M.fcc_from_spectra(ob.patch_spectra(wave), np.fft.fft2(wave[:, 0]), np.zeros((1, 2, 2)),
                             n=n, box=box)
    assert np.argmax(acc.num[0]) == 5
    assert acc.num[0, 5] > 1e6 * np.abs(np.delete(acc.num[0], 5)).max()
    np.testing.assert_allclose(acc.fcc()[:, 5], 1.0, rtol=1e-6)
