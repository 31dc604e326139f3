"""Observation model of seed zivanov2019 §2.1.3 (eq. 12-16) on arrays: noise whitening and CC maps.

Inputs per micrograph: particle patches per frame X (P, F, n, n) real, cut around each particle
(with padding for its motion); predictions V (P, n, n) complex, numpy ``fft2`` layout and scale of
an image in the same intensity units as the patches (projection x CTF, made elsewhere); per-frame
damage filters D (F, n, n) real in the same layout (Grant & Grigorieff amplitude attenuation,
applied to V). The noise power spectrum S(ring) is the ring average of |fft2(X)|^2 over all
particles and frames of the micrograph (the signal is weak in single frames), as in RELION.

CC_{p,f}(s) = scale * Re sum_k X^(k) conj(D_f(k) V^_p(k)) exp(2 pi i k.s) with X^ = X / sqrt(S),
V^ = V / sqrt(S), DC and frequencies beyond Nyquist (ring > n//2) zeroed; see
:mod:`.energy` for the scale (``cc_scale``) and why it makes -2 CC the doubled negative
log-likelihood. The CC at integer shifts is only needed on the window |sx|, |sy| <= R
(W = 2R + 1, zero shift at index R): it is the inverse DFT of the rfft2 half-plane evaluated on
those W x W shifts only, as two small matrix products (rows, then Hermitian columns), which gives
the same numbers as ``irfft2`` cropped to the window.

Every patch is Fourier transformed once (:func:`patch_spectra`, rfft2 half-plane in the
patches' precision: complex64 for float32 patches); the noise power, the CC maps and the FCC sums
are computed from these spectra. The sums over particles run in the compute backend
(``backend``: :func:`polishplugin.backends.get_backend`), which may hold the spectra on a device.
"""
import numpy as np
import scipy.fft

from ...backends import get_backend
from ..fourier import ring_index
from .spectra_store import spectra_chunks

CC_SCALES = ("relion", "likelihood")


def rfft_rings(n):
    """Ring index round(|k| n) and Hermitian multiplicity of every pixel of the rfft2 half-plane."""
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    rings = np.rint(np.hypot(ky, kx) * n).astype(np.int64)
    mult = np.full(rings.shape, 2.0)
    mult[:, 0] = 1.0
    if n % 2 == 0:
        mult[:, -1] = 1.0
    return rings, mult


def _complex_dtype(real_dtype):
    return np.complex64 if np.dtype(real_dtype) == np.float32 else np.complex128


def patch_spectra(patches, overwrite=False, workers=1):
    """rfft2 half-planes (P, F, n, n//2+1) of real patches (P, F, n, n): complex64 for float32
    patches, complex128 otherwise.

    ``overwrite``: when ``patches`` is the ``[..., :n]`` view of a C-contiguous
    (P, F, n, 2 (n//2+1)) buffer of its dtype (:func:`.patches.extract_patches` with
    ``padded=True``), the spectra overwrite that buffer particle by particle (the patches are
    lost) and no second patch-sized array is allocated.
    """
    patches = np.asarray(patches)
    P, F, n = patches.shape[:3]
    nh = n // 2 + 1
    rdt = np.float32 if patches.dtype == np.float32 else np.float64
    cdt = _complex_dtype(rdt)
    base = patches.base if patches.base is not None else patches
    inplace = overwrite and (base.dtype == rdt and base.shape == (P, F, n, 2 * nh) and base.flags.c_contiguous
               and np.shares_memory(base, patches))
    out = base.view(cdt) if inplace else np.empty((P, F, n, nh), cdt)
    for p in range(P):
        out[p] = scipy.fft.rfft2(patches[p].astype(rdt, copy=False), workers=workers)
    return out


def ring_power(spectra, backend=None):
    """Full-plane ring sums of |X|^2 per frame, (F, nrings) float64, from rfft2 half-planes
    (P, F, n, nh) (an array or a :class:`.spectra_store.SpectraStore`, whose ``power_sums`` are
    used when kept) with Hermitian multiplicities (rings of round(|k| n), up to the corner)."""
    P, F, n = spectra.shape[:3]
    rings, mult = rfft_rings(n)
    nr = int(rings.max()) + 1
    total = getattr(spectra, "power_sums", None)    # a store's, summed as it was written
    if total is None:
        be = get_backend(backend)
        total = sum(be.power_sums(x) for _, x in spectra_chunks(spectra))
    idx = (np.arange(F)[:, None] * nr + rings.ravel()[None]).ravel()
    return np.bincount(idx, (total * mult).ravel(), minlength=F * nr).reshape(F, nr)


