"""A program killed (SIGKILL) part way, for the tests of resuming after an interruption."""
import os
import signal
import subprocess
import sys
import time


def kill_after_first(program, args, watch, pattern="*_tracks.star", timeout=120):
    """Run ``python -m polishplugin.programs.<program> args`` and kill -9 it as soon as a file
    matching ``pattern`` appears under ``watch`` (or it ends, or ``timeout`` s pass)."""
    cmd = [sys.executable, "-m", "polishplugin.programs." + program] + list(args)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not list(watch.rglob(pattern)) and time.time() - t0 < timeout:
            if proc.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
