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
#: CW-RED thresholds (low_A, high_A) per denoiser, derived from its measured single-pass gain and
#: injected half-map optimism (:func:`derive_thresholds` on ``benchmarks/unet_schedule.py``'s
#: units for the shipped weights, kept as weights/unet_schedule.json; BENCHMARKS.md "CW-RED's
#: schedule over the SNRs refinements live at"); any other denoiser keeps the paper's.
THRESHOLDS = {"unet": (12.0, 8.0)}


def thresholds_for(denoiser):
    """(low_A, high_A) of CW-RED's schedule for the denoiser called ``denoiser``."""
    return THRESHOLDS.get(denoiser, (LOW_A, HIGH_A))


#: resolution bins (edges, A) of the calibration: 1 A from 8 to 12 A, 2 A coarser (at box 64,
#: 2 A/px both about one Fourier shell wide: 8-9 A 1.8 shells, 14-16 A 1.1); 8 A is the finest
#: edge: the 7-8 A bin failed on the L2 gain (the U-Net's update at ~7 A, SNR 0.1, though its FSC
#: gain there is positive), so finer than 8 A is not calibrated (BENCHMARKS.md, "CW-RED's
#: schedule over the SNRs refinements live at")
EDGES_A = tuple(np.r_[np.arange(8.0, 12.0, 1.0), np.arange(12.0, 32.0, 2.0)].tolist())
#: the most half-map optimism (Fourier shells) the denoiser may inject where lambda > 0
OPTIMISM_BOUND = 1.0


def gain_curve(resolutions, values, edges=EDGES_A, min_n=4):
    """Calibration values (one per unit) binned by the units' nominal resolution: one dict per bin
    of ``edges`` holding at least ``min_n`` units, finest first, with high_A / low_A (its fine /
    coarse edge), n, mean, se (standard error of the mean), min, max and positive (values > 0).
    Units outside the edges are left out."""
    res, v = np.asarray(resolutions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if res.shape != v.shape or len(e) < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("one value per resolution and increasing bin edges are needed")
    ok = np.isfinite(res) & np.isfinite(v) & (res >= e[0]) & (res < e[-1])
    idx = np.searchsorted(e, res[ok], side="right") - 1
    out = []
    for b in np.unique(idx):
        x = v[ok][idx == b]
        if len(x) < max(min_n, 1):
            continue
        se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("inf")
        out.append(dict(high_A=float(e[b]), low_A=float(e[b + 1]), n=int(len(x)),
                        mean=float(x.mean()), se=se, min=float(x.min()), max=float(x.max()),
                        positive=int((x > 0).sum())))
    return out


def derive_thresholds(resolutions, gains, optimism, edges=EDGES_A, min_n=4, z=2.0,
                      bound=OPTIMISM_BOUND):
    """CW-RED's (low_A, high_A) by the rule of §4.3 made explicit, from calibration units (one
    iteration of a calibration refinement: its two half maps x~ at one nominal resolution) each
    with a single-pass gain (> 0: the eq. 17 update at lambda 1 is closer to the truth than the
    Tikhonov one) and the half-map optimism the denoiser injects (Fourier shells; > 0: the half
    maps agree beyond what their agreement with the truth supports). Over the bins of
    :func:`gain_curve` (``min_n`` units or more; a sparser bin neither counts nor breaks the run),
    from the finest one coarser:
    - a bin is *safe to use* when its mean gain is reliably positive (mean - z SE > 0) and its mean
      injected optimism reliably within ``bound`` (mean + z SE <= bound); lambda 0 at and worse
      than the coarse edge of the last bin of the unbroken run of such bins;
    - lambda 1 at and better than the coarse edge of the last bin of the run where in addition
      every unit gains and no unit exceeds ``bound``; the fine edge of the finest bin if even that
      one has a unit that does not; the fine edge of low_A's bin if the two coincide.
    ValueError when the finest bin is not safe to use (no resolution to trust the denoiser at)."""
    res = np.asarray(resolutions, dtype=np.float64)
    g, o = np.asarray(gains, dtype=np.float64), np.asarray(optimism, dtype=np.float64)
    if not res.shape == g.shape == o.shape:
        raise ValueError("one gain and one optimism per resolution are needed")
    curve = gain_curve(res, g, edges, min_n)
    if not curve:
        raise ValueError("no resolution bin has %d calibration units" % min_n)
    opt = {c["low_A"]: c for c in gain_curve(res, o, edges, min_n)}

    def safe(c):
        q = opt[c["low_A"]]
        return c["mean"] - z * c["se"] > 0 and q["mean"] + z * q["se"] <= bound

    def sure(c):
        return safe(c) and c["min"] > 0 and opt[c["low_A"]]["max"] <= bound

    def run(good):
        last = None
        for c in curve:
            if not good(c):
                break
            last = c
        return last
    used = run(safe)
    if used is None:
        c, q = curve[0], opt[curve[0]["low_A"]]
        raise ValueError("the denoiser is not safe to use even at %g-%g A (gain %+.3f, SE %.3f; "
                         "optimism %+.2f shells, SE %.2f)" % (c["high_A"], c["low_A"], c["mean"],
                                                              c["se"], q["mean"], q["se"]))
    low = used["low_A"]
    every = run(sure)
    high = every["low_A"] if every is not None else curve[0]["high_A"]
    if high >= low:
        high = used["high_A"]
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


#: where the denoised prior mean is weighted per shell by the half-map FSC (``--cw-shells``):
#: nowhere (the paper's eq. 17), in every update, or in the final joined map only
CW_SHELLS = ("none", "all", "final")


def weights_shells(cw_shells, joined):
    """Whether an update weights the prior mean per shell: ``cw_shells`` one of CW_SHELLS,
    ``joined`` whether it makes the final map of both halves joined."""
    if cw_shells not in CW_SHELLS:
        raise ValueError("cw_shells %r: not one of %s" % (cw_shells, ", ".join(CW_SHELLS)))
    return cw_shells == "all" or (cw_shells == "final" and joined)


def shell_confidence(fsc, joined=False):
    """Per-shell confidence in the denoiser (``--cw-shells``): the half-map FSC clipped to
    [0, 1]; for a map of both halves joined, the FSC the joined map is reconstructed with
    (:func:`.mstep.joined_fsc`, RELION's), as the refinement's final map uses."""
    from .mstep import joined_fsc
    f = joined_fsc(fsc) if joined else np.asarray(fsc, dtype=np.float64)
    return np.clip(f, 0.0, 1.0)