def noise_power_from_spectra(spectra, power=None):
    """Ring-averaged power S(r) = <|fft2(X)(k)|^2> over all patches and frames (full-plane
    average) from their rfft2 half-planes (P, F, n, nh), Hermitian multiplicities; ``power``:
    their :func:`ring_power` when already computed. Returns (nrings,) float64."""
    P, F, n = spectra.shape[:3]
    rings, mult = rfft_rings(n)
    nr = int(rings.max()) + 1
    power = ring_power(spectra) if power is None else power
    count = np.bincount(rings.ravel(), mult.ravel(), minlength=nr) * P * F
    return power.sum(axis=0) / np.maximum(count, 1)


def crop_size(n, max_ring=None):
    """Side m of the Fourier grid that holds rings 0..``max_ring`` of an n x n patch: n when
    ``max_ring`` is None or reaches Nyquist, else 2 (max_ring + 1) (even, so the grid's own
    Nyquist row and column, whose Hermitian partners it lacks, lie beyond ``max_ring``)."""
    if max_ring is None or 2 * (int(max_ring) + 1) >= n:
        return n
    return 2 * (int(max_ring) + 1)


def crop_rows(n, m):
    """Indices of the fft-layout axis of length n kept on a grid of m: 0..m/2-1 and -m/2..-1."""
    return np.arange(n) if m == n else np.r_[0:m // 2, n - m // 2:n]


def crop_plane(a, m):
    """Full fft2-layout planes (..., n, n) cut to the frequencies of an m x m grid (a copy when
    m < n, ``a`` itself when m == n)."""
    if np.shape(a)[-1] == m:       # anything with a shape, e.g. planes read in blocks
        return a if hasattr(a, "shape") else np.asarray(a)
    a = np.asarray(a)
    r = crop_rows(a.shape[-1], m)
    return a[..., r, :][..., r]


def max_ring_of(n, max_ring=None):
    """Highest ring the data term uses: ``max_ring``, at most Nyquist n//2."""
    return n // 2 if max_ring is None else min(int(max_ring), n // 2)


def whitening_filter(n, noise_power, max_ring=None, m=None):
    """1 / sqrt(S(ring)) on the rfft2 half-plane of an n x n patch, (n, n//2+1), or of its
    cropped m x m grid (``m``: :func:`crop_size`), (m, m//2+1); zero at DC, beyond ring
    ``max_ring`` (default Nyquist n//2) and where S is not positive."""
    m = n if m is None else m
    rings, _ = rfft_rings(m)
    s = np.zeros(rings.max() + 1)
    s[:len(noise_power)] = np.asarray(noise_power, dtype=np.float64)[:rings.max() + 1]
    filt = np.zeros(s.shape)
    ok = s > 0
    filt[ok] = 1.0 / np.sqrt(s[ok])
    filt[0] = 0.0
    filt[max_ring_of(n, max_ring) + 1:] = 0.0
    return filt[rings]


def inverse_noise_weights(m, n, noise_power, max_ring=None):
    """1 / S(ring) on the full fft2 plane of the m x m grid (cut from n x n patches, rings as on
    the n grid), (m, m); zero at DC, beyond ring ``max_ring`` (default Nyquist n//2) and where S
    is not positive: the CC maps' per-frequency weight before the cc_scale factor."""
    rings = ring_index(m)
    s = np.zeros(rings.max() + 1)
    s[:len(noise_power)] = np.asarray(noise_power)[:len(s)]
    inv = np.zeros_like(s)
    ok = s > 0
    inv[ok] = 1.0 / s[ok]
    inv[0] = 0.0
    inv[max_ring_of(n, max_ring) + 1:] = 0.0
    return inv[rings]


def cc_scale_factor(n, cc_scale="likelihood"):
    """Factor on the likelihood-scale CC: 1 for "likelihood", N / (2 A) for "relion" (N = n^2,
    A = pi/4 n w with w = 2 (n//2 + 1) - 1, RELION's MotionHelper::noiseNormalize area)."""
    if cc_scale == "likelihood":
        return 1.0
    if cc_scale == "relion":
        w = 2 * (n // 2 + 1) - 1
        return n * n / (2.0 * 0.25 * np.pi * w * n)
    raise ValueError("cc_scale must be one of %s, got %r" % (CC_SCALES, cc_scale))


def _window_dft(m, radius, dtype, n=None):
    """Inverse-DFT matrices restricted to the shifts -radius..radius (pixels of an n x n patch,
    default n = m) for its spectrum cut to an m x m grid (:func:`crop_plane`): rows (W, m) over
    ky (full axis) and Hermitian columns (mh, W) over the rfft half-axis kx (multiplicity 2
    except DC and the grid's Nyquist column), both with irfft2's 1/n normalisation."""
    n = m if n is None else n
    s = np.arange(-radius, radius + 1)
    k = np.fft.fftfreq(m) * m                       # frequency indices, cycles per patch
    ey = np.exp(2j * np.pi * np.outer(s, k) / n) / n
    _, mult = rfft_rings(m)
    mh = m // 2 + 1
    ex = np.exp(2j * np.pi * np.outer(np.arange(mh), s) / n) * mult[0][:, None] / n
    return ey.astype(dtype), ex.astype(dtype)


def _check_cc_args(P, F, n, predictions, damage, radius, patch=None):
    """Shapes against P particles, F frames and an n x n (possibly cropped) grid; the window
    against the patch size (default n)."""
    if predictions.shape != (P, n, n):
        raise ValueError("predictions %s do not match patches %s" % (predictions.shape, (P, F, n, n)))
    if damage is not None and damage.shape != (F, n, n):
        raise ValueError("damage filters %s do not match (%d, %d, %d)" % (damage.shape, F, n, n))
    if radius < 0 or 2 * radius + 1 > (n if patch is None else patch):
        raise ValueError("CC window radius %d does not fit in a %d px box" % (radius, n))


def cc_maps_from_spectra(spectra, predictions, damage, radius, noise_power,
                         cc_scale="likelihood", dtype=np.float32, backend=None, n=None,
                         max_ring=None, out=None):
    """CC maps (P, F, W, W), W = 2 radius + 1, of eq. 15-16 for all particles and frames, from
    the patches' rfft2 half-planes
    (P, F, m, mh) (the backend's ``patch_spectra``, or :func:`.patches.extract_spectra`'s
    cropped ones of n x n patches: ``n``), computed in their precision, from the rings up to
    ``max_ring`` (default Nyquist). predictions and damage: full (n, n) or cropped (m, m)
    planes. ``spectra``: an array or a :class:`.spectra_store.SpectraStore` (read a block of
    particles at a time); ``predictions``: an array or anything with a shape whose particle
    slices are arrays (e.g. :class:`polishplugin.programs.scratch.ScratchPlanes`). ``out``:
    where the maps go, a block of particles at a time (``out[a:b] = maps``; e.g. a
    :class:`.cc_store.CCStore`); default a new array. Returns ``out``."""
    P, F, m = spectra.shape[:3]
    n = m if n is None else n
    predictions = crop_plane(predictions, m)
    damage = None if damage is None else crop_plane(damage, m)
    _check_cc_args(P, F, m, predictions, damage, radius, n)
    cdt = spectra.dtype
    rdt = np.float32 if cdt == np.complex64 else np.float64
    mh = m // 2 + 1
    filt2 = whitening_filter(n, noise_power, max_ring, m) ** 2 * n * n * \
        cc_scale_factor(n, cc_scale)
    dmg = None if damage is None else np.asarray(damage)[..., :mh].astype(rdt)
    ey, ex = _window_dft(m, radius, cdt, n)
    be = get_backend(backend)
    W = 2 * radius + 1
    if out is None:
        out = np.empty((P, F, W, W), dtype=dtype)
    elif tuple(out.shape) != (P, F, W, W):
        raise ValueError("CC maps %s into %s" % ((P, F, W, W), tuple(out.shape)))
    for s, x in spectra_chunks(spectra):
        pred = crop_plane(predictions[s], m)
        weights = np.empty((x.shape[0], m, mh), dtype=cdt)
        for i in range(x.shape[0]):
            weights[i] = np.conj(pred[i, :, :mh]) * filt2
        del pred
        out[s] = be.cc_windows(x, weights, dmg, ey, ex)
    return out
