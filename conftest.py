"""Test-suite set-up: a throw-away headless Scipion home before pyworkflow is imported."""
import os
import tempfile

from polishplugin.programs.scipion_env import ensure_headless_scipion_env

ensure_headless_scipion_env(os.environ.get("PP_TEST_ROOT") or tempfile.mkdtemp(prefix="pp_scipion_"))
