"""The OpenCL backend against the numpy reference, kernel by kernel, in double precision (what
PoCL and data-centre GPUs run) and in single precision (devices without fp64), with stated
tolerances; device selection, the device-resident operands, and the errors without a device.

Single-precision tolerances (relative to the operands' scale): cc_interp values and gradients
2e-6 of max|CC| and of the CC's variation about a large level; interp_trilinear 2e-6 of
max|volume|; ring_correlation 2e-6 of sum|Z|. Double precision: 1e-12 on the same scales. The
spectra kernels (float32 images, complex64 spectra from VkFFT in both modes) against numpy in
float64: 2e-6 of the largest value.
"""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from polishplugin.backends import BackendError, get_backend
from polishplugin.tests.opencl import needs_opencl

pytestmark = needs_opencl
TOL = {True: 1e-12, False: 2e-6}        # fp64 -> tolerance factor


@pytest.fixture(params=[True, False], ids=["fp64", "fp32"])
def ocl(request):
    """The OpenCL backend configured in double, then single precision (reset afterwards)."""
    mod = get_backend("opencl")
    dev = mod._dev()
    if request.param and not dev.device.double_fp_config:
        pytest.skip("device without double precision")
    mod.configure(fp64=request.param)
    yield mod
    mod.configure()


def test_cc_interp_matches_numpy(ocl):
    rng = np.random.default_rng(11)
    ref = get_backend("numpy")
    for dtype in (np.float32, np.float64):
        cc = rng.normal(size=(17, 9, 13, 13)).astype(dtype) * 50.0
        pos = rng.uniform(-9, 9, size=(17, 9, 2))               # wraps past the window edge
        v0, g0 = ref.cc_interp(cc, pos)
        v1, g1 = ocl.cc_interp(cc, pos)
        assert v1.shape == (17, 9) and g1.shape == (17, 9, 2) and v1.dtype == np.float64
        tol = TOL[ocl._dev().fp64] * np.abs(cc).max()
        np.testing.assert_allclose(v1, v0, rtol=0, atol=tol)
        np.testing.assert_allclose(g1, g0, rtol=0, atol=4 * tol)


def test_cc_interp_rounds_the_variation_not_the_level(ocl):
    """CC windows on a large level (likelihood-scaled CC sit far from 0): single precision
    must round only the variation within the 4 x 4 samples, else the energy L-BFGS sees is
    noisy at 1e-7 of the level and the fit stops ~1e-3 px short of the minimum."""
    rng = np.random.default_rng(15)
    cc = (1e4 + rng.normal(size=(17, 9, 13, 13))).astype(np.float32)
    pos = rng.uniform(-5, 5, size=(17, 9, 2))
    v0, g0 = get_backend("numpy").cc_interp(cc, pos)
    v1, g1 = ocl.cc_interp(cc, pos)
    tol = TOL[ocl._dev().fp64] * float(np.abs(cc - 1e4).max()) + 1e-15 * 1e4  # + numpy's own
    np.testing.assert_allclose(v1, v0, rtol=0, atol=tol)                        # double rounding
    np.testing.assert_allclose(g1, g0, rtol=0, atol=4 * tol)


def test_interp_trilinear_matches_numpy(ocl):
    rng = np.random.default_rng(12)
    vol = (rng.normal(size=(10, 12, 14)) + 1j * rng.normal(size=(10, 12, 14))).astype(np.complex64)
    coords = rng.uniform(-15, 30, size=(3, 4000))
    want = get_backend("numpy").interp_trilinear(vol, coords)
    got = ocl.interp_trilinear(vol, coords)
    assert got.dtype == np.complex64 and got.shape == (4000,)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[ocl._dev().fp64] * np.abs(vol).max()
                               + 1e-6 * np.abs(vol).max())    # complex64 output rounding


def test_ring_correlation_matches_numpy(ocl):
    rng = np.random.default_rng(13)
    P, F, M, n = 9, 7, 300, 64
    kx = rng.integers(-20, 21, size=M).astype(np.int32)
    ky = rng.integers(-20, 21, size=M).astype(np.int32)
    tracks = rng.normal(scale=3.0, size=(P, F, 2))
    scale = rng.uniform(0.5, 2.0, size=(P, F)).astype(np.float32)
    offset = rng.normal(size=(P, F)).astype(np.float32)
    for dtype in (np.int8, np.int16):
        q = rng.integers(-100, 101, size=(P, F, M, 2)).astype(dtype)
        exact = get_backend("numba").ring_correlation(q, scale, offset, kx, ky, tracks, n)
        size = float(np.sum(np.abs(q * scale[..., None, None] + offset[..., None, None])))
        got = ocl.ring_correlation(q, scale, offset, kx, ky, tracks, n)
        assert got == pytest.approx(exact, abs=TOL[ocl._dev().fp64] * size)
        ref = get_backend("numpy").ring_correlation(q, scale, offset, kx, ky, tracks, n)
        assert got == pytest.approx(ref, abs=1e-5 * size)     # numpy works in complex64


