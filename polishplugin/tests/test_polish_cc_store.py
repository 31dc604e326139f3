"""CC maps with only their centres in memory (core/motion/cc_store.py, polish --spectra-memory):
the reads of the whole maps, the tracks of the in-memory maps, and memory that does not hold the
whole maps."""
import tracemalloc

import numpy as np
import pytest

from polishplugin.backends import get_backend
from polishplugin.core.motion import cc_store
from polishplugin.core.motion.cc_store import CCStore, MemoryMaps
from polishplugin.core.motion.fit import fit_tracks
from polishplugin.programs.scratch import ScratchMaps


def _maps(rng, P, F, radius):
    """Smooth random maps with a peak within 4 px of the centre (like CC maps)."""
    W = 2 * radius + 1
    yy, xx = np.mgrid[:W, :W] - radius
    peak = rng.uniform(-4, 4, (P, F, 2))
    d2 = (xx - peak[..., 0, None, None]) ** 2 + (yy - peak[..., 1, None, None]) ** 2
    return (50 * np.exp(-d2 / 8) + rng.normal(0, 0.5, (P, F, W, W))).astype(np.float32)


def _store(maps, core_radius, backing):
    P, F, W = maps.shape[:3]
    store = CCStore(P, F, W // 2, backing(P, F, W), core_radius=core_radius)
    for a in range(0, P, 3):                    # filled in blocks, as cc_maps_from_spectra does
        store[a:a + 3] = maps[a:a + 3]
    return store


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_reads_inside_and_beyond_the_centres_equal_the_whole_maps(backend, tmp_path):
    rng = np.random.default_rng(1)
    maps = _maps(rng, 7, 5, 8)
    be = get_backend(backend)
    store = _store(maps, 3, lambda P, F, W: ScratchMaps(P, F, W, tmp_path))
    assert store.core.shape == (7, 5, 7, 7)
    store.scale(-0.37)
    want_maps = maps * np.float32(-0.37)
    # positions over the whole window, its wrapping edge included
    s = rng.uniform(-8.5, 8.5, (7, 5, 2))
    s[:3] = rng.uniform(-1.9, 1.9, (3, 5, 2))                   # within the centres
    val, grad = store.interp(be, s)
    want_val, want_grad = be.cc_interp(want_maps, s)
    assert np.array_equal(val, want_val) and np.array_equal(grad, want_grad)
    beyond = int(np.count_nonzero(((s < -2) | (s >= 2)).any(-1)))
    assert 0 < store.backing_reads == beyond          # only reads beyond the centres
    store.interp(be, s)
    assert store.backing_reads == beyond              # cached
    assert np.array_equal(np.asarray(store), want_maps)
    assert np.array_equal(store.centre(3), want_maps[:, :, 5:12, 5:12])
    store.close()
    assert not list(tmp_path.iterdir())


def test_fit_from_the_centres_gives_the_tracks_of_the_whole_maps():
    """The MAP fit over maps whose centres (radius 3: many positions beyond them) are in memory
    and the rest in a backing gives the tracks of the whole maps in memory, bit for bit."""
    rng = np.random.default_rng(2)
    P, F = 12, 8
    maps = _maps(rng, P, F, 8)
    pos = rng.uniform(0, 1000, (P, 2))
    init = np.zeros((P, F, 2))
    sig = (0.8, 300.0, 1.5)
    want = fit_tracks(maps, pos, sig, init, init, backend="numba")
    store = _store(maps, 3, MemoryMaps)
    assert store.core.shape[-1] == 7
    got = fit_tracks(store, pos, sig, init, init, backend="numba")
    assert want.converged and store.backing_reads > 0
    assert np.abs(want.tracks).max() > 2                    # the fit goes beyond the centres
    assert np.array_equal(got.tracks, want.tracks) and got.iterations == want.iterations


def test_memory_holds_the_centres_only(tmp_path):
    """2000 particles x 32 frames in a 16 px window: 279 MB of whole maps; in memory the 13 x 13
    centres (43 MB) and the blocks written, traced while the store is filled and read."""
    P, F, W = 2000, 32, 33
    whole = P * F * W * W * 4
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = CCStore(P, F, W // 2, ScratchMaps(P, F, W, tmp_path))
        block = np.ones((20, F, W, W), dtype=np.float32)
        for a in range(0, P, 20):
            store[a:a + 20] = block
        store.interp(get_backend("numpy"), np.zeros((P, F, 2)))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    centres = P * F * 13 * 13 * 4
    assert store.memory_bytes == centres
    assert peak < centres + 0.2 * whole, (peak, centres, whole)
    assert store.backing_reads == 0
    store.close()
    assert not list(tmp_path.iterdir())


def test_whole_maps_in_memory_without_a_backing():
    rng = np.random.default_rng(3)
    maps = _maps(rng, 4, 3, 6)
    store = _store(maps, 3, lambda P, F, W: None)
    assert store.core_radius == 6 and store.core.shape == maps.shape
    s = rng.uniform(-5, 5, (4, 3, 2))
    be = get_backend("numpy")
    assert all(np.array_equal(a, b) for a, b in zip(store.interp(be, s), be.cc_interp(maps, s)))
    assert cc_store.cc_interp(be, store, s)[0].shape == (4, 3)
