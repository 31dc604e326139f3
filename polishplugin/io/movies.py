"""Movies read lazily frame by frame (MRC stacks through mrcfile.mmap, TIFF page by page), with an
optional gain reference multiplied in; writers for test and simulated movies and gains.

Only one frame is ever held in memory besides what the caller keeps (cf. RELION PR #1365, where
loading whole movies cost 37.5 GiB per K3 micrograph). TIFF compression: tifffile 2023.9.26 reads
and writes deflate (zlib) on its own; LZW, the usual EPU choice, needs the ``imagecodecs`` package.

Orientation (RELION's, pinned against ``relion_image_handler`` 3.1.3 by
``tests/test_relion_oracle.py::test_movie_frames_equal_relions`` and ``::test_gain_as_relion_applies_it``):
RELION reads a TIFF (movie or gain reference, any sample format, compressed or not) with its rows
in the opposite order to the file's, i.e. TIFF row 0 becomes image row ny-1, while MRC/MRCS data
keep the file's row order. All our arrays are in RELION's (= MRC's) orientation, so TIFF pages are
reversed along y on reading and writing; coordinates, gain, defects and hot pixels then line up as
they do in RELION. The gain is multiplied into each frame (RELION's motion correction and polishing,
and ``relion_image_handler --multiply``).
"""
import logging
import os
import warnings

import mrcfile
import numpy as np
import tifffile

from .atomic import atomic_path
from .errors import InputError
from .mrc import read_mrc, read_mrc_header, write_mrc

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_COMPRESSION = {None: None, "none": None, "deflate": "zlib", "zlib": "zlib", "lzw": "lzw"}


def _is_tiff(path):
    return os.fspath(path).lower().endswith(TIFF_SUFFIXES)


def _tiff_page(page, workers=1):
    """One TIFF page as an array in RELION's orientation: the file's rows reversed; its strips
    or tiles decoded by ``workers`` threads."""
    return page.asarray(maxworkers=max(1, int(workers)))[::-1]


