"""Confidence weight lambda of CW-RED (Kimanius et al. 2021, §4.3): lambda = 0 at nominal
resolutions worse than a low threshold (fall back on the Gaussian prior), 1 at better than a high
one, linear in between; the nominal resolution is the half-map FSC = 1/7 (0.143) resolution.
The paper read its thresholds (10 and 4.5 A) off its own network's single-pass performance
(Fig. 1c); :func:`derive_thresholds` does the same by a stated rule from a measured gain curve,
and :data:`THRESHOLDS` holds the result per denoiser (``benchmarks/unet_schedule.py``)."""
import numpy as np

from ..fourier import resolution_at

#: the paper's thresholds (A): lambda 0 at and worse than LOW_A, 1 at and better than HIGH_A
LOW_A, HIGH_A = 10.0, 4.5
FSC_THRESHOLD = 0.143
#: CW-RED thresholds (low_A, high_A) per denoiser, derived from its measured single-pass gain
#: (:func:`derive_thresholds` on ``benchmarks/unet_schedule.py``'s curve for the shipped weights,
#: kept as weights/unet_schedule.json; BENCHMARKS.md "CW-RED's schedule from the U-Net's own
#: single-pass gain"); any other denoiser keeps the paper's.
THRESHOLDS = {"unet": (10.0, 7.0)}


def thresholds_for(denoiser):
    """(low_A, high_A) of CW-RED's schedule for the denoiser called ``denoiser``."""
    return THRESHOLDS.get(denoiser, (LOW_A, HIGH_A))


def gain_curve(resolutions, gains, bin_A=1.0, min_maps=4):
    """Single-pass gains binned by their input maps' nominal resolution: one dict per bin of
    ``bin_A`` (edges at multiples of it) holding at least ``min_maps`` maps, finest first, with
    high_A / low_A (its fine / coarse edge), n, mean, se (standard error of the mean), min and
    positive (maps with gain > 0)."""
    res, g = np.asarray(resolutions, dtype=np.float64), np.asarray(gains, dtype=np.float64)
    if res.shape != g.shape or bin_A <= 0:
        raise ValueError("one gain per resolution and a positive bin width are needed")
    ok = np.isfinite(res) & np.isfinite(g)
    idx = np.floor(res[ok] / bin_A).astype(int)
    out = []
    for b in np.unique(idx):
        v = g[ok][idx == b]
        if len(v) < max(min_maps, 1):
            continue
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("inf")
        out.append(dict(high_A=b * bin_A, low_A=(b + 1) * bin_A, n=int(len(v)),
                        mean=float(v.mean()), se=se, min=float(v.min()),
                        positive=int((v > 0).sum())))
    return out


def derive_thresholds(resolutions, gains, bin_A=1.0, min_maps=4, z=2.0):
    """CW-RED's (low_A, high_A) from single-pass gains (one per calibration map, > 0: the
    denoiser's update beats the Gaussian prior's) at the maps' nominal resolutions, by the rule
    of §4.3 made explicit. Over the bins of :func:`gain_curve` (those with ``min_maps`` maps;
    a bin with fewer neither counts nor breaks the run), from the finest one coarser:
    - lambda 0 at and worse than the coarse edge of the last bin whose mean gain is reliably
      positive (mean - z SE > 0) with every finer bin reliably positive too;
    - lambda 1 at and better than the coarse edge of the last bin where in addition every map
      gains (min > 0), again with every finer bin so; the fine edge of the finest bin if even that
      one has a map that loses; one bin finer than low_A if the two coincide.
    ValueError when the finest bin is not reliably positive (no resolution to trust the
    denoiser at)."""
    curve = gain_curve(resolutions, gains, bin_A, min_maps)
    if not curve:
        raise ValueError("no resolution bin has %d calibration maps" % min_maps)

    def run(good):
        last = None
        for c in curve:
            if not good(c):
                break
            last = c
        return last
    reliable = run(lambda c: c["mean"] - z * c["se"] > 0)
    if reliable is None:
        c = curve[0]
        raise ValueError("the gain is not reliably positive even at %g-%g A (mean %+.3f, SE %.3f)"
                         % (c["high_A"], c["low_A"], c["mean"], c["se"]))
    low = reliable["low_A"]
    every = run(lambda c: c["mean"] - z * c["se"] > 0 and c["min"] > 0)
    high = every["low_A"] if every is not None else curve[0]["high_A"]
    if high >= low:
        high = low - bin_A
    return float(low), float(high)


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
