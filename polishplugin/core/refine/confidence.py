"""Confidence weight lambda of CW-RED (Kimanius et al. 2021, §4.3): lambda = 0 at nominal
resolutions worse than 10 A (fall back on the Gaussian prior), 1 at better than 4.5 A, linear in
between; the nominal resolution is the half-map FSC = 1/7 (0.143) resolution."""
import numpy as np

from ..fourier import resolution_at

LOW_A, HIGH_A = 10.0, 4.5
FSC_THRESHOLD = 0.143


def cw_red_lambda(resolution_A, low_A=LOW_A, high_A=HIGH_A):
    """lambda(resolution): 0 for resolution >= low_A, 1 for <= high_A, linear between."""
    if not 0 < high_A < low_A:
        raise ValueError("CW-RED thresholds need 0 < high (%g A) < low (%g A)" % (high_A, low_A))
    return float(np.clip((low_A - resolution_A) / (low_A - high_A), 0.0, 1.0))


def nominal_resolution(fsc, box, pixel_size, threshold=FSC_THRESHOLD):
    """Resolution (A) where the half-map FSC (one value per shell of the box) first drops below
    ``threshold`` (linear between shells; Nyquist if it never does)."""
    return resolution_at(np.asarray(fsc, dtype=np.float64), box, pixel_size, threshold)


def shell_confidence(fsc, joined=False):
    """Per-shell confidence in the denoiser (``--cw-shells``): the half-map FSC clipped to
    [0, 1]; for a map of both halves joined, the FSC the joined map is reconstructed with
    (:func:`.mstep.joined_fsc`, RELION's), as the refinement's final map uses."""
    from .mstep import joined_fsc
    f = joined_fsc(fsc) if joined else np.asarray(fsc, dtype=np.float64)
    return np.clip(f, 0.0, 1.0)
