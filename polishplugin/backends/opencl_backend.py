"""pyopencl implementation of the backend kernels (a GPU, or PoCL on the CPU).

Same layout and results as :mod:`.numpy_backend`. Arithmetic is in double precision when the
device has ``cl_khr_fp64`` (PoCL and data-centre GPUs do), else in single precision
(:func:`configure` forces either); the tolerances against numpy are stated in the tests.

Device: ``POLISHPLUGIN_OPENCL_DEVICE`` = ``"P:D"`` (platform and device index), ``"D"`` (index in
the list of all devices, platforms in order) or a case-insensitive part of ``"platform: device"``
name; unset: the first GPU, else the first device, that compiles a probe kernel. Programs are
built once per process and precision (and cached on disk by pyopencl across processes).

Data stay on the device across calls: the constant operand of each kernel (the CC windows of a
micrograph's fit, the projector's volume, the ring products of a training micrograph) is uploaded
on first use and reused while that same array object is alive, so an L-BFGS iteration moves only
the positions in and the values out. The arrays must not be modified in place while they are
used (no caller does). A micrograph's patch spectra are made on the device (VkFFT through
pyvkfft; on the host without it) and stay there (:class:`DeviceSpectra`) for the noise power,
the CC windows and the FCC sums; only those small results come back.
"""
import logging
import os
import weakref

import numpy as np

from . import BackendError
from ..constants import OPENCL_DEVICE_VAR

NAME = "opencl"
log = logging.getLogger(__name__)