def test_device_operands_reused_and_released():
    """The CC windows are uploaded once per array object; a new array (even at a reused id)
    is uploaded anew, so results always follow the data."""
    ocl = get_backend("opencl")
    dev = ocl._dev()
    rng = np.random.default_rng(14)
    pos = rng.uniform(-3, 3, size=(3, 4, 2))
    for k in range(3):
        cc = rng.normal(size=(3, 4, 7, 7)).astype(np.float32)
        v0, _ = get_backend("numpy").cc_interp(cc, pos)
        np.testing.assert_allclose(ocl.cc_interp(cc, pos)[0], v0, atol=1e-5)
        bufs = dev._resident[id(cc)][1]
        np.testing.assert_allclose(ocl.cc_interp(cc, pos + 0.25)[0],
                                   get_backend("numpy").cc_interp(cc, pos + 0.25)[0], atol=1e-5)
        assert dev._resident[id(cc)][1] is bufs                   # not uploaded again
        key = id(cc)
        del cc
        assert key not in dev._resident                           # released with the array


def test_device_selection_by_index_and_name(monkeypatch):
    ocl = get_backend("opencl")
    names, devices = ocl.list_devices()
    assert names and len(names) == len(devices)
    i, j, name = names[0]
    assert ocl.select_device("%d:%d" % (i, j)) == devices[0]
    assert ocl.select_device("0") == devices[0]
    assert ocl.select_device(name.split(":")[-1].strip()[:6].upper()) == devices[0]
    monkeypatch.setenv("POLISHPLUGIN_OPENCL_DEVICE", "%d:%d" % (i, j))
    assert ocl.select_device() == devices[0]
    for bad in ("no such device xyz", "99:0", "99"):
        with pytest.raises(BackendError, match="matches no OpenCL device; available: 0:0"):
            ocl.select_device(bad)


def test_default_device_is_the_first_that_compiles(monkeypatch):
    """A listed device that cannot build kernels (PoCL with an LLVM older than the CPU) is
    passed over; when none builds, the error names every device and why."""
    ocl = get_backend("opencl")
    cl = ocl._cl()

    class Fake:
        def __init__(self, gpu):
            self.type = cl.device_type.GPU if gpu else cl.device_type.CPU
    devs = [Fake(False), Fake(True), Fake(False)]
    names = [(0, 0, "A: cpu"), (1, 0, "B: gpu"), (2, 0, "C: cpu")]
    monkeypatch.setattr(ocl, "list_devices", lambda: (names, devs))
    monkeypatch.delenv("POLISHPLUGIN_OPENCL_DEVICE", raising=False)
    broken = {id(devs[1]): "error: unknown target CPU 'generic'"}
    monkeypatch.setattr(ocl, "_build_failure", lambda d: broken.get(id(d), ""))
    assert ocl.select_device() is devs[0]             # the GPU does not build: first CPU
    broken[id(devs[0])] = "error: x"
    assert ocl.select_device() is devs[2]
    broken[id(devs[2])] = "error: y"
    with pytest.raises(BackendError, match="no OpenCL device here can compile kernels.*"
                       "1:0 B: gpu: error: unknown target CPU 'generic'"):
        ocl.select_device()
    assert ocl.select_device("1:0") is devs[1]        # named: taken as asked
    monkeypatch.undo()
    assert ocl._build_failure(ocl.select_device()) == ""   # the real default builds


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))


def test_no_platform_is_a_clear_error_and_auto_falls_back():
    """With no OpenCL driver visible (empty ICD vendor folder): 'opencl' is refused with a one-line
    reason, 'auto' logs the fallback and runs numba, the program exits before any work."""
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from polishplugin.backends import BackendError, get_backend\n"
            "try:\n    get_backend('opencl')\nexcept BackendError as e:\n    print('ERR', e)\n"
            "print('AUTO', get_backend('auto').NAME, get_backend('auto').NAME)\n"
            "from polishplugin.programs import polish\n"
            "polish.main(['--particles', 'p.star', '--mics', 'm.star', '--half1', 'a', "
            "'--half2', 'b', '--out', 'o', '--backend', 'opencl'])\n")
    r = _run(code, OCL_ICD_VENDORS="/nonexistent-icd-dir")
    assert "ERR no OpenCL platform or device found" in r.stdout, r.stderr
    assert "AUTO numba numba" in r.stdout
    assert r.stderr.count("backend auto: OpenCL unavailable") == 1     # said once
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == \
        "backend: no OpenCL platform or device found (install a GPU driver's OpenCL ICD or " \
        "pocl-binary-distribution)"


