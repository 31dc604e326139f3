"""The output folder of a resumable job (polish, bfactors, train): never over an input, one
writer at a time, results of one set of settings only.

:func:`claim_output` runs on rank 0 before any work and, in this order,

1. refuses an output folder that is, or holds at any depth, one of the job's input files or
   folders (``--out .`` next to particles.star would overwrite it);
2. takes an exclusive ``flock`` on ``<out>/.lock`` for the whole run (the system drops it when
   the process ends, kill -9 included), or refuses naming the run that holds it;
3. compares the settings that define the result with the record ``settings.json`` of an earlier
   run: when they differ (or an earlier run left results without a record) it refuses, naming
   the differences, unless ``fresh``, which deletes the earlier run's outputs first;
4. deletes the ``*.part`` files an interrupted run left (:mod:`polishplugin.io.atomic`) and
   writes the record.

Every rank learns the outcome (a refusal is an :class:`InputError` on all ranks).
"""
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket

import numpy as np

from ..io.atomic import atomic_text
from ..io.errors import InputError

log = logging.getLogger(__name__)

RECORD = "settings.json"
LOCK = ".lock"


def file_digest(path):
    """sha256 of a file's content (identifies an input whatever its path), or None if absent."""
    if not path or not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def input_digests(args, inputs):
    """Content digests of what a movie job (``args``, loaded ``inputs``) reads, whatever the
    paths: the particles and micrographs STARs, the half maps, the mask and the reference's
    resolution (the movies themselves are not read for this)."""
    maps = {"half1": inputs.half1, "half2": inputs.half2, "mask": inputs.mask}
    digests = {k: None if v is None else hashlib.sha256(np.ascontiguousarray(v)).hexdigest()
               for k, v in maps.items()}
    digests.update(particles=file_digest(args.particles), mics=file_digest(args.mics),
                   resolution=inputs.resolution)
    return digests


def input_paths(args, inputs):
    """Every input file of a movie job (what the output folder must not hold)."""
    paths = [args.particles, args.mics, args.postprocess, args.half1, args.half2, args.mask,
             getattr(args, "params_file", None), getattr(args, "defect_map", None)]
    for m in inputs.micrographs:
        paths += [m.movie, m.gain]
    return [p for p in paths if p]


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _normal(settings):
    return json.loads(json.dumps(settings, sort_keys=True))


def _differences(old, new, prefix=""):
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k, "(none)"), new.get(k, "(none)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, prefix + k + ".")
        elif a != b:
            out.append("%s%s %s -> %s" % (prefix, k, a, b))
    return out


class JobFolder:
    """The claimed output folder; holds the lock until :meth:`release` or the process ends."""

    def __init__(self, out, fd):
        self.out, self._fd = out, fd

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _claim(out, program, settings, inputs, outputs, fresh):
    for path in inputs:
        if path and os.path.exists(path) and _inside(path, out):
            raise InputError(out, "the output folder holds the input %s, which the job could "
                             "overwrite: choose another --out" % path)
    os.makedirs(out, exist_ok=True)
    fd = os.open(os.path.join(out, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise InputError(out, "another run (%s) is writing into this folder; wait for it or "
                         "choose another --out" % holder)
    try:
        _settle(fd, out, program, settings, outputs, fresh)
    except BaseException:
        os.close(fd)  # releases the lock
        raise
    return JobFolder(out, fd)


def _settle(fd, out, program, settings, outputs, fresh):
    """Under the lock: the holder's name, the settings check, --fresh, .part files, record."""
    os.ftruncate(fd, 0)
    os.write(fd, ("%s pid %d on %s" % (program, os.getpid(), socket.gethostname())).encode())
    record = os.path.join(out, RECORD)
    new = _normal({"program": program, "settings": settings})
    present = [n for n in outputs if os.path.lexists(os.path.join(out, n))]
    if os.path.exists(record):
        with open(record) as fh:
            try:
                old = json.load(fh)
            except ValueError:
                old = {}
        diff = _differences(old, new)
    else:
        diff = ["no settings record for the results %s" % ", ".join(present)] if present else []
    if diff and not fresh:
        raise InputError(out, "holds results of other settings (%s): choose another --out, or "
                         "--fresh to discard them" % "; ".join(diff))
    if diff:
        log.warning("%s: --fresh: deleting the results of other settings (%s)", out,
                    "; ".join(diff))
        for name in present:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) \
                else os.remove(path)
    n_part = 0
    for root, _, files in os.walk(out):
        for f in files:
            if f.endswith(".part"):
                os.remove(os.path.join(root, f))
                n_part += 1
    if n_part:
        log.info("%s: removed %d temporary .part file(s) of an interrupted run", out, n_part)
    with atomic_text(record) as fh:
        json.dump(new, fh, indent=1, sort_keys=True)


def claim_output(comm, out, program, settings, inputs, outputs, fresh=False):
    """Claim ``out`` for this run (see the module doc) on rank 0; every rank raises the same
    :class:`InputError` when refused. ``settings``: JSON-able dict of what defines the result
    (input digests included); ``inputs``: the paths read; ``outputs``: the names the program
    writes at the top of ``out`` (what ``fresh`` deletes). Returns the :class:`JobFolder`, a
    context manager that releases the lock (held by rank 0 only)."""
    folder, error = JobFolder(out, None), None
    if comm.rank == 0:
        try:
            folder = _claim(out, program, settings, inputs, outputs, fresh)
        except InputError as exc:
            error = (exc.path, exc.problem)
        except OSError as exc:
            error = (out, "cannot claim the output folder: %s" % exc)
    error = comm.bcast(error, root=0)
    if error:
        raise InputError(*error)
    return folder