_SOURCE = r"""
#ifdef USE_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

inline int wrap(int i, int n) { int r = i % n; return r < 0 ? r + n : r; }

/* Catmull-Rom weights and derivatives of the samples at -1, 0, 1, 2 for fraction t. */
inline void cr_weights(REAL t, REAL *w, REAL *dw) {
    REAL t2 = t * t, t3 = t2 * t;
    w[0] = (-t3 + 2 * t2 - t) / 2;       dw[0] = (-3 * t2 + 4 * t - 1) / 2;
    w[1] = (3 * t3 - 5 * t2 + 2) / 2;    dw[1] = (9 * t2 - 10 * t) / 2;
    w[2] = (-3 * t3 + 4 * t2 + t) / 2;   dw[2] = (-9 * t2 + 8 * t + 1) / 2;
    w[3] = (t3 - t2) / 2;                dw[3] = (3 * t2 - 2 * t) / 2;
}

/* One work-item per (particle, frame): bicubic CC and gradient (numpy_backend.cc_interp) at
   base sample (x0, y0) + fraction (tx, ty), both split on the host in double precision. The
   weighted sum is over the samples minus the base sample (Catmull-Rom weights sum to 1, their
   derivatives to 0), so single precision rounds the local variation of the CC, not its size; the
   host adds the base sample back in double. */
__kernel void cc_interp(__global const MAP_T *cc, __global const int *base,
                        __global const REAL *frac, __global REAL *out, const int n, const int W) {
    int i = get_global_id(0);
    if (i >= n) return;
    REAL wx[4], dwx[4], wy[4], dwy[4];
    cr_weights(frac[2 * i], wx, dwx);
    cr_weights(frac[2 * i + 1], wy, dwy);
    int xi = base[2 * i] - 1, yi = base[2 * i + 1] - 1;
    __global const MAP_T *m = cc + (size_t)i * W * W;
    REAL c0 = (REAL)m[wrap(yi + 1, W) * W + wrap(xi + 1, W)];
    REAL s = 0, sx = 0, sy = 0;
    for (int a = 0; a < 4; a++) {
        __global const MAP_T *row = m + wrap(yi + a, W) * W;
        REAL r = 0, rx = 0;
        for (int b = 0; b < 4; b++) {
            REAL c = (REAL)row[wrap(xi + b, W)] - c0;
            r += wx[b] * c;
            rx += dwx[b] * c;
        }
        s += wy[a] * r;
        sx += wy[a] * rx;
        sy += dwy[a] * r;
    }
    out[3 * i] = s;          /* value - base sample, d/dx, d/dy */
    out[3 * i + 1] = sx;
    out[3 * i + 2] = sy;
}

/* One work-item per point: periodic trilinear interpolation of a complex volume
   (numpy_backend.interp_trilinear); vol and out are interleaved (re, im) pairs. */
__kernel void interp_trilinear(__global const VOL_T *vol, __global const REAL *coords,
                               __global VOL_T *out, const int M,
                               const int nz, const int ny, const int nx) {
    int m = get_global_id(0);
    if (m >= M) return;
    REAL z = coords[m], y = coords[M + m], x = coords[2 * M + m];
    REAL z0 = floor(z), y0 = floor(y), x0 = floor(x);
    REAL tz = z - z0, ty = y - y0, tx = x - x0;
    int iz = wrap((int)z0, nz), iy = wrap((int)y0, ny), ix = wrap((int)x0, nx);
    int jz = (iz + 1) % nz, jy = (iy + 1) % ny, jx = (ix + 1) % nx;
    size_t sz = (size_t)ny * nx;
    REAL w[8] = {(1 - tz) * (1 - ty) * (1 - tx), (1 - tz) * (1 - ty) * tx,
                 (1 - tz) * ty * (1 - tx), (1 - tz) * ty * tx,
                 tz * (1 - ty) * (1 - tx), tz * (1 - ty) * tx, tz * ty * (1 - tx), tz * ty * tx};
    size_t k[8] = {iz * sz + iy * nx + ix, iz * sz + iy * nx + jx,
                   iz * sz + jy * nx + ix, iz * sz + jy * nx + jx,
                   jz * sz + iy * nx + ix, jz * sz + iy * nx + jx,
                   jz * sz + jy * nx + ix, jz * sz + jy * nx + jx};
    REAL re = 0, im = 0;
    for (int c = 0; c < 8; c++) {
        re += w[c] * (REAL)vol[2 * k[c]];
        im += w[c] * (REAL)vol[2 * k[c] + 1];
    }
    out[2 * m] = (VOL_T)re;
    out[2 * m + 1] = (VOL_T)im;
}

/* One work-group per (particle, frame) block: sum_m Re[Z_m exp(i w (kx_m sx + ky_m sy))]
   (eq. 19 numerator, numpy_backend.ring_correlation); the phase is gathered from separable
   cos/sin tables in local memory; partial sums per block go to out. */
__kernel void ring_correlation(__global const Q_T *q, __global const float *scale,
                               __global const float *offset, __global const int *kx,
                               __global const int *ky, __global const REAL *tracks,
                               const int M, const int kmax, const REAL w,
                               __global REAL *out, __local REAL *tab, __local REAL *red) {
    int b = get_group_id(0), l = get_local_id(0), L = get_local_size(0);
    int nk = 2 * kmax + 1;
    REAL sx = tracks[2 * b], sy = tracks[2 * b + 1];
    for (int j = l; j < nk; j += L) {
        REAL ax = w * sx * (j - kmax), ay = w * sy * (j - kmax);
        tab[j] = cos(ax);          tab[nk + j] = sin(ax);
        tab[2 * nk + j] = cos(ay); tab[3 * nk + j] = sin(ay);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    REAL s = scale[b], o = offset[b];
    __global const Q_T *qb = q + (size_t)b * M * 2;
    REAL acc = 0;
    for (int m = l; m < M; m += L) {
        int a = kx[m] + kmax, c = ky[m] + kmax;
        REAL c_re = tab[a] * tab[2 * nk + c] - tab[nk + a] * tab[3 * nk + c];
        REAL c_im = tab[a] * tab[3 * nk + c] + tab[nk + a] * tab[2 * nk + c];
        acc += (qb[2 * m] * s + o) * c_re - (qb[2 * m + 1] * s + o) * c_im;
    }
    red[l] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = L / 2; k > 0; k /= 2) {
        if (l < k) red[l] += red[l + k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) out[b] = red[0];
}
"""

_SOURCE += r"""
/* Spectra X: (P, F, n, nh) interleaved (re, im) of type X_T; other complex operands interleaved
   REAL. b = p F + f indexes a (particle, frame) half-plane of n nh pixels. */

/* sum_p |X_pf(k)|^2: one work-item per (f, pixel). */
__kernel void power_sums(__global const X_T *x, __global REAL *out, const int P, const int F,
                         const int npix) {
    int i = get_global_id(0);
    if (i >= F * npix) return;
    REAL acc = 0;
    for (int p = 0; p < P; p++) {
        size_t k = 2 * ((size_t)p * F * npix + i);
        REAL re = x[k], im = x[k + 1];
        acc += re * re + im * im;
    }
    out[i] = acc;
}

/* rows[b, s, kx] = sum_ky ey[s, ky] X_b(ky, kx) D_f(ky, kx) w_p(ky, kx): one work-item each. */
__kernel void cc_rows(__global const X_T *x, __global const REAL *w, __global const REAL *dmg,
                      __global const REAL *ey, __global REAL *rows, const int PF, const int F,
                      const int n, const int nh, const int W, const int has_damage) {
    int i = get_global_id(0);
    if (i >= PF * W * nh) return;
    int kx = i % nh, s = (i / nh) % W, b = i / (nh * W);
    int p = b / F, f = b % F;
    __global const X_T *xb = x + 2 * (size_t)b * n * nh;
    __global const REAL *wp = w + 2 * (size_t)p * n * nh;
    REAL re = 0, im = 0;
    for (int ky = 0; ky < n; ky++) {
        size_t k = (size_t)ky * nh + kx;
        REAL xr = xb[2 * k], xi = xb[2 * k + 1];
        REAL d = has_damage ? dmg[(size_t)f * n * nh + k] : 1;
        REAL ar = (xr * wp[2 * k] - xi * wp[2 * k + 1]) * d;
        REAL ai = (xr * wp[2 * k + 1] + xi * wp[2 * k]) * d;
        REAL er = ey[2 * (s * n + ky)], ei = ey[2 * (s * n + ky) + 1];
        re += er * ar - ei * ai;
        im += er * ai + ei * ar;
    }
    rows[2 * (size_t)i] = re;
    rows[2 * (size_t)i + 1] = im;
}

/* cc[b, s, t] = Re sum_kx rows[b, s, kx] ex[kx, t]: one work-item each. */
__kernel void cc_cols(__global const REAL *rows, __global const REAL *ex, __global REAL *cc,
                      const int PF, const int nh, const int W) {
    int i = get_global_id(0);
    if (i >= PF * W * W) return;
    int t = i % W, bs = i / W;
    __global const REAL *r = rows + 2 * (size_t)bs * nh;
    REAL acc = 0;
    for (int kx = 0; kx < nh; kx++)
        acc += r[2 * kx] * ex[2 * (kx * W + t)] - r[2 * kx + 1] * ex[2 * (kx * W + t) + 1];
    cc[i] = acc;
}

/* sum_p Re[X_pf(k) conj(V_p(k)) ey_pf(ky) ex_pf(kx)]: one work-item per (f, ky, kx). */
__kernel void fcc_pixel_sums(__global const X_T *x, __global const REAL *v,
                             __global const REAL *ey, __global const REAL *ex,
                             __global REAL *out, const int P, const int F, const int n,
                             const int nh) {
    int i = get_global_id(0);
    if (i >= F * n * nh) return;
    int kx = i % nh, ky = (i / nh) % n, f = i / (n * nh);
    size_t k = (size_t)ky * nh + kx;
    REAL acc = 0;
    for (int p = 0; p < P; p++) {
        size_t xk = 2 * (((size_t)p * F + f) * n * nh + k), vk = 2 * ((size_t)p * n * nh + k);
        REAL xr = x[xk], xi = x[xk + 1], vr = v[vk], vi = v[vk + 1];
        REAL ar = xr * vr + xi * vi, ai = xi * vr - xr * vi;          /* X conj(V) */
        size_t e = 2 * (((size_t)p * F + f) * n + ky), g = 2 * (((size_t)p * F + f) * nh + kx);
        REAL cr = ey[e] * ex[g] - ey[e + 1] * ex[g + 1];
        REAL ci = ey[e] * ex[g + 1] + ey[e + 1] * ex[g];
        acc += ar * cr - ai * ci;
    }
    out[i] = acc;
}
"""

_FFT_CHUNK = 8        # particles per device FFT batch (one VkFFT plan per frames x patch size)
_RING_GROUP = 64      # work-items per (particle, frame) block of ring_correlation (power of 2)
_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
            np.dtype(np.int8): "char", np.dtype(np.int16): "short", np.dtype(np.int32): "int"}


def _cl():
    try:
        import pyopencl
    except ImportError as exc:
        raise BackendError("the OpenCL backend needs pyopencl (pip install "
                           "'scipion-em-polishplugin[opencl]'): %s" % exc) from None
    return pyopencl


def list_devices():
    """Every OpenCL device: ([(platform index, device index, "platform: device"), ...],
    [pyopencl.Device, ...]); two empty lists without a platform."""
    cl = _cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        platforms = []
    out = []
    for i, p in enumerate(platforms):
        try:
            devices = p.get_devices()
        except cl.Error:
            devices = []
        out += [(i, j, "%s: %s" % (p.name.strip(), d.name.strip()), d)
                for j, d in enumerate(devices)]
    return [t[:3] for t in out], [t[3] for t in out]


def select_device(spec=None):
    """The OpenCL device named by ``spec`` (default: env POLISHPLUGIN_OPENCL_DEVICE); see the
    module doc. Raises BackendError when there is none or nothing matches."""
    spec = (os.environ.get(OPENCL_DEVICE_VAR, "") if spec is None else str(spec)).strip()
    names, devices = list_devices()
    if not devices:
        raise BackendError("no OpenCL platform or device found (install a GPU driver's OpenCL "
                           "ICD or pocl-binary-distribution)")
    listing = "; ".join("%d:%d %s" % t for t in names)
    if not spec:
        cl = _cl()
        gpus = [k for k, d in enumerate(devices) if d.type & cl.device_type.GPU]
        order = gpus + [k for k in range(len(devices)) if k not in gpus]
        failures = []
        for k in order:
            why = _build_failure(devices[k])
            if not why:
                return devices[k]
            failures.append("%d:%d %s: %s" % (names[k] + (why,)))
        raise BackendError("no OpenCL device here can compile kernels (%s); PoCL built against "
                           "an LLVM older than the CPU fails this way ('unknown target CPU "
                           "generic'): Debian's pocl-opencl-icd is newer, or name a device in %s"
                           % ("; ".join(failures), OPENCL_DEVICE_VAR))
    if ":" in spec and all(s.strip().isdigit() for s in spec.split(":", 1)):
        pi, di = (int(s) for s in spec.split(":", 1))
        for k, (i, j, _) in enumerate(names):
            if (i, j) == (pi, di):
                return devices[k]
    elif spec.isdigit():
        if int(spec) < len(devices):
            return devices[int(spec)]
    else:
        for k, (_, _, name) in enumerate(names):
            if spec.lower() in name.lower():
                return devices[k]
    raise BackendError("%s=%r matches no OpenCL device; available: %s"
                       % (OPENCL_DEVICE_VAR, spec, listing))


_PROBE = "__kernel void probe(__global double *a) { a[get_global_id(0)] *= 2.0; }"


def _build_failure(device):
    """'' when ``device`` compiles a small kernel, else the first line of why not. A PoCL whose
    LLVM does not know the host CPU (the wheel's LLVM 14 on AMD family 1Ah, Zen 5) lists its
    device and fails every build."""
    cl = _cl()
    try:
        src = _PROBE if device.double_fp_config else _PROBE.replace("double", "float")
        cl.Program(cl.Context([device]), src).build()
    except Exception as exc:           # pyopencl raises RuntimeError / cl.Error subclasses
        lines = [ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower()]
        return (lines[-1] if lines else str(exc).strip().splitlines()[0])[:200]
    return ""


