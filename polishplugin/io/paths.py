"""Paths named inside STAR files, resolved as RELION resolves them.

RELION writes every path inside its STAR files relative to the project directory it runs in (the
run directory), whichever job folder the STAR file itself sits in: ``PostProcess/job012/
postprocess.star`` names ``Refine3D/job010/run_half1_class001_unfil.mrc``, ``run_data.star`` names
``Extract/job007/Movies/x.mrcs``, ``corrected_micrographs.star`` names ``MotionCorr/job002/Movies/
x.star``, which names ``Movies/x.tiff`` and the gain. So a relative name is joined to the project
directory (``project``; default: the current directory, as when RELION runs). Only when nothing
exists there is the name tried relative to the STAR file's own folder (files moved or written by
other tools), with one log line per STAR file. Pinned by ``tests/test_io_paths.py`` and, with
RELION's own programs reading our simulated project, ``tests/test_relion_polish.py``.
"""
import logging
import os

log = logging.getLogger(__name__)

_announced = set()


def star_path(name, star_file, project=None):
    """Path of the file ``name`` (as written in ``star_file``): absolute names as they are, else
    project-relative when that exists, else STAR-file-relative when that exists (logged), else
    the project-relative path (for the caller's 'no such file')."""
    name = os.fspath(name)
    if os.path.isabs(name):
        return name
    in_project = os.path.join(project, name) if project else name
    if os.path.exists(in_project):
        return in_project
    near = os.path.join(os.path.dirname(os.fspath(star_file)), name)
    if os.path.exists(near):
        key = (os.path.abspath(os.fspath(star_file)), os.path.dirname(name))
        if key not in _announced:
            _announced.add(key)
            log.info("%s: %s is not in the project directory %s; using the path relative to the "
                     "STAR file instead (%s)", star_file, name,
                     os.path.abspath(project or os.curdir), near)
        return near
    return in_project


def project_relative(path, project=None):
    """``path`` as RELION would write it in a STAR file: relative to the project directory
    (default: the current directory) when inside it, else absolute."""
    path = os.path.abspath(os.fspath(path))
    base = os.path.abspath(project or os.curdir)
    rel = os.path.relpath(path, base)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel
