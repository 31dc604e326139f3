"""RELION (3.1, Debian's ``relion`` package) as the oracle in tests: a skip marker and a runner."""
import os
import shutil
import subprocess

import pytest

#: skip marker for tests that run RELION's programs; CI installs them (``.ci/run``)
needs_relion = pytest.mark.skipif(
    shutil.which("relion_image_handler") is None or shutil.which("relion_motion_refine") is None,
    reason="needs RELION (relion_image_handler, relion_motion_refine...): apt-get install -y relion")


def run_relion(program, args, cwd=None, timeout=600):
    """Run a RELION program (``args``: list of str) in ``cwd``; fail the test with its output's tail
    when it exits non-zero (RELION reports errors on stdout as well as stderr)."""
    cmd = [program] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail("%s failed (%d):\n%s\n%s" % (" ".join(cmd), proc.returncode,
                                                 proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


def relion_postprocess(half1, half2, mask, cwd, angpix=None):
    """relion_postprocess on two half maps and a mask, no B-factor sharpening (only its FSCs are
    used); returns its postprocess.star's blocks. --o goes into a folder: without ghostscript
    RELION 3.1.3 exits 1 unless it can touch an empty <folder>/logfile.pdf."""
    from polishplugin.io.star import read_star
    folder = os.path.join(str(cwd), "pp")
    os.makedirs(folder)
    args = ["--i", half1, "--i2", half2, "--mask", mask, "--auto_bfac", "false",
            "--adhoc_bfac", 0, "--o", "pp/postprocess"]
    run_relion("relion_postprocess", args + ([] if angpix is None else ["--angpix", angpix]),
               cwd=cwd, timeout=120)
    return read_star(os.path.join(folder, "postprocess.star"))
