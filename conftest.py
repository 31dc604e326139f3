"""Make pyworkflow usable headless before it is imported (it reads these at import time):
a throw-away Scipion home with a hosts.conf, the pwem domain, and this interpreter for the
protocol subprocesses."""
import os
import sys
import tempfile

root = os.environ.get("PP_TEST_ROOT") or tempfile.mkdtemp(prefix="pp_scipion_")
os.environ.setdefault("SCIPION_DOMAIN", "pwem")
os.environ.setdefault("SCIPION_PYTHON", sys.executable)
os.environ.setdefault("SCIPION_HOME", root)
os.environ.setdefault("SCIPION_USER_DATA", os.path.join(root, "userdata"))
os.environ.setdefault("SCIPION_TESTS", os.path.join(root, "data", "tests"))
os.environ.setdefault("SCIPION_TEST_NOSYNC", "1")
os.environ.setdefault("SCIPION_STEPS_CHECK_SEC", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
_hosts = os.environ.setdefault("SCIPION_HOSTS", os.path.join(root, "config", "hosts.conf"))
if not os.path.exists(_hosts):
    os.makedirs(os.path.dirname(_hosts), exist_ok=True)
    with open(_hosts, "w") as fh:
        fh.write("[localhost]\nPARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s\n")
