"""Names shared by the plugin class, protocols and programs."""

BACKEND_VAR = "POLISHPLUGIN_BACKEND"         # numba | opencl | numpy | auto
OPENCL_DEVICE_VAR = "POLISHPLUGIN_OPENCL_DEVICE"  # "0:0" (platform:device), "1", or a name part
BACKENDS = ("numba", "opencl", "numpy", "auto")
DEFAULT_BACKEND = "numba"

# RELION tutorial defaults for the motion prior (seed zivanov2019 Table 2 units):
# sigma_vel, sigma_acc in A per (e-/A^2) of dose; sigma_div in A.
DEFAULT_SIGMA_VEL = 0.2
DEFAULT_SIGMA_DIV = 5000.0
DEFAULT_SIGMA_ACC = 2.0

#: MB of memory for one micrograph's patch spectra before they go to scratch disk
#: (polish --spectra-memory; the polishing protocols' "Spectra memory")
DEFAULT_SPECTRA_MB = 32
