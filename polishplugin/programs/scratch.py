"""Patch spectra kept on scratch disk instead of memory (polish --spectra-memory).

:class:`ScratchSpectra` is a :class:`polishplugin.core.motion.spectra_store.SpectraStore` whose
spectra live in a file of the job folder, particle-major ((P, F, m, mh) complex64, as the array
would be): each frame's block of particles is written as it is transformed (one ``pwrite`` per
particle-frame), and the uses read it back a block of particles at a time, mapped from the page
cache (no copy; the block's pages are released from this process's memory, ``MADV_DONTNEED``,
before the next block is mapped). The file is unlinked as soon as it is
made (``tempfile.TemporaryFile``): nothing is left behind, whatever ends the process, so an
interrupted job resumes as any other (finished micrographs are skipped, the others redone).
"""
import mmap
import os
import tempfile

import numpy as np

from ..core.motion.spectra_store import SpectraStore


def _write_at(fd, a, offset):
    """Write array ``a`` whole at byte ``offset`` of file ``fd``."""
    view = memoryview(np.ascontiguousarray(a)).cast("B")
    while len(view):
        k = os.pwrite(fd, view, offset)
        view, offset = view[k:], offset + k


def _read_at(fd, a, offset):
    """Fill array ``a`` from byte ``offset`` of file ``fd``."""
    view = memoryview(a).cast("B")
    while len(view):
        k = os.preadv(fd, [view], offset)
        if k <= 0:
            raise OSError("scratch file ended early")
        view, offset = view[k:], offset + k


class ScratchSpectra(SpectraStore):
    """Spectra of P x F particle-frames in an unlinked file under ``folder``, handed out in
    read-only blocks of at most ``block_bytes`` (at least one particle)."""

    def __init__(self, P, F, m, n, folder, block_bytes):
        self._file = tempfile.TemporaryFile(prefix="spectra_", suffix=".scratch", dir=folder)
        self._fd = self._file.fileno()
        super().__init__(P, F, m, n)
        self.block = max(1, min(self.P, int(block_bytes) // self.particle_bytes))

    def _allocate(self, buffer):
        os.ftruncate(self._fd, int(np.prod(self.shape)) * self.dtype.itemsize)
        return None

    def _offset(self, p, f):
        return ((p * self.F) + f) * self.m * self.mh * self.dtype.itemsize

    def put(self, p0, f, spec):
        b = spec.shape[0]
        block = np.empty((b, self.m, self.mh), dtype=self.dtype)
        self._crop_into(block, spec)
        for i in range(b):
            _write_at(self._fd, block[i], self._offset(p0 + i, f))
        return block

    def chunks(self):
        for p0 in range(0, self.P, self.block):
            b = min(self.block, self.P - p0)
            x = np.memmap(self._file, dtype=self.dtype, mode="r", offset=self._offset(p0, 0),
                          shape=(b,) + self.shape[1:])
            yield slice(p0, p0 + b), x
            # out of this process's memory now (a stale view would fault the pages back in)
            x._mmap.madvise(mmap.MADV_DONTNEED)
            del x

    def _get(self, p, f):
        x = np.empty((self.m, self.mh), dtype=self.dtype)
        _read_at(self._fd, x, self._offset(p, f))
        return x

    def _set(self, p, f, x):
        _write_at(self._fd, x, self._offset(p, f))

    def close(self):
        self._file.close()


class ScratchPlanes:
    """(P, m, m) complex64 planes (e.g. a micrograph's predictions) in an unlinked file under
    ``folder``: ``write(p0, block)``; ``planes[a:b]`` reads particles a..b-1 into a new array
    (what :func:`polishplugin.core.motion.micrograph.align_micrograph` reads a block at a time)."""
    dtype = np.dtype(np.complex64)
    ndim = 3

    def __init__(self, P, m, folder):
        self.shape = (int(P), int(m), int(m))
        self._file = tempfile.TemporaryFile(prefix="planes_", suffix=".scratch", dir=folder)
        self._fd = self._file.fileno()
        self._plane = self.shape[1] * self.shape[2] * self.dtype.itemsize
        os.ftruncate(self._fd, self.shape[0] * self._plane)

    def __len__(self):
        return self.shape[0]

    def write(self, p0, block):
        _write_at(self._fd, np.asarray(block, dtype=self.dtype), p0 * self._plane)

    def __getitem__(self, s):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError("scratch planes are read by contiguous slices of particles")
        a, b, _ = s.indices(self.shape[0])
        out = np.empty((max(0, b - a),) + self.shape[1:], dtype=self.dtype)
        if len(out):
            _read_at(self._fd, out, a * self._plane)
        return out

    def close(self):
        self._file.close()


class ScratchMaps:
    """The whole CC maps (P, F, W, W) float32 of a micrograph in an unlinked file under
    ``folder``: the backing of a :class:`polishplugin.core.motion.cc_store.CCStore` (which keeps
    only the maps' centres in memory); ``write(p0, maps)`` a block of particles, ``read(p, f)``
    one map (W, W)."""
    dtype = np.dtype(np.float32)

    def __init__(self, P, F, W, folder):
        self.shape = (int(P), int(F), int(W), int(W))
        self._file = tempfile.TemporaryFile(prefix="ccmaps_", suffix=".scratch", dir=folder)
        self._fd = self._file.fileno()
        self._map = W * W * self.dtype.itemsize
        os.ftruncate(self._fd, int(np.prod(self.shape)) * self.dtype.itemsize)

    def write(self, p0, maps):
        _write_at(self._fd, np.asarray(maps, dtype=self.dtype), p0 * self.shape[1] * self._map)

    def read(self, p, f):
        out = np.empty(self.shape[2:], dtype=self.dtype)
        _read_at(self._fd, out, (p * self.shape[1] + f) * self._map)
        return out

    def close(self):
        self._file.close()
