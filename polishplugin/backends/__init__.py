"""Compute backends: the few hot kernels behind one small interface.

Every backend is a module exposing ``NAME`` and the kernels

- ``cc_interp(cc_maps, positions) -> (values, grad)``: Catmull-Rom bicubic interpolation of
  per-(particle, frame) CC maps with its analytic gradient (seed zivanov2019 §2.1.3, "cubic
  interpolation ... ensures a continuous gradient"); see :mod:`.numpy_backend` for the layout;
- ``interp_trilinear(volume, coords) -> values``: periodic trilinear interpolation of a 3D
  (complex) array, the Fourier-slice sampling of :class:`polishplugin.core.projector.Projector`;
- ``ring_correlation(q, scale, offset, kx, ky, tracks, box) -> float``: the numerator of the TCC
  (eq. 19) over compactly stored evaluation-ring products (:mod:`polishplugin.core.motion.tcc`),
  the inner loop of motion-parameter training;
- the spectra of a micrograph (:mod:`polishplugin.core.motion.observation`): ``patch_spectra``
  (rfft2 of the patches; the other three take what it returns), ``power_sums`` (noise power),
  ``cc_windows`` (eq. 15-16 on the search window), ``fcc_pixel_sums`` (eq. 20 numerator);
- refinement (:mod:`polishplugin.core.refine`): ``slice_extract(volume, rots, kxy, scale,
  origin, half=False)`` (Fourier slices of the projector; ``half``: of a transform kept at
  x >= 0 only), ``backproject_slices(data, weight, rots, kxy,
  values, weights, scale)`` (trilinear spreading into the back-projector's half grid, in place)
  and ``estep_scores(a, b, projections, phases)`` (the pose-dependent part of the E-step
  log-likelihoods for images x orientations x translations); see :mod:`.numpy_backend`.

``numpy`` is the readable reference, ``numba`` the default (parallel CPU loops), ``opencl``
(pyopencl: a GPU, or PoCL on the CPU) keeps each kernel's constant operand on the device; the
backends must agree to float tolerance. ``auto`` is OpenCL when a device is usable, else numba
(said once in the log).
"""
import functools
import importlib
import logging
import os

from ..constants import BACKEND_VAR, DEFAULT_BACKEND

log = logging.getLogger(__name__)

_MODULES = {"numpy": "numpy_backend", "numba": "numba_backend", "opencl": "opencl_backend"}


class BackendError(RuntimeError):
    """The requested backend cannot run here (no pyopencl, no OpenCL platform or device)."""


def available_backends():
    """Names accepted by :func:`get_backend`."""
    return tuple(_MODULES) + ("auto",)


@functools.lru_cache(maxsize=None)
def _auto():
    try:
        return _load("opencl")
    except BackendError as exc:
        log.warning("backend auto: OpenCL unavailable (%s); using numba", exc)
        return _load("numba")


def _load(name):
    module = importlib.import_module("." + _MODULES[name], __name__)
    if name == "opencl":
        module._dev()      # fail now (BackendError) rather than inside the first kernel
    return module


def get_backend(name=None):
    """Return the backend module called ``name`` (None: env var POLISHPLUGIN_BACKEND, else numba;
    a backend module is returned as it is). Raises ValueError for an unknown name and
    BackendError when OpenCL is asked for and cannot run."""
    if hasattr(name, "NAME"):
        return name
    if name is None:
        name = os.environ.get(BACKEND_VAR) or DEFAULT_BACKEND
    name = name.strip().lower()
    if name == "auto":
        return _auto()
    if name not in _MODULES:
        raise ValueError("unknown backend %r; available: %s"
                         % (name, ", ".join(available_backends())))
    return _load(name)
