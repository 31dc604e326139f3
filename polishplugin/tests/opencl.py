"""Whether the OpenCL backend can run here (pyopencl and a platform with a device, e.g. PoCL):
OPENCL_REASON is "" when it can, else why the OpenCL tests are skipped; ``needs_opencl`` marks
them."""
import pytest


def _reason():
    try:
        from polishplugin.backends import BackendError, get_backend
        get_backend("opencl")
    except BackendError as exc:
        return "OpenCL backend unavailable: %s" % exc
    return ""


OPENCL_REASON = _reason()
needs_opencl = pytest.mark.skipif(bool(OPENCL_REASON), reason=OPENCL_REASON or "OpenCL available")