def _strip_decoder(page):
    """decode(data, out) -> out for the strips of a TIFF page that hold its samples as they
    are, uncompressed or deflate-compressed (no predictor, one sample per pixel, native byte
    order, whole strips), decoding into ``out`` (rows, nx) of the page's type; None for any
    other page (tifffile decodes those)."""
    comp = int(page.compression)
    if page.is_tiled or page.samplesperpixel != 1 or page.fillorder != 1 or \
            int(page.predictor) != 1 or comp not in (1, 8, 32946) or \
            page.bitspersample != 8 * page.dtype.itemsize or not page.dtype.isnative or \
            page.parent.byteorder != ("<" if np.little_endian else ">") or \
            len(page.shape) != 2 or not page.rowsperstrip or \
            len(page.dataoffsets) != -(-page.shape[0] // page.rowsperstrip) or \
            not all(page.databytecounts):
        return None
    if comp == 1:
        def decode(data, out):
            flat = out.reshape(-1).view(np.uint8)
            if len(data) < flat.size:
                raise ValueError("strip of %d bytes, %d expected" % (len(data), flat.size))
            flat[:] = np.frombuffer(data, dtype=np.uint8, count=flat.size)
            return out
        return decode
    try:
        from imagecodecs import deflate_decode
    except ImportError:
        return None

    def decode(data, out):
        flat = out.reshape(-1).view(np.uint8)
        n = len(deflate_decode(data, out=flat))
        if n != flat.size:
            raise ValueError("strip decoded to %d bytes, %d expected" % (n, flat.size))
        return out
    return decode


class _Complaints(logging.Handler):
    """Collects the warnings tifffile logs while parsing a file."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _tiff_frames(path):
    """Open a TIFF and check every page's data lies inside the file; return (TiffFile, pages)."""
    if not os.path.isfile(path):
        raise InputError(path, "no such file")
    size = os.path.getsize(path)
    complaints = _Complaints()
    tifflog = logging.getLogger("tifffile")
    tifflog.addHandler(complaints)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tif = tifffile.TiffFile(path)
            pages = list(tif.pages)
    except Exception as exc:
        raise InputError(path, "corrupt or truncated TIFF (%s)" % exc) from exc
    finally:
        tifflog.removeHandler(complaints)
    if complaints.messages:  # tifffile only logs a broken page chain and drops the rest
        tif.close()
        raise InputError(path, "corrupt or truncated TIFF after %d readable frames (%s)"
                         % (len(pages), complaints.messages[0]))
    if not pages:
        tif.close()
        raise InputError(path, "TIFF holds no image")
    shape = pages[0].shape
    for i, page in enumerate(pages):
        if page.shape != shape:
            tif.close()
            raise InputError(path, "frame %d is %s but frame 0 is %s" % (i, page.shape, shape))
        end = max(o + n for o, n in zip(page.dataoffsets, page.databytecounts))
        if end > size:
            tif.close()
            raise InputError(path, "truncated: frame %d of %d needs bytes up to %d but the file "
                             "holds %d bytes" % (i, len(pages), end, size))
    return tif, pages


def read_gain(path):
    """Gain reference (MRC or TIFF) as a float32 (y, x) array in RELION's orientation (a TIFF's rows
    reversed, see the module docstring)."""
    path = os.fspath(path)
    if _is_tiff(path):
        tif, pages = _tiff_frames(path)
        with tif:
            gain = _tiff_page(pages[0]).astype(np.float32)
    else:
        gain, _ = read_mrc(path)
    if gain.ndim != 2:
        raise InputError(path, "a gain reference must be one 2-D image, found shape %s"
                         % (gain.shape,))
    return gain


class Movie:
    """Lazy movie: ``frame(i)`` reads one (y, x) float32 frame, times the gain when one is given,
    both in RELION's orientation (a TIFF's rows reversed, see the module docstring).

    ``gain`` is a path (MRC/TIFF) or an array; ``pixel_size`` (A) overrides the file's (TIFF files
    carry none). ``workers``: threads that decode a compressed TIFF frame. Use as a context
    manager or call :meth:`close`. ``dtype``: the file's sample type (frames are float32).
    """

    def __init__(self, path, gain=None, pixel_size=None, workers=1):
        self.path = os.fspath(path)
        self.workers = workers
        if _is_tiff(self.path):
            self._tif, self._pages = _tiff_frames(self.path)
            self._mrc = None
            self.nframes = len(self._pages)
            self.shape = tuple(self._pages[0].shape)
            self.dtype = np.dtype(self._pages[0].dtype)
            file_pixel = 0.0
        else:
            header = read_mrc_header(self.path)
            self._tif = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._mrc = mrcfile.mmap(self.path, mode="r", permissive=True)
            self.nframes = header.nz
            self.shape = (header.ny, header.nx)
            self.dtype = np.dtype(self._mrc.data.dtype)
            file_pixel = header.pixel_size
        self._strip = None      # the decoding buffer of :meth:`pieces`
        self.pixel_size = float(pixel_size) if pixel_size else file_pixel
        self.gain_path = None
        self.gain = None
        if gain is not None:
            if isinstance(gain, (str, os.PathLike)):
                self.gain_path = os.fspath(gain)
                gain = read_gain(gain)
            gain = np.asarray(gain, dtype=np.float32)
            if gain.shape != self.shape:
                name = self.gain_path or self.path
                raise InputError(name, "gain reference is %dx%d (x*y) but the movie %s is %dx%d"
                                 % (gain.shape[1], gain.shape[0], self.path, self.shape[1],
                                    self.shape[0]))
            self.gain = gain

    def frame(self, i):
        """Frame ``i`` (0-based) as float32 (y, x), times the gain if any."""
        if not 0 <= i < self.nframes:
            raise IndexError("%s: frame %d out of range 0..%d" % (self.path, i, self.nframes - 1))
        try:
            if self._tif is not None:
                data = _tiff_page(self._pages[i], self.workers)
            else:
                data = self._mrc.data[i] if self._mrc.data.ndim == 3 else self._mrc.data
        except Exception as exc:
            raise InputError(self.path, "cannot read frame %d (%s)" % (i, exc)) from exc
        frame = np.array(data, dtype=np.float32)
        if self.gain is not None:
            frame *= self.gain
        return frame

    def pieces(self, i):
        """Frame ``i`` (0-based) as the file's samples (no conversion, no gain), in blocks of
        rows: yields (y0, y1, samples, flip), samples (y1 - y0, nx) holding rows y0 .. y1 - 1 of
        the frame in RELION's orientation, in reverse order when ``flip``. Each block must be
        used before the next is asked for (it may be overwritten). A TIFF of plain strips
        (uncompressed or deflate, no predictor) is decoded one strip at a time into a reused
        buffer, each block still in cache when used (:mod:`polishplugin.core.frame_pass`);
        other TIFFs and MRC stacks give one block, the whole frame (an MRC frame is a view of
        the file's memory map)."""
        if not 0 <= i < self.nframes:
            raise IndexError("%s: frame %d out of range 0..%d" % (self.path, i, self.nframes - 1))
        ny = self.shape[0]
        try:
            if self._tif is None:
                yield 0, ny, self._mrc.data[i] if self._mrc.data.ndim == 3 else self._mrc.data, \
                    False
                return
            page = self._pages[i]
            decode = _strip_decoder(page) if self.workers <= 1 else None
            if decode is None:
                yield 0, ny, page.asarray(maxworkers=max(1, int(self.workers))), True
                return
            rps, nx = page.rowsperstrip, self.shape[1]
            if self._strip is None or self._strip.shape != (rps, nx) or \
                    self._strip.dtype != page.dtype:
                self._strip = np.empty((rps, nx), dtype=page.dtype)
            fh = self._tif.filehandle
            for s, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts)):
                a, b = s * rps, min(ny, (s + 1) * rps)
                fh.seek(offset)
                rows = decode(fh.read(count), self._strip[:b - a])
                yield ny - b, ny - a, rows, True
        except Exception as exc:
            raise InputError(self.path, "cannot read frame %d (%s)" % (i, exc)) from exc

    def iter_frames(self, first=0, last=None):
        """Yield frames ``first`` .. ``last - 1`` (half-open range; ``last=None``: to the end)."""
        last = self.nframes if last is None else last
        for i in range(first, last):
            yield self.frame(i)

    def sum(self, first=0, last=None):
        """Sum of frames ``first`` .. ``last - 1`` as float32 (accumulated in float64)."""
        total = np.zeros(self.shape, np.float64)
        for frame in self.iter_frames(first, last):
            total += frame
        return total.astype(np.float32)

    def validate(self, nframes=None, pixel_size=None, rtol=0.01):
        """Check the movie against the acquisition: frame count and pixel size (A, relative
        tolerance ``rtol``); raise :class:`InputError` naming the file and both numbers."""
        if nframes is not None and self.nframes != nframes:
            raise InputError(self.path, "movie has %d frames but %d were expected"
                             % (self.nframes, nframes))
        if pixel_size is not None and self.pixel_size > 0 and \
                abs(self.pixel_size - pixel_size) > rtol * pixel_size:
            raise InputError(self.path, "movie pixel size is %.4f A but %.4f A was expected"
                             % (self.pixel_size, pixel_size))

    def close(self):
        if self._tif is not None:
            self._tif.close()
        if self._mrc is not None:
            self._mrc.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _has_imagecodecs():
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def write_movie_mrc(path, frames, pixel_size):
    """Write a (frame, y, x) movie as an MRC stack, atomically."""
    write_mrc(path, np.asarray(frames), pixel_size, stack=True)


