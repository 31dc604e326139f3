"""Where a micrograph's patch spectra (P, F, m, m//2+1) complex64 are kept between the one read
of its movie and their uses (noise power, CC maps, FCC sums), and how they are handed out: in
blocks of particles (:meth:`SpectraStore.chunks`).

:class:`SpectraStore` keeps them in memory (one block: every particle). A subclass may keep them
elsewhere (:class:`polishplugin.programs.scratch.ScratchSpectra`: an unlinked scratch file, read
back a block of particles at a time), so that the memory they take is one block, whatever the
number of particles. Everything that reads the spectra sums or maps over particles, so the blocks
give the same numbers as the whole array (sums in the same particle order).
"""
import numpy as np


class SpectraStore:
    """The spectra of P particles x F frames on an m x m grid cut from n x n patches, in memory.

    ``buffer``: a C-contiguous complex64 array of at least P F m (m//2+1) elements to hold them
    (reused from micrograph to micrograph: no page faults of a fresh allocation); else a new one.
    """
    dtype = np.dtype(np.complex64)

    def __init__(self, P, F, m, n=None, buffer=None):
        self.P, self.F, self.m = int(P), int(F), int(m)
        self.n = self.m if n is None else int(n)
        self.mh = self.m // 2 + 1
        self.shape = (self.P, self.F, self.m, self.mh)
        from .observation import crop_rows
        self._rows = crop_rows(self.n, self.m)
        self._lo = self.m // 2 if self.m < self.n else self.n
        self.array = self._allocate(buffer)
        #: (F, m, mh) float64 sums over particles of |X|^2, when the writer kept them (see
        #: :func:`.patches.extract_spectra`); kept up to date by :meth:`add`
        self.power_sums = None

    def _allocate(self, buffer):
        size = int(np.prod(self.shape))
        if buffer is not None and buffer.dtype == self.dtype and buffer.flags.c_contiguous \
                and buffer.size >= size:
            return buffer.reshape(-1)[:size].reshape(self.shape)
        return np.empty(self.shape, dtype=self.dtype)

    @property
    def particle_bytes(self):
        """Bytes of one particle's spectra (all frames)."""
        return self.F * self.m * self.mh * self.dtype.itemsize

    def put(self, p0, f, spec):
        """Store frame f of particles p0.. from ``spec`` (b, n or m rows, >= mh columns): the
        rfft of the patches after the x transform was cut to mh columns, rows on the n grid
        (cut to the m grid here) or already on the m grid. Safe from several threads for
        different particles. Returns the stored (b, m, mh) block (valid until the next put)."""
        b = spec.shape[0]
        out = self.array[p0:p0 + b, f]
        self._crop_into(out, spec)
        return out

    def _crop_into(self, out, spec):
        if spec.shape[1] == self.m:
            out[...] = spec[:, :, :self.mh]
        else:
            out[:, :self._lo] = spec[:, :self._lo, :self.mh]
            out[:, self._lo:] = spec[:, self._rows[self._lo:], :self.mh]

    def chunks(self):
        """(particle slice, spectra (b, F, m, mh)) blocks covering all particles in order; a
        block is valid until the next one is asked for."""
        yield slice(0, self.P), self.array

    def add(self, p, f, delta):
        """spectra[p, f] += delta ((m, mh)), and :attr:`power_sums` with it."""
        x = self._get(p, f)
        if self.power_sums is not None:
            self.power_sums[f] -= plane_power(x)
        x += delta
        if self.power_sums is not None:
            self.power_sums[f] += plane_power(x)
        self._set(p, f, x)

    def _get(self, p, f):
        return self.array[p, f]

    def _set(self, p, f, x):
        """(in place in memory: nothing to do)"""

    def close(self):
        """Release what the store holds outside this process's arrays (nothing here)."""


def plane_power(x):
    """|x|^2 of complex64 planes in single precision, summed over any leading axes in float64
    (the numpy backend's ``power_sums`` term for term)."""
    p = x.real ** 2 + x.imag ** 2
    return p if p.ndim == 2 else p.sum(axis=tuple(range(p.ndim - 2)), dtype=np.float64)


def spectra_chunks(spectra):
    """(particle slice, block) pairs of a :class:`SpectraStore` or of a plain array (one block)."""
    if hasattr(spectra, "chunks"):
        return spectra.chunks()
    return [(slice(0, spectra.shape[0]), spectra)]
