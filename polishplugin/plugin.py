"""The Scipion plugin class (loaded lazily by ``polishplugin.Plugin``)."""
import os
import sys

import pwem

from . import __version__
from .constants import BACKEND_VAR, OPENCL_DEVICE_VAR, DEFAULT_BACKEND, BACKENDS


class Plugin(pwem.Plugin):
    """Config variables: POLISHPLUGIN_BACKEND (numba | opencl | numpy | auto) and
    POLISHPLUGIN_OPENCL_DEVICE (see :mod:`polishplugin.backends.opencl_backend`). No external binaries: the programs are this package's own
    modules, run with the interpreter of the plugin's environment."""
    __module__ = "polishplugin"  # pyworkflow finds the plugin's package through this
    _homeVar = ""
    _pathVars = []
    _supportedVersions = [__version__]
    _url = "https://github.com/polishplugin/scipion-em-polishplugin"

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(BACKEND_VAR, DEFAULT_BACKEND)
        cls._defineVar(OPENCL_DEVICE_VAR, "")

    @classmethod
    def getBackend(cls):
        backend = (cls.getVar(BACKEND_VAR) or DEFAULT_BACKEND).lower()
        if backend not in BACKENDS:
            raise ValueError("%s=%r is not one of %s" % (BACKEND_VAR, backend, ", ".join(BACKENDS)))
        return backend

    @classmethod
    def getPython(cls):
        """Interpreter that runs our programs (the one Scipion runs the protocol with)."""
        return os.environ.get("SCIPION_PYTHON") or sys.executable

    @classmethod
    def getEnviron(cls):
        import pyworkflow.utils as pwutils
        env = pwutils.Environ(os.environ)
        env[BACKEND_VAR] = cls.getBackend()
        device = cls.getVar(OPENCL_DEVICE_VAR)
        if device:
            env[OPENCL_DEVICE_VAR] = device
        return env

    @classmethod
    def validateInstallation(cls):
        missing = []
        for mod in ("numpy", "scipy", "mrcfile", "numba", "emtable", "tifffile"):
            try:
                __import__(mod)
            except ImportError:
                missing.append("Python module %s is missing from the plugin environment" % mod)
        return missing

    @classmethod
    def defineBinaries(cls, env):
        pass  # pure Python/numba: nothing to compile or download
