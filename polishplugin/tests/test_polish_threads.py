"""--threads in polishing: frames read ahead in a thread, the defect search, the per-particle
kernels and the patch spectra in threads, with the same results as one thread."""
import numpy as np
import pytest


def test_read_ahead_keeps_order_raises_and_stops_early():
    from polishplugin.programs.parallel import read_ahead
    assert list(read_ahead(iter(range(20)), depth=2)) == list(range(20))

    def broken():
        yield 1
        raise ValueError("frame 2 unreadable")
    with pytest.raises(ValueError, match="frame 2"):
        list(read_ahead(broken()))
    made = []

    def counted():
        for i in range(1000):
            made.append(i)
            yield i
    it = read_ahead(counted(), depth=2)
    assert next(it) == 0
    it.close()                      # the producer stops a few items ahead, not at the end
    assert len(made) < 10


def test_defect_search_in_threads_equals_serial():
    from polishplugin.core.defects import detect_defects
    rng = np.random.default_rng(3)
    raw = rng.poisson(40.0, size=(300, 270)).astype(np.float64)
    raw[5, 7] = 400
    raw[250, 100] = 0
    raw[:, 200] = 0
    gain = rng.uniform(0.9, 1.1, size=raw.shape)
    gain[100, 50] = 0
    one = detect_defects(raw, 10, gain, tile=64, strip=40)
    two = detect_defects(raw, 10, gain, tile=64, strip=40, workers=3)
    np.testing.assert_array_equal(one, two)
    assert one[5, 7] and one[250, 100] and one[:, 200].all() and one[100, 50]


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_particle_kernels_in_threads_equal_one_thread(name):
    from polishplugin.backends import get_backend
    from polishplugin.backends.threads import ParticleThreads, particle_threads
    be = get_backend(name)
    assert particle_threads(be, 1) is be
    th = particle_threads(be, 3)
    assert isinstance(th, ParticleThreads) and th.NAME == name
    rng = np.random.default_rng(6)
    P, F, m, mh, W = 7, 4, 12, 7, 5

    def c(*shape):
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    spectra, weights, ey, ex = c(P, F, m, mh), c(P, m, mh), c(W, m), c(mh, W)
    damage = rng.uniform(size=(F, m, mh)).astype(np.float32)
    np.testing.assert_allclose(th.cc_windows(spectra, weights, damage, ey, ex),
                               be.cc_windows(spectra, weights, damage, ey, ex), rtol=1e-5)
    np.testing.assert_allclose(th.power_sums(spectra), be.power_sums(spectra), rtol=1e-6)
    pe, px = c(P, F, m), c(P, F, mh)
    np.testing.assert_allclose(th.fcc_pixel_sums(spectra, weights, pe, px),
                               be.fcc_pixel_sums(spectra, weights, pe, px), rtol=1e-5, atol=1e-4)
    assert th.patch_spectra is be.patch_spectra          # everything else: the backend's


def test_patch_spectra_in_threads_equal_one_thread():
    """Particle shares of 3 threads (7 particles, 2 a batch: uneven shares, patches off the
    edge) give the same bits, cut shifts and fills as one thread; a failing check is raised."""
    from polishplugin.core.motion.patches import extract_spectra
    rng = np.random.default_rng(8)
    F, n, m = 3, 16, 10
    frames = [rng.normal(size=(70, 60)).astype(np.float32) for _ in range(F)]
    centres = rng.uniform(0, 60, size=(7, 2))
    tracks = rng.uniform(-3, 3, size=(7, F, 2))
    mask = np.zeros((70, 60), dtype=bool)
    mask[10, 11] = mask[40, 30] = True
    f1, f3 = np.zeros(F), np.zeros(F)
    one, cut1 = extract_spectra(iter(frames), centres, tracks, n, m, mask, fills=f1, chunk=2)
    three, cut3 = extract_spectra(iter(frames), centres, tracks, n, m, mask, workers=3,
                                  fills=f3, chunk=2)
    assert np.abs(one).max() > 0
    np.testing.assert_array_equal(one, three)
    np.testing.assert_array_equal(cut1, cut3)
    np.testing.assert_array_equal(f1, f3)

    import threading
    seen = set()

    def check(buf):                 # the last share's last batch holds one patch
        seen.add(threading.current_thread().name)
        if len(buf) == 1:
            raise ValueError("bad patch")
    with pytest.raises(ValueError, match="bad patch"):
        extract_spectra(iter(frames), centres, tracks, n, m, workers=3, check=check, chunk=2)
    assert seen and threading.current_thread().name not in seen     # in the pool's threads



def test_blas_threads_set_in_numpys_openblas():
    import ctypes
    from polishplugin.programs.parallel import set_blas_threads
    with open("/proc/self/maps") as fh:
        libs = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln})
    if not libs:
        pytest.skip("numpy is not linked to OpenBLAS here")
    lib = ctypes.CDLL(libs[0])
    get = getattr(lib, "openblas_get_num_threads64_", None) or lib.openblas_get_num_threads
    before = get()
    try:
        assert set_blas_threads(1) and get() == 1
        assert set_blas_threads(2) and get() == 2
    finally:
        set_blas_threads(before)