class _Device:
    """Context, queue, built programs and device-resident arrays of one device."""

    def __init__(self, device, fp64):
        cl = _cl()
        self.cl = cl
        self.device = device
        self.fp64 = bool(device.double_fp_config) if fp64 is None else bool(fp64)
        if self.fp64 and not device.double_fp_config:
            raise BackendError("OpenCL device %s has no double precision" % device.name)
        self.real = np.float64 if self.fp64 else np.float32
        self.ctx = cl.Context([device])
        self.queue = cl.CommandQueue(self.ctx)
        self._programs = {}
        self._kernels = {}
        self._ffts = {}
        self._resident = {}
        log.info("OpenCL device: %s (%s precision)", self.name, "double" if self.fp64 else "single")

    @property
    def name(self):
        return "%s: %s" % (self.device.platform.name.strip(), self.device.name.strip())

    def kernel(self, name, **types):
        """Kernel ``name`` built for the C types ``types`` (MAP_T, VOL_T, Q_T, X_T; the others
        keep their defaults); each program is built once per process."""
        t = dict(MAP_T="float", VOL_T="float", Q_T="char", X_T="float",
                 REAL="double" if self.fp64 else "float")
        t.update(types)
        opts = tuple("-D%s=%s" % kv for kv in sorted(t.items())) + \
            (("-DUSE_FP64",) if self.fp64 else ())
        if opts not in self._programs:
            self._programs[opts] = self.cl.Program(self.ctx, _SOURCE).build(options=list(opts))
        if (name, opts) not in self._kernels:
            self._kernels[name, opts] = getattr(self._programs[opts], name)
        return self._kernels[name, opts]

    def upload(self, a):
        mf = self.cl.mem_flags
        return self.cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                              hostbuf=np.ascontiguousarray(a))

    def resident(self, key_obj, make):
        """Device buffers made by ``make()`` (host arrays -> tuple of buffers) for the lifetime of
        ``key_obj`` (an array object): uploaded once, reused by later calls with the same object."""
        k = id(key_obj)
        hit = self._resident.get(k)
        if hit is not None and hit[0]() is key_obj:
            return hit[1]
        bufs = tuple(self.upload(a) for a in make())
        try:
            ref = weakref.ref(key_obj, lambda _r, k=k, d=self._resident: d.pop(k, None))
        except TypeError:       # not an array (a list...): nothing to key on, upload each call
            return bufs
        self._resident[k] = (ref, bufs)
        return bufs

    def rfft2(self, patches):
        """rfft2 half-planes of float32 patches (P, F, n, n) on the device (VkFFT), in a new
        complex64 buffer (P, F, n, n//2 + 1). The transform runs on fixed chunks of _FFT_CHUNK
        particles (the last one zero-padded), so that one VkFFT plan per (F, n) serves every
        micrograph whatever its number of particles."""
        import pyopencl.array as cla
        from pyvkfft.opencl import VkFFTApp
        P, F, n = patches.shape[:3]
        nh = n // 2 + 1
        key = (F, n)
        if key not in self._ffts:
            shape = (_FFT_CHUNK * F, n, n)
            self._ffts[key] = (VkFFTApp(shape, np.float32, queue=self.queue, ndim=2, r2c=True,
                                        inplace=False),
                               cla.empty(self.queue, shape, np.float32),
                               cla.empty(self.queue, (_FFT_CHUNK * F, n, nh), np.complex64),
                               np.empty((_FFT_CHUNK, F, n, n), np.float32))
        app, src, dst, stage = self._ffts[key]
        out = self.empty(P * F * n * nh, np.complex64)
        for p0 in range(0, P, _FFT_CHUNK):
            c = min(_FFT_CHUNK, P - p0)
            stage[:c] = patches[p0:p0 + c]
            stage[c:] = 0
            self.cl.enqueue_copy(self.queue, src.data, stage)       # blocking: stage reusable
            app.fft(src, dst)
            self.cl.enqueue_copy(self.queue, out, dst.data, byte_count=c * F * n * nh * 8,
                                 dst_offset=p0 * F * n * nh * 8)
        return out

    def empty(self, shape, dtype):
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, nbytes)

    def read(self, buf, shape, dtype):
        out = np.empty(shape, dtype)
        self.cl.enqueue_copy(self.queue, out, buf)
        return out


_DEV = None


def configure(device=None, fp64=None):
    """(Re)open the backend on ``device`` (a spec as for POLISHPLUGIN_OPENCL_DEVICE; None: the
    env variable) with double precision if ``fp64`` (None: when the device has it); returns the
    device's "platform: device" name. Raises BackendError without a usable device."""
    global _DEV
    _DEV = _Device(select_device(device), fp64)
    return _DEV.name


def _dev():
    if _DEV is None:
        configure()
    return _DEV


def cc_interp(cc_maps, positions):
    """Bicubic (Catmull-Rom) CC_{p,f}(s_{p,f}) and gradient (eq. 16 at fractional s); see
    :func:`polishplugin.backends.numpy_backend.cc_interp`. The CC windows stay on the device
    while ``cc_maps`` is alive. The read position is split into its base sample and fraction in
    double precision and the base sample's value is added back in double, so that in single
    precision the value is not rounded at the scale of the CC (a noisy energy stops L-BFGS
    early, ~1e-3 px from the minimum); only its variation within the 4 x 4 samples is."""
    d = _dev()
    arr = np.asarray(cc_maps)
    P, F, W = arr.shape[:3]
    mdt = np.dtype(np.float32) if arr.dtype == np.float32 else np.dtype(d.real)
    (cc,) = d.resident(cc_maps, lambda: (arr.astype(mdt, copy=False),))
    u = np.asarray(positions, dtype=np.float64).reshape(P, F, 2) + W // 2
    b = np.floor(u)
    n = P * F
    out = d.empty(3 * n, d.real)
    d.kernel("cc_interp", MAP_T=_C_TYPES[mdt])(
        d.queue, (max(1, n),), None, cc, d.upload(b.astype(np.int32)),
        d.upload((u - b).astype(d.real)), out, np.int32(n), np.int32(W))
    res = d.read(out, (P, F, 3), d.real).astype(np.float64)
    bi = b.astype(np.int64) % W
    res[..., 0] += arr[np.arange(P)[:, None], np.arange(F)[None, :], bi[..., 1], bi[..., 0]]
    return res[..., 0], res[..., 1:]


