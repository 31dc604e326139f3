"""Fourier-slice projector against closed-form projections of Gaussian blobs."""
import numpy as np
import pytest

from polishplugin.core.geometry import euler_to_matrix
from polishplugin.core.projector import Projector

N = 24
SIGMA = 1.6


def _blobs(rng, k=6):
    centres = rng.uniform(-5.0, 5.0, (k, 3))          # (x, y, z) px from the centre
    amps = rng.uniform(0.5, 1.5, k)
    return centres, amps


def _volume(centres, amps):
    z, y, x = np.mgrid[:N, :N, :N] - N // 2
    v = np.zeros((N, N, N))
    for (cx, cy, cz), a in zip(centres, amps):
        v += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * SIGMA ** 2))
    return v


def _analytic_projection(centres, amps, angles, ny=N, nx=N):
    """p(x, y) = integral over z of V(A^T r): each blob lands at A u with weight sqrt(2 pi) sigma."""
    a = euler_to_matrix(*angles)
    y, x = np.mgrid[:ny, :nx]
    y = y - ny // 2
    x = x - nx // 2
    p = np.zeros((ny, nx))
    for u, amp in zip(centres, amps):
        cx, cy, _ = a @ u
        p += amp * np.sqrt(2 * np.pi) * SIGMA * np.exp(-((x - cx) ** 2 + (y - cy) ** 2)
                                                       / (2 * SIGMA ** 2))
    return p


ANGLES = [(0.0, 0.0, 0.0), (0.3, 0.7, -1.1), (1.2, np.pi / 2, 0.4), (-2.5, np.pi / 2, 2.0),
          (2.0, 2.6, -0.3)]


# Trilinear interpolation with padding 2 (RELION's scheme) is accurate to a few percent for content
# out to ~0.35 of the box; the error falls with the padding factor.
@pytest.mark.parametrize("pad, tol", [(2, 0.04), (4, 0.012)])
@pytest.mark.parametrize("angles", ANGLES)
def test_projection_matches_closed_form(angles, pad, tol):
    centres, amps = _blobs(np.random.default_rng(1))
    proj = Projector(_volume(centres, amps), pad=pad)
    img = np.fft.ifft2(proj.project(*angles)).real
    ref = _analytic_projection(centres, amps, angles)
    rel = np.linalg.norm(img - ref) / np.linalg.norm(ref)
    assert rel < tol


def test_larger_box_is_zero_padded_projection():
    centres, amps = _blobs(np.random.default_rng(2))
    proj = Projector(_volume(centres, amps), pad=4)
    angles = (0.5, 1.0, 2.0)
    img = np.fft.ifft2(proj.project(*angles, shape=(40, 36))).real
    ref = _analytic_projection(centres, amps, angles, 40, 36)
    assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 0.012


def test_batch_equals_single_and_bad_input():
    centres, amps = _blobs(np.random.default_rng(3))
    proj = Projector(_volume(centres, amps))
    batch = proj.project_many(np.array(ANGLES))
    for a, b in zip(ANGLES, batch):
        np.testing.assert_allclose(proj.project(*a), b, atol=1e-5)
    with pytest.raises(ValueError):
        Projector(np.zeros((4, 4, 5)))


def test_gridding_correction_reduces_error(monkeypatch):
    """Off-grid slices are more accurate with the sinc^2 pre-correction than without it."""
    from polishplugin.core import projector as mod
    centres, amps = _blobs(np.random.default_rng(1))
    vol = _volume(centres, amps)
    generic = ANGLES[1:]

    def mean_error(proj):
        return np.mean([np.linalg.norm(np.fft.ifft2(proj.project(*a)).real
                                       - _analytic_projection(centres, amps, a))
                        for a in generic])
    with_corr = mean_error(Projector(vol))
    monkeypatch.setattr(mod, "_gridding_correction", lambda npad, n, z=slice(None): np.ones((n, n, n))[z])
    without = mean_error(Projector(vol))
    assert with_corr < 0.75 * without


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_half_transform_gives_the_whole_transforms_slices(backend):
    from polishplugin.core.projector import Projector
    rng = np.random.default_rng(5)
    vol = rng.normal(size=(32, 32, 32))
    angles = np.column_stack([rng.uniform(0, 2 * np.pi, 9), rng.uniform(0, np.pi, 9),
                              rng.uniform(0, 2 * np.pi, 9)])
    whole = Projector(vol, r_max=0.3, backend=backend)
    half = Projector(vol, r_max=0.3, backend=backend, half=True)
    assert half._f3.size < 0.6 * whole._f3.size
    a = whole.project_many(angles, shape=(48, 48), crop=30)
    b = half.project_many(angles, shape=(48, 48), crop=30)
    np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize("r_max,half", [(0.3, True), (0.3, False), (0.5, False)])
