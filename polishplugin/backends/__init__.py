"""Compute backends: the few hot kernels behind one small interface.

Every backend is a module exposing ``NAME`` and the kernels

- ``cc_interp(cc_maps, positions) -> (values, grad)``: Catmull-Rom bicubic interpolation of
  per-(particle, frame) CC maps with its analytic gradient (seed zivanov2019 §2.1.3, "cubic
  interpolation ... ensures a continuous gradient"); see :mod:`.numpy_backend` for the layout;
- ``interp_trilinear(volume, coords) -> values``: periodic trilinear interpolation of a 3D
  (complex) array, the Fourier-slice sampling of :class:`polishplugin.core.projector.Projector`;
- ``ring_correlation(q, scale, offset, kx, ky, tracks, box) -> float``: the numerator of the TCC
  (eq. 19) over compactly stored evaluation-ring products (:mod:`polishplugin.core.motion.tcc`),
  the inner loop of motion-parameter training.

``numpy`` is the readable reference, ``numba`` the default (parallel CPU loops); the backends
must agree to float tolerance.
"""
import importlib
import os

from ..constants import BACKEND_VAR, DEFAULT_BACKEND

_MODULES = {"numpy": "numpy_backend", "numba": "numba_backend"}
_PLANNED = ("opencl",)


def available_backends():
    """Names accepted by :func:`get_backend`."""
    return tuple(_MODULES)


def get_backend(name=None):
    """Return the backend module called ``name`` (None: env var POLISHPLUGIN_BACKEND, else numba)."""
    if name is None:
        name = os.environ.get(BACKEND_VAR) or DEFAULT_BACKEND
    name = name.strip().lower()
    if name in _PLANNED:
        raise NotImplementedError("backend %r is not implemented yet; available: %s"
                                  % (name, ", ".join(available_backends())))
    if name not in _MODULES:
        raise ValueError("unknown backend %r; available: %s"
                         % (name, ", ".join(available_backends())))
    return importlib.import_module("." + _MODULES[name], __name__)