def interp_trilinear(volume, coords):
    """Periodic trilinear interpolation of a complex volume; see
    :func:`polishplugin.backends.numpy_backend.interp_trilinear`. The volume stays on the device
    while ``volume`` is alive."""
    d = _dev()
    vol = np.asarray(volume)
    if vol.dtype == np.complex64:
        rdt = np.dtype(np.float32)
    elif vol.dtype == np.complex128 and d.fp64:
        rdt = np.dtype(np.float64)
    else:
        raise ValueError("interp_trilinear on OpenCL takes a complex64 volume%s, got %s"
                         % (" (or complex128)" if d.fp64 else "", vol.dtype))
    (vbuf,) = d.resident(volume, lambda: (np.ascontiguousarray(vol).view(rdt),))
    c = np.asarray(coords, dtype=d.real)
    M = c.shape[1]
    out = d.empty(2 * M, rdt)
    nz, ny, nx = vol.shape
    d.kernel("interp_trilinear", VOL_T=_C_TYPES[rdt])(
        d.queue, (max(1, M),), None, vbuf, d.upload(c), out, np.int32(M), np.int32(nz),
        np.int32(ny), np.int32(nx))
    return d.read(out, (M, 2), rdt).view(vol.dtype).reshape(M)


def ring_correlation(q, scale, offset, kx, ky, tracks, box):
    """TCC numerator over stored ring products; see
    :func:`polishplugin.backends.numpy_backend.ring_correlation`. The products and frequencies
    stay on the device while ``q`` is alive."""
    d = _dev()
    qa = np.asarray(q)
    P, F, M = qa.shape[:3]
    kmax = int(max(np.abs(kx).max(), np.abs(ky).max()))
    bufs = d.resident(q, lambda: (qa, np.asarray(scale, np.float32), np.asarray(offset, np.float32),
                                  np.asarray(kx, np.int32), np.asarray(ky, np.int32)))
    n = P * F
    out = d.empty(n, d.real)
    isz = np.dtype(d.real).itemsize
    cl = d.cl
    d.kernel("ring_correlation", Q_T=_C_TYPES[qa.dtype])(
        d.queue, (max(1, n) * _RING_GROUP,), (_RING_GROUP,), *bufs,
        d.upload(np.asarray(tracks, dtype=d.real)), np.int32(M),
        np.int32(kmax), d.real(2.0 * np.pi / box), out,
        cl.LocalMemory(4 * (2 * kmax + 1) * isz), cl.LocalMemory(_RING_GROUP * isz))
    return float(d.read(out, n, d.real).sum(dtype=np.float64))


# ------------------------------------------------------------------ spectra of a micrograph
class DeviceSpectra:
    """rfft2 half-planes (P, F, n, nh) of a micrograph's patches, held on the device."""

    def __init__(self, buf, shape, dtype):
        self.buf = buf
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    def get(self):
        """The spectra as a host array."""
        return _dev().read(self.buf, self.shape, self.dtype)


def _has_vkfft():
    try:
        import pyvkfft.opencl  # noqa: F401
    except ImportError as exc:
        if not getattr(_has_vkfft, "said", False):
            log.warning("pyvkfft unavailable (%s): patch FFTs on the host", exc)
            _has_vkfft.said = True
        return False
    return True


