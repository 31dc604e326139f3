"""Headless Scipion environment: set before pyworkflow is imported (it reads them at import).

Used by the test suite's conftest and by the demo, so a person with only pip and Python can run
a real pyworkflow project without the ``scipion`` launcher.
"""
import os
import sys


def ensure_headless_scipion_env(root):
    """Point pyworkflow at a Scipion home under ``root`` (created if needed): pwem domain, a
    hosts.conf for localhost, this interpreter for protocol subprocesses, no dataset downloads.
    Variables already set by the user are kept."""
    root = os.path.abspath(root)
    os.environ.setdefault("SCIPION_DOMAIN", "pwem")
    os.environ.setdefault("SCIPION_PYTHON", sys.executable)
    os.environ.setdefault("SCIPION_HOME", root)
    os.environ.setdefault("SCIPION_USER_DATA", os.path.join(root, "userdata"))
    os.environ.setdefault("SCIPION_TESTS", os.path.join(root, "data", "tests"))
    os.environ.setdefault("SCIPION_TEST_NOSYNC", "1")
    os.environ.setdefault("SCIPION_STEPS_CHECK_SEC", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    hosts = os.environ.setdefault("SCIPION_HOSTS", os.path.join(root, "config", "hosts.conf"))
    if not os.path.exists(hosts):
        os.makedirs(os.path.dirname(hosts), exist_ok=True)
        with open(hosts, "w") as fh:
            fh.write("[localhost]\nPARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s\n")
    return root
