"""polishplugin: reference-based Bayesian particle polishing (Zivanov et al. 2019) and
denoiser-regularised refinement (Kimanius et al. 2021) for Scipion.

The science lives in ``core`` (numpy arrays in, numpy arrays out), files in ``io``,
command-line programs in ``programs``; ``protocols`` and ``viewers`` are thin Scipion
layers over those programs.
"""
import os
import sys

__version__ = "0.1.0"
_logo = "polishplugin_logo.png"
_references = ["Zivanov2019"]

try:  # Scipion is optional for the programs and core; the plugin class needs pwem.
    import pwem
except ImportError:  # pragma: no cover - programs used without Scipion
    pwem = None

from .constants import BACKEND_VAR, OPENCL_DEVICE_VAR, DEFAULT_BACKEND, BACKENDS

if pwem is not None:
    class Plugin(pwem.Plugin):
        """Scipion plugin class. No external binaries: the programs are this package's
        own console scripts, run with the Python interpreter of the plugin's environment."""
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
        def getProgram(cls, name):
            """Command that runs one of our programs: 'python -m polishplugin.programs.NAME'."""
            return "%s -m polishplugin.programs.%s" % (sys.executable, name)

        @classmethod
        def getEnviron(cls):
            import pyworkflow.utils as pwutils
            env = pwutils.Environ(os.environ)
            env[BACKEND_VAR] = cls.getBackend()
            dev = cls.getVar(OPENCL_DEVICE_VAR)
            if dev:
                env["PYOPENCL_CTX"] = dev
            return env

        @classmethod
        def validateInstallation(cls):
            missing = []
            for mod in ("numpy", "scipy", "mrcfile", "numba", "emtable"):
                try:
                    __import__(mod)
                except ImportError:
                    missing.append("Python module %s is missing" % mod)
            return missing

        @classmethod
        def defineBinaries(cls, env):
            pass  # pure Python/numba: nothing to compile or download