def write_movie_tiff(path, counts, compression="deflate"):
    """Write integer counts (frame, y, x; uint8 or uint16, RELION's orientation) as a multi-page
    TIFF whose rows are stored in the opposite order, so RELION and :class:`Movie` read ``counts``
    back (module docstring), atomically.

    ``compression``: 'deflate' (zlib, built into tifffile), None, or 'lzw' (needs imagecodecs).
    """
    counts = np.asarray(counts)
    if counts.dtype not in (np.uint8, np.uint16):
        raise ValueError("write_movie_tiff: counts must be uint8 or uint16, got %s" % counts.dtype)
    if counts.ndim != 3:
        raise ValueError("write_movie_tiff: expected (frame, y, x), got shape %s" % (counts.shape,))
    if compression not in _TIFF_COMPRESSION:
        raise ValueError("write_movie_tiff: compression must be one of %s"
                         % sorted(k for k in _TIFF_COMPRESSION if k))
    codec = _TIFF_COMPRESSION[compression]
    if codec == "lzw" and not _has_imagecodecs():
        raise ValueError("write_movie_tiff: LZW compression needs the imagecodecs package; "
                         "use 'deflate'")
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp) as tif:
            for frame in counts:
                tif.write(frame[::-1], compression=codec, photometric="minisblack", metadata=None)


def write_gain(path, gain):
    """Write a gain reference (float32 (y, x)) as MRC, or as TIFF (rows stored reversed, as RELION
    reads them) when the name ends in .tif(f)."""
    gain = np.asarray(gain, dtype=np.float32)
    if _is_tiff(path):
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, gain[::-1], photometric="minisblack", metadata=None)
    else:
        write_mrc(path, gain, 1.0)