def patch_spectra(patches, overwrite=False, workers=1):
    """rfft2 half-planes of real patches (P, F, n, n), kept on the device (:class:`DeviceSpectra`):
    float32 patches are uploaded in chunks of particles and transformed there by VkFFT (pyvkfft,
    unnormalised like numpy); without pyvkfft, or for float64 patches, on the host (scipy) and
    uploaded. ``overwrite`` and ``workers`` apply to the host transform."""
    from ..core.motion.observation import patch_spectra as host_spectra
    d = _dev()
    patches = np.asarray(patches)
    P, F, n = patches.shape[:3]
    shape = (P, F, n, n // 2 + 1)
    if patches.dtype == np.float32 and _has_vkfft():
        return DeviceSpectra(d.rfft2(patches), shape, np.complex64)
    spectra = host_spectra(patches, overwrite=overwrite, workers=workers)
    if spectra.dtype == np.complex128 and not d.fp64:
        spectra = spectra.astype(np.complex64)
    return DeviceSpectra(d.upload(spectra), shape, spectra.dtype)


def _spectra(d, spectra):
    """(buffer, C element type) of spectra given as DeviceSpectra or a host array."""
    if not isinstance(spectra, DeviceSpectra):
        a = np.asarray(spectra)
        a = a.astype(np.complex64) if a.dtype == np.complex128 and not d.fp64 else a
        spectra = DeviceSpectra(d.upload(a), a.shape, a.dtype)
    return spectra.buf, _C_TYPES[np.dtype(np.finfo(spectra.dtype).dtype)]


def _complex(d, a):
    """Upload a complex array as interleaved REAL pairs."""
    return d.upload(np.asarray(a, dtype=np.complex128 if d.fp64 else np.complex64))


def power_sums(spectra):
    """Sum over particles of |X|^2, (F, n, nh) float64; see
    :func:`polishplugin.backends.numpy_backend.power_sums`."""
    d = _dev()
    P, F, n, nh = spectra.shape
    x, xt = _spectra(d, spectra)
    npix = n * nh
    out = d.empty(F * npix, d.real)
    d.kernel("power_sums", X_T=xt)(d.queue, (F * npix,), None, x, out, np.int32(P), np.int32(F),
                                   np.int32(npix))
    return d.read(out, (F, n, nh), d.real).astype(np.float64, copy=False)


def cc_windows(spectra, weights, damage, ey, ex):
    """CC windows (P, F, W, W) from the spectra as two small DFT products on the device; see
    :func:`polishplugin.backends.numpy_backend.cc_windows`."""
    d = _dev()
    P, F, n, nh = spectra.shape
    W = ey.shape[0]
    x, xt = _spectra(d, spectra)
    dmg = d.upload(np.asarray(damage, d.real)) if damage is not None else d.empty(1, d.real)
    rows = d.empty(2 * P * F * W * nh, d.real)
    d.kernel("cc_rows", X_T=xt)(d.queue, (P * F * W * nh,), None, x, _complex(d, weights), dmg,
                                _complex(d, ey), rows, np.int32(P * F), np.int32(F), np.int32(n),
                                np.int32(nh), np.int32(W), np.int32(damage is not None))
    cc = d.empty(P * F * W * W, d.real)
    d.kernel("cc_cols")(d.queue, (P * F * W * W,), None, rows, _complex(d, ex), cc,
                        np.int32(P * F), np.int32(nh), np.int32(W))
    return d.read(cc, (P, F, W, W), d.real).astype(np.finfo(spectra.dtype).dtype, copy=False)


def fcc_pixel_sums(spectra, predictions, ey, ex):
    """FCC numerator per half-plane pixel, (F, n, nh) float64, summed over particles on the
    device; see :func:`polishplugin.backends.numpy_backend.fcc_pixel_sums`."""
    d = _dev()
    P, F, n, nh = spectra.shape
    x, xt = _spectra(d, spectra)
    out = d.empty(F * n * nh, d.real)
    d.kernel("fcc_pixel_sums", X_T=xt)(d.queue, (F * n * nh,), None, x, _complex(d, predictions),
                                       _complex(d, ey), _complex(d, ex), out, np.int32(P),
                                       np.int32(F), np.int32(n), np.int32(nh))
    return d.read(out, (F, n, nh), d.real).astype(np.float64, copy=False)


# refinement kernels: the slices through this backend's interp_trilinear (the padded transform
# stays on the device); back-projection is numba's and E-step scoring numpy's BLAS product on the
# host (no OpenCL kernels yet)
from .numba_backend import backproject_slices  # noqa: E402,F401
from .numpy_backend import _slice_extract_via, estep_scores  # noqa: E402,F401


def slice_extract(volume, rots, kxy, scale, origin, half=False):
    """Fourier slices through :func:`interp_trilinear` on the device; see
    :func:`polishplugin.backends.numpy_backend.slice_extract`."""
    return _slice_extract_via(interp_trilinear, volume, rots, kxy, scale, origin, half)
