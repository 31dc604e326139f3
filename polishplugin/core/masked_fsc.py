"""Solvent-masked FSC of two half maps corrected for the mask's own correlation by
high-resolution noise substitution (Chen et al. 2013, Ultramicroscopy 135:24-35), as
``relion_postprocess`` computes it (arrays only, no files).

A mask multiplies both halves by the same function: its transform spreads the halves' common
low-resolution signal to every shell, so the masked FSC is inflated where the halves share no
signal (a sharp or tight mask: far above 0 at Nyquist). Chen et al. measure that inflation on
halves whose phases are randomised beyond a shell k0 (so their true correlation there is 0) and
masked the same way, and remove it:

    FSC_true(k) = (FSC_masked(k) - FSC_rand(k)) / (1 - FSC_rand(k))      for k >= k0 + 2,
    FSC_true(k) = FSC_masked(k)                                          below.

k0 is the first shell where the unmasked FSC drops below 0.8 (``randomize_fsc_at``); the two
shells of offset are relion_postprocess's (measured on its output: BENCHMARKS.md, "Masked FSC
against relion_postprocess"). FSCs are summed over the non-redundant half of the transform
(kx >= 0), shell round(|k| n), as RELION's ``getFSC`` does (:func:`polishplugin.core.fourier.fsc`).
"""
from dataclasses import dataclass

import numpy as np

from .fourier import fsc, half_transform_radius

RANDOMIZE_FSC_AT = 0.8      # phases randomised from where the unmasked FSC drops below this
SHELL_OFFSET = 2            # corrected from k0 + 2 on; the masked FSC below (relion_postprocess)


def randomize_phases_beyond(volume, shell, rng):
    """``volume`` with the phases of its transform uniform random from ``shell`` on (|k| n >=
    shell), amplitudes kept (RELION's randomizePhasesBeyond)."""
    n = volume.shape[0]
    f = np.fft.rfftn(volume)
    sel = half_transform_radius(n) >= shell
    f[sel] = np.abs(f[sel]) * np.exp(2j * np.pi * rng.uniform(size=int(sel.sum())))
    return np.fft.irfftn(f, s=volume.shape)


@dataclass
class MaskedFsc:
    """The curves (shells 0 .. n/2) and the randomisation shell k0 of :func:`masked_fsc`."""
    unmasked: np.ndarray
    masked: np.ndarray
    randomised: np.ndarray       # FSC of the masked phase-randomised halves
    corrected: np.ndarray        # FSC_true (module text)
    randomize_shell: int         # k0
    box: int

    def randomise_from(self, pixel_size):
        """k0 as a resolution (A; RELION's rlnRandomiseFrom)."""
        return self.box * pixel_size / self.randomize_shell


def masked_fsc(half1, half2, mask, rng=None, randomize_fsc_at=RANDOMIZE_FSC_AT):
    """Unmasked, masked, masked phase-randomised and corrected FSC (module text: FSC_true of
    Chen et al. 2013) of two cubic half maps and a soft solvent mask (values in [0, 1]).
    ``rng``: a numpy Generator for the random phases (default: seed 0). ValueError on bad
    input, or when the unmasked FSC never drops below ``randomize_fsc_at`` (no shell to
    randomise from)."""
    h1, h2, m = (np.asarray(v, np.float64) for v in (half1, half2, mask))
    if h1.ndim != 3 or len(set(h1.shape)) != 1 or h1.shape[0] < 4:
        raise ValueError("half maps must be cubic 3D volumes, got shape %s" % (h1.shape,))
    if h2.shape != h1.shape or m.shape != h1.shape:
        raise ValueError("half map 2 %s and mask %s must have half map 1's shape %s"
                         % (h2.shape, m.shape, h1.shape))
    if not all(np.all(np.isfinite(v)) for v in (h1, h2, m)):
        raise ValueError("half maps and mask must be finite")
    if m.min() < -1e-3 or m.max() > 1 + 1e-3 or m.max() <= 0:
        raise ValueError("mask values must be within [0, 1] and not all 0 (range %g .. %g)"
                         % (m.min(), m.max()))
    rng = np.random.default_rng(0) if rng is None else rng
    unmasked = fsc(h1, h2)
    masked = fsc(h1 * m, h2 * m)
    below = np.flatnonzero(unmasked[1:] < randomize_fsc_at)
    if not len(below):
        raise ValueError("the unmasked FSC never drops below %g: no shell to randomise the "
                         "phases from" % randomize_fsc_at)
    k0 = int(below[0]) + 1
    randomised = fsc(randomize_phases_beyond(h1, k0, rng) * m,
                                     randomize_phases_beyond(h2, k0, rng) * m)
    corrected = masked.copy()
    far = np.arange(len(masked)) >= k0 + SHELL_OFFSET
    corrected[far] = (masked[far] - randomised[far]) / np.maximum(1.0 - randomised[far], 1e-12)
    return MaskedFsc(unmasked, masked, randomised, corrected, k0, h1.shape[0])
