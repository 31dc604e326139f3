"""Where a micrograph's CC maps (P, F, W, W) float32 (eq. 15-16, W = 2 radius + 1) are kept
while the MAP fit reads them.

The fit couples all particles of a micrograph (sigma_div), so every map is read at every energy
evaluation; but each read is the 4 x 4 samples of the bicubic interpolation around the current
position, and the positions stay within a few pixels of where the patches were cut (the window
centre): on the 2048^2 x 32-frame project of BENCHMARKS.md every position of every evaluation
was within 3.5 px (given sigmas) or 5.4 px (``--sigmas auto``'s pilot fit) of it, in a window of
radius 16.

:class:`CCStore` keeps the whole maps in memory (``backing=None``: today's array), or, given a
``backing`` that holds the whole maps elsewhere (:class:`polishplugin.programs.scratch.ScratchMaps`:
an unlinked scratch file), only their centres of radius ``core_radius`` (:data:`CORE_RADIUS`:
13 x 13 of 33 x 33, 1/6.4 of the bytes) in memory. A read whose bicubic samples all lie in the
centre (:func:`.micrograph.outside_window` with the core radius is 0 for it) is served from
there: the same samples and the same fraction, so the same value, bit for bit. Any other read is
served from the whole map, fetched from the backing (and cached, up to ``cache_bytes``): the same
value as today's array everywhere, including the wrap at the whole
window's edge that the fit's window check catches. Hence the tracks equal today's, whatever the
core radius (< R / 2); the core radius only sets how often the backing is read.
"""
import numpy as np

#: radius (px) of the map centres kept in memory when the whole maps are kept elsewhere
CORE_RADIUS = 6
#: whole maps fetched from the backing for reads beyond the centres are kept up to this size
CACHE_BYTES = 8 << 20


class MemoryMaps:
    """A backing in memory (for tests): the whole maps (P, F, W, W) as an array."""

    def __init__(self, P, F, W):
        self.array = np.empty((P, F, W, W), dtype=np.float32)

    def write(self, p0, block):
        self.array[p0:p0 + len(block)] = block

    def read(self, p, f):
        return self.array[p, f].copy()

    def close(self):
        self.array = None


class CCStore:
    """CC maps of P particles x F frames in a window of ``radius`` px (see the module doc).
    Filled a block of particles at a time (``store[a:b] = maps``, as
    :func:`.observation.cc_maps_from_spectra` writes its ``out``)."""
    dtype = np.dtype(np.float32)

    def __init__(self, P, F, radius, backing=None, core_radius=None, cache_bytes=CACHE_BYTES):
        self.P, self.F, self.radius = int(P), int(F), int(radius)
        W = 2 * self.radius + 1
        self.shape = (self.P, self.F, W, W)
        self.backing = backing
        # (at most R / 2: see interp)
        self.core_radius = min(CORE_RADIUS if core_radius is None else int(core_radius),
                               self.radius // 2)
        if backing is None or self.core_radius < 3:     # 3: what micrograph.py's sums read
            self.backing, self.core_radius = None, self.radius
        w = 2 * self.core_radius + 1
        #: the maps' centres (P, F, w, w) (the whole maps without a backing)
        self.core = np.empty((self.P, self.F, w, w), dtype=self.dtype)
        self.factors = []               # scales applied to maps read from the backing
        self.finite_sum = 0.0           # float64 sum of every value written (a NaN shows)
        self._cache, self._cache_max = {}, max(0, int(cache_bytes)) // (W * W * 4)
        #: whole maps read from the backing (beyond the centres), a count for diagnostics
        self.backing_reads = 0

    @property
    def ndim(self):
        return 4

    @property
    def memory_bytes(self):
        """Bytes of maps held in this process's memory (centres + cached whole maps)."""
        W = self.shape[-1]
        return self.core.nbytes + len(self._cache) * W * W * self.dtype.itemsize

    def __setitem__(self, s, maps):
        if not isinstance(s, slice):
            raise TypeError("CC maps are stored by slices of particles")
        a, b, _ = s.indices(self.P)
        maps = np.asarray(maps, dtype=self.dtype)
        self.finite_sum += float(np.sum(maps, dtype=np.float64))
        if self.backing is None:
            self.core[a:b] = maps
            return
        c, r = self.radius, self.core_radius
        self.core[a:b] = maps[:, :, c - r:c + r + 1, c - r:c + r + 1]
        self.backing.write(a, maps)

    def centre(self, radius):
        """The maps within ``radius`` (<= the core radius) of the centre, (P, F, w, w) (no copy
        where possible): what the contrast sign and amplitude read (:mod:`.micrograph`)."""
        if radius > self.core_radius:
            raise ValueError("radius %d beyond the %d px kept in memory" % (radius, self.core_radius))
        return self.core

    def scale(self, factor):
        """Maps *= factor (float32, in place: the centres now, the whole maps as they are read)."""
        self.core *= factor
        self.factors.append(factor)
        for v in self._cache.values():
            v *= factor

    def whole(self, p, f):
        """The whole map (W, W) of particle-frame (p, f), scaled."""
        if self.backing is None:
            return self.core[p, f]
        key = p * self.F + f
        m = self._cache.get(key)
        if m is None:
            m = self.backing.read(p, f)
            self.backing_reads += 1
            for factor in self.factors:
                m *= factor
            if len(self._cache) < self._cache_max:
                self._cache[key] = m
        return m

    def __array__(self, dtype=None):
        """All whole maps as one array (modes that search them all: "none", "global")."""
        if self.backing is None:
            out = self.core
        else:
            out = np.empty(self.shape, dtype=self.dtype)
            for p in range(self.P):
                for f in range(self.F):
                    out[p, f] = self.whole(p, f)
        return out if dtype is None else out.astype(dtype)

    def interp(self, backend, positions):
        """``backend.cc_interp`` of the whole maps at positions (P, F, 2) (see module doc)."""
        if self.backing is None:
            return backend.cc_interp(self.core, positions)
        s = np.asarray(positions, dtype=np.float64)
        # the position as the whole map's read sees it: it adds the radius R and splits the sum
        # into sample and fraction; (s + R) - R is exact where the centres serve (|s| < R / 2),
        # and the centres' read adds r to it exactly: the same samples, the same fraction
        R, r = self.radius, self.core_radius
        seen = (s + R) - R
        val, grad = backend.cc_interp(self.core, seen)
        p, f = np.nonzero(((seen < -(r - 1)) | (seen >= r - 1)).any(axis=-1))
        if len(p):
            maps = np.stack([self.whole(i, j) for i, j in zip(p, f)])
            v, g = backend.cc_interp(maps[None], s[p, f][None])
            val[p, f], grad[p, f] = v[0], g[0]
        return val, grad

    def close(self):
        self._cache = {}
        if self.backing is not None:
            self.backing.close()


def cc_interp(backend, cc_maps, positions):
    """Values and gradients of CC maps (an array or a :class:`CCStore`) at positions (P, F, 2):
    the backend's bicubic ``cc_interp``."""
    if isinstance(cc_maps, CCStore):
        return cc_maps.interp(backend, positions)
    return backend.cc_interp(cc_maps, positions)