def test_missing_pyopencl_is_a_clear_error(monkeypatch):
    ocl = get_backend("opencl")
    monkeypatch.setitem(sys.modules, "pyopencl", None)       # import pyopencl -> ImportError
    with pytest.raises(BackendError, match=r"needs pyopencl \(pip install"):
        ocl.configure()


def test_auto_prefers_opencl(caplog):
    from polishplugin.backends import _auto
    _auto.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert get_backend("auto").NAME == "opencl"
    assert "unavailable" not in caplog.text


@pytest.mark.parametrize("n", [32, 33])
def test_spectra_kernels_match_numpy_in_double(ocl, n):
    """patch_spectra (VkFFT), ring power, CC windows and FCC sums of a micrograph, the spectra
    kept on the device, against the numpy backend on float64 copies of the same patches
    (11 particles: two device FFT chunks, the second zero-padded)."""
    from polishplugin.core.motion import micrograph as mg
    from polishplugin.core.motion import observation as ob
    ref = get_backend("numpy")
    rng = np.random.default_rng(n)
    P, F = 11, 5
    assert P > ocl._FFT_CHUNK
    patches = rng.normal(size=(P, F, n, n)).astype(np.float32)
    preds = np.fft.fft2(rng.normal(size=(P, n, n)))
    damage = rng.uniform(0.2, 1.0, size=(F, n, n))
    shifts = rng.normal(scale=2.0, size=(P, F, 2))
    want = ref.patch_spectra(patches.astype(np.float64))
    got = ocl.patch_spectra(patches)
    assert got.shape == want.shape and isinstance(got, ocl.DeviceSpectra)
    np.testing.assert_allclose(got.get(), want, rtol=0, atol=2e-6 * np.abs(want).max())
    p_want, p_got = ob.ring_power(want, ref), ob.ring_power(got, ocl)
    np.testing.assert_allclose(p_got, p_want, rtol=2e-6)
    noise = ob.noise_power_from_spectra(want, p_want)
    c_want = ob.cc_maps_from_spectra(want, preds, damage, 4, noise, backend=ref, dtype=np.float64)
    c_got = ob.cc_maps_from_spectra(got, preds, damage, 4, noise, backend=ocl)
    np.testing.assert_allclose(c_got, c_want, rtol=0, atol=2e-6 * np.abs(c_want).max())
    c_none = ob.cc_maps_from_spectra(got, preds, None, 4, noise, backend=ocl)   # no damage
    c_ref = ob.cc_maps_from_spectra(want, preds, None, 4, noise, backend=ref, dtype=np.float64)
    np.testing.assert_allclose(c_none, c_ref, rtol=0, atol=2e-6 * np.abs(c_ref).max())
    f_want = mg.fcc_from_spectra(want, preds, shifts, p_want, ref)
    f_got = mg.fcc_from_spectra(got, preds, shifts, p_got, ocl)
    np.testing.assert_allclose(f_got.num, f_want.num, rtol=0, atol=2e-6 * np.abs(f_want.num).max())
    np.testing.assert_allclose(f_got.wpred, f_want.wpred, rtol=1e-12)


def test_host_fft_when_pyvkfft_is_missing(monkeypatch, caplog):
    """Without pyvkfft the patch FFTs run on the host (said once) and the results are the same."""
    ocl = get_backend("opencl")
    rng = np.random.default_rng(3)
    patches = rng.normal(size=(2, 3, 16, 16)).astype(np.float32)
    on_device = ocl.patch_spectra(patches).get()
    monkeypatch.setitem(sys.modules, "pyvkfft.opencl", None)
    monkeypatch.setattr(ocl._has_vkfft, "said", False, raising=False)
    with caplog.at_level(logging.WARNING):
        host = ocl.patch_spectra(patches).get()
        ocl.patch_spectra(patches)
    assert caplog.text.count("pyvkfft unavailable") == 1
    np.testing.assert_allclose(host, on_device, rtol=0, atol=1e-5 * np.abs(host).max())

