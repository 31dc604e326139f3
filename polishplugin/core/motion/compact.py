"""Block floating point: arrays kept as small integers with one scale and offset per block.

Motion-parameter training holds, for every particle and frame of its subset, the alignment CC
map and the evaluation-ring products (:mod:`.train_data`, :mod:`.tcc`); stored as 8- or 16-bit
integers they take 1/4 or 1/2 of float32. Each block (the trailing ``block_ndim`` axes) is
mapped affinely onto the integer range, x ~ offset + scale * q, rounding to nearest, so every
value is within scale/2 of the original: (max - min) / 510 of its block for 8 bits and
(max - min) / 131070 for 16.
"""
from dataclasses import dataclass

import numpy as np

_DTYPES = {8: np.int8, 16: np.int16}


@dataclass
class Blocks:
    """q: integers (..., *block); scale, offset: float32 of shape q.shape[:-block_ndim]."""
    q: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    @property
    def nbytes(self):
        return self.q.nbytes + self.scale.nbytes + self.offset.nbytes

    def values(self, start=0, stop=None):
        """float32 of blocks start:stop along the first axis."""
        q = self.q[start:stop]
        expand = (slice(None),) * self.scale.ndim + (None,) * (q.ndim - self.scale.ndim)
        return (q.astype(np.float32) * self.scale[start:stop][expand]
                + self.offset[start:stop][expand])


def block_bytes(block_size, bits):
    """Bytes of one block of ``block_size`` values (integers + float32 scale and offset)."""
    return block_size * bits // 8 + 8


def quantise(x, bits, block_ndim):
    """:class:`Blocks` of real x, one block per index of its leading ndim - block_ndim axes."""
    dtype = _DTYPES.get(bits)
    if dtype is None:
        raise ValueError("bits must be 8 or 16, got %r" % (bits,))
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(x.ndim - block_ndim, x.ndim))
    top = np.iinfo(dtype).max
    hi, lo = x.max(axis=axes), x.min(axis=axes)
    offset = (0.5 * (hi + lo)).astype(np.float32)
    scale = np.where(hi > lo, (hi - lo) / (2 * top), 1.0).astype(np.float32)
    expand = (Ellipsis,) + (None,) * block_ndim
    q = np.rint((x - offset[expand]) / scale[expand].astype(np.float64))
    return Blocks(np.clip(q, -top, top).astype(dtype), scale, offset)


def concatenate(parts):
    """Blocks of several along the first axis."""
    return Blocks(np.concatenate([b.q for b in parts]),
                  np.concatenate([b.scale for b in parts]),
                  np.concatenate([b.offset for b in parts]))