def test_transform_written_into_given_memory_and_wrapped_elsewhere(r_max, half):
    """Projector(out=...) fills a given array (e.g. shared with other processes; here full of
    garbage first) with the bits of its own transform; Projector.around wraps it into a
    projector with the same slices; a transform of the wrong shape is refused."""
    from polishplugin.core.predict import projector_shape
    from polishplugin.core.projector import Projector
    rng = np.random.default_rng(8)
    vol = rng.normal(size=(20, 20, 20))
    own = Projector(vol, r_max=r_max, half=half)
    out = np.full(projector_shape(20, r_max=r_max, half=half), 7 + 7j, dtype=np.complex64)
    Projector(vol, r_max=r_max, half=half, out=out)
    assert out.tobytes() == own._f3.tobytes()
    angles = rng.uniform(0, np.pi, size=(3, 3))
    np.testing.assert_array_equal(Projector.around(out, 20, r_max=r_max, half=half)
                                  .project_many(angles), own.project_many(angles))
    with pytest.raises(ValueError, match="expected"):
        Projector.around(out[:-1], 20, r_max=r_max, half=half)


def _masked_maps(n=32, seed=3):
    rng = np.random.default_rng(seed)
    h1, h2 = (rng.standard_normal((n, n, n)).astype(np.float32) for _ in range(2))
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    mask = (np.sqrt(x ** 2 + y ** 2 + z ** 2) < n / 3).astype(np.float32)
    return h1, h2, mask


def test_make_projectors_masks_one_half_at_a_time_same_transforms_inputs_untouched():
    """The projectors of make_projectors (each masked half corrected in place) equal projectors of
    the masked halves made the straightforward way, bit for bit; the caller's maps and mask are
    not changed; a float32 volume given with overwrite=True is used as scratch, a float64 one is
    not (and gives the same transform)."""
    from polishplugin.core.predict import make_projectors
    h1, h2, mask = _masked_maps()
    keep = [a.copy() for a in (h1, h2, mask)]
    got = make_projectors(h1, h2, mask, r_max=0.3, half=True)
    for a, b in zip((h1, h2, mask), keep):
        assert np.array_equal(a, b)
    for h, v in ((1, h1), (2, h2)):
        ref = Projector(v * mask, r_max=0.3, half=True)
        assert np.array_equal(got[h]._f3, ref._f3)
    v32 = (h1 * mask).copy()
    p32 = Projector(v32, r_max=0.3, half=True, overwrite=True)
    assert np.array_equal(p32._f3, got[1]._f3)
    assert not np.array_equal(v32, h1 * mask)          # used as scratch
    v64 = (h1 * mask).astype(np.float64)
    p64 = Projector(v64, r_max=0.3, half=True, overwrite=True)
    assert np.array_equal(v64, (h1 * mask).astype(np.float64))
    assert np.array_equal(p64._f3, got[1]._f3)


def test_make_projectors_peak_memory_two_volumes_below_masking_both_first():
    """tracemalloc peak of make_projectors against masking both halves first and correcting into
    a new volume (the earlier way: three map-sized volumes alive while the second transform is
    made, now one): at least 1.5 volumes less."""
    import tracemalloc
    from polishplugin.core.predict import make_projectors
    h1, h2, mask = _masked_maps(n=48)

    def peak(func):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = func()
            return tracemalloc.get_traced_memory()[1] - base, result
        finally:
            tracemalloc.stop()

    new, got = peak(lambda: make_projectors(h1, h2, mask, r_max=0.3, half=True))
    old, ref = peak(lambda: {h: Projector(v, r_max=0.3, half=True)
                             for h, v in ((1, h1 * mask), (2, h2 * mask))})
    assert np.array_equal(got[2]._f3, ref[2]._f3)
    assert new <= old - 1.5 * h1.nbytes, (new, old, h1.nbytes)
