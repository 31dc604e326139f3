"""MRC / MRCS images, stacks and volumes through mrcfile, with clear errors for bad files.

Pixel size: the header's voxel size (cella / mx), else the FEI extended header (EPU, FEI1/FEI2
``Pixel size X`` in metres) when the main header has none.
"""
import collections
import logging
import os
import warnings

import mrcfile
import mrcfile.utils
import numpy as np

from .atomic import atomic_path
from .errors import InputError

log = logging.getLogger(__name__)

HEADER_BYTES = 1024

MrcHeader = collections.namedtuple(
    "MrcHeader", "nx ny nz mode dtype pixel_size nframes is_stack exttyp")
MrcHeader.__doc__ = """Header facts: sizes, mode and numpy dtype, pixel size (A), nframes (= nz),
is_stack (image stack / movie rather than volume), exttyp (extended header type, e.g. 'FEI2')."""


def _fei_pixel_size(ext):
    """Pixel size in A from an FEI1/FEI2 extended header (stored in metres), or 0."""
    try:
        return float(ext[0]["Pixel size X"]) * 1e10
    except (TypeError, KeyError, IndexError, ValueError):
        return 0.0


def _check_exists(path):
    if not os.path.exists(path):
        raise InputError(path, "no such file")
    if not os.path.isfile(path):
        raise InputError(path, "not a regular file")


def read_mrc_header(path):
    """Read and check the header of an MRC file (no data read); return an :class:`MrcHeader`.

    Raises :class:`InputError` for a missing file, a corrupt header (no 'MAP ' stamp, bad mode or
    sizes) and a truncated file (fewer data bytes than the header announces).
    """
    path = os.fspath(path)
    _check_exists(path)
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise InputError(path, "truncated: %d bytes, shorter than the %d-byte MRC header"
                         % (size, HEADER_BYTES))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                h = mrc.header.copy()
                ext = mrc.extended_header
                voxel = float(mrc.voxel_size.x)
    except Exception as exc:  # mrcfile raises ValueError/OSError/EOFError for broken headers
        raise InputError(path, "corrupt MRC header (%s)" % exc) from exc
    stamp = bytes(h.map) == b"MAP "
    corrupt = "corrupt MRC header" + ("" if stamp else " (no 'MAP ' stamp at byte 208)")
    nx, ny, nz, mode = int(h.nx), int(h.ny), int(h.nz), int(h.mode)
    if min(nx, ny, nz) < 1:
        raise InputError(path, "%s: sizes %d x %d x %d" % (corrupt, nx, ny, nz))
    try:
        dtype = mrcfile.utils.dtype_from_mode(mode)
    except ValueError as exc:
        raise InputError(path, "%s: unsupported mode %d" % (corrupt, mode)) from exc
    data_bytes = nx * ny * nz * dtype.itemsize
    held = size - HEADER_BYTES - int(h.nsymbt)
    if held < data_bytes:
        problem = "truncated" if stamp else corrupt + " or truncated"
        raise InputError(path, "%s: header says %d frames of %dx%d %s (%d bytes) but the file "
                         "holds %d bytes" % (problem, nz, nx, ny, dtype.name, data_bytes,
                                             max(held, 0)))
    if not stamp:
        log.warning("%s: no 'MAP ' stamp in the MRC header (old-style file); reading it anyway",
                    path)
    exttyp = bytes(h.exttyp).decode("ascii", "replace").strip("\x00 ")
    fei = _fei_pixel_size(ext) if exttyp.startswith("FEI") else 0.0
    pixel = voxel if voxel > 0 else fei
    if voxel > 0 and fei > 0 and abs(voxel - fei) > 0.01 * fei:
        log.warning("%s: header pixel size %.4f A disagrees with the FEI extended header %.4f A; "
                    "using the header", path, voxel, fei)
    is_stack = nz > 1 and (int(h.ispg) == 0 or path.endswith(".mrcs"))
    return MrcHeader(nx, ny, nz, mode, dtype, pixel, nz, is_stack, exttyp)


def read_mrc(path):
    """Read a whole MRC/MRCS file: (float32 array, pixel size in A).

    2-D for a single image, (n, y, x) for stacks, movies and volumes.
    """
    path = os.fspath(path)
    header = read_mrc_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, permissive=True) as mrc:
                data = np.array(mrc.data, dtype=np.float32)
    except Exception as exc:
        raise InputError(path, "unreadable MRC data (%s)" % exc) from exc
    if header.nz == 1 and data.ndim == 3:
        data = data[0]
    return data, header.pixel_size


def _as_mrc_dtype(data):
    data = np.asarray(data)
    try:
        mrcfile.utils.mode_from_dtype(data.dtype)
        return data
    except ValueError:
        return data.astype(np.float32)


def write_mrc(path, data, pixel_size, stack=None):
    """Write ``data`` (2-D image or 3-D array) atomically; ``stack`` (default: name ends in
    .mrcs) marks a 3-D array as an image stack / movie rather than a volume."""
    path = os.fspath(path)
    data = _as_mrc_dtype(data)
    if data.ndim not in (2, 3):
        raise ValueError("write_mrc: expected a 2-D or 3-D array, got shape %s" % (data.shape,))
    if stack is None:
        stack = path.endswith(".mrcs")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if stack and data.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size)
            mrc.update_header_stats()
