"""Figures shared by the viewers (inside Scipion) and the programs' logs (headless PNG/PDF).

Every function takes plain arrays and returns a matplotlib Figure; nothing here knows about
Scipion, so the same picture appears in the GUI and in a program's ``logfile.pdf``.
"""
import os

import matplotlib

if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from ..core.binning import binned  # noqa: E402


def _display_range(image, lo=1.0, hi=99.0):
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    return np.percentile(finite, lo), np.percentile(finite, hi)


def tracks_figure(image, tracks, scale=20.0, title="", extra_tracks=None,
                  labels=("tracks", "other"), lowpass_px=4.0, image_pixel=1.0):
    """Particle trajectories drawn over a micrograph, motion magnified ``scale`` times around
    each particle's first position, the start marked by a dot (as Fig. 3 of Zivanov 2019).

    image: (ny, nx) micrograph (e.g. a frame sum); tracks: (P, F, 2) positions (x, y) in px of
    the micrograph; extra_tracks: optional second set (e.g. the truth) drawn dashed;
    image_pixel: size of one image pixel in track pixels (an already binned image)."""
    img, b = binned(np.asarray(image, dtype=np.float64))
    b = b * image_pixel
    if lowpass_px and lowpass_px > b:
        from scipy.ndimage import gaussian_filter
        img = gaussian_filter(img, lowpass_px / b)
    fig, ax = plt.subplots(figsize=(8, 8 * img.shape[0] / img.shape[1] + 0.4))
    lo, hi = _display_range(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="upper",
              extent=(-0.5 * b, img.shape[1] * b - 0.5 * b, img.shape[0] * b - 0.5 * b, -0.5 * b))

    def draw(tr, style, color, label):
        tr = np.asarray(tr, dtype=np.float64)
        first = True
        for p in range(tr.shape[0]):
            start = tr[p, 0]
            path = start + scale * (tr[p] - start)
            ax.plot(path[:, 0], path[:, 1], style, color=color, lw=1.2,
                    label=label if first else None)
            first = False
        ax.plot(tr[:, 0, 0], tr[:, 0, 1], "o", color=color, ms=3)

    if extra_tracks is not None:
        draw(extra_tracks, "--", "tab:orange", labels[1])
    draw(tracks, "-", "tab:cyan", labels[0])
    ax.set_title(title + ("  (motion x%g, dot = first frame)" % scale))
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def global_track_figure(tracks_A, labels, title="Global track"):
    """Per-frame global shifts (A): one or several (F, 2) tracks, e.g. truth vs estimate."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for tr, lab in zip(tracks_A, labels):
        tr = np.asarray(tr)
        axes[0].plot(tr[:, 0], tr[:, 1], ".-", label=lab)
        axes[1].plot(np.linalg.norm(tr - tr[:1], axis=1), ".-", label=lab)
    axes[0].set_xlabel("x (A)")
    axes[0].set_ylabel("y (A)")
    axes[0].set_aspect("equal", adjustable="datalim")
    axes[1].set_xlabel("frame")
    axes[1].set_ylabel("distance from frame 1 (A)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def slices_figure(volume, title="Central slices"):
    """Three central orthogonal slices of a cubic volume."""
    v = np.asarray(volume)
    n = v.shape[0] // 2
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, sl, name in zip(axes, (v[n], v[:, n], v[:, :, n]), ("z", "y", "x")):
        ax.imshow(sl, cmap="gray", origin="lower")
        ax.set_title("%s = %d" % (name, n))
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def fsc_figure(curves, labels, box, pixel_size, title="FSC", thresholds=(0.143, 0.5)):
    """FSC curves against resolution (1/A), with threshold lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, lab in zip(curves, labels):
        c = np.asarray(c)
        s = np.arange(len(c)) / (box * pixel_size)
        ax.plot(s, c, label=lab)
    for t in thresholds:
        ax.axhline(t, color="gray", ls=":", lw=1)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path_base, formats=("png", "pdf"), dpi=110, close=True):
    """Write ``fig`` as path_base.png / .pdf; returns the paths written."""
    os.makedirs(os.path.dirname(os.path.abspath(path_base)), exist_ok=True)
    out = []
    for fmt in formats:
        path = "%s.%s" % (path_base, fmt)
        fig.savefig(path, dpi=dpi)
        out.append(path)
    if close:
        plt.close(fig)
    return out


def save_pdf_log(figures, path):
    """Join several figures into one multi-page PDF (a program's logfile.pdf)."""
    with PdfPages(path) as pdf:
        for fig in figures:
            pdf.savefig(fig)
            plt.close(fig)
    return path


def _frames_by_frequency(ax, image, box, pixel_size, title, cmap="viridis", vmin=None, vmax=None,
                         rings=None):
    """Image (frames x rings) with spatial frequency (1/A) on x; the fitted rings marked."""
    nrings = image.shape[1]
    extent = (-0.5 / (box * pixel_size), (nrings - 0.5) / (box * pixel_size),
              image.shape[0] - 0.5, -0.5)
    im = ax.imshow(image, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, extent=extent,
                   interpolation="nearest")
    if rings is not None:
        for k in rings:
            ax.axvline((k - 0.5) / (box * pixel_size), color="w", ls=":", lw=1)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("frame")
    ax.set_title(title, fontsize=10)
    return im


def fcc_fit_figure(fcc, model, box, pixel_size, rings=None, title="FCC and its fit (eq. 21)"):
    """Zivanov 2019 Fig. 2 a-b: FCC(f, kappa) data, the fitted model D exp(C + B s^2 / 4) and
    their difference (frames x spatial frequency); ``rings`` (k0, k1) marks the fitted range."""
    fcc, model = np.asarray(fcc), np.asarray(model)
    top = float(np.percentile(fcc[:, 1:], 99.5)) if fcc.shape[1] > 1 else float(fcc.max())
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, img, name in ((axes[0], fcc, "FCC data"), (axes[1], model, "model")):
        im = _frames_by_frequency(ax, img, box, pixel_size, name, vmin=0, vmax=top, rings=rings)
    fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8)
    res = fcc - model
    lim = float(np.abs(res[:, 1:]).max()) or 1.0
    im = _frames_by_frequency(axes[2], res, box, pixel_size, "data - model", cmap="RdBu_r",
                              vmin=-lim, vmax=lim, rings=rings)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    fig.suptitle(title)
    return fig


def bfactor_curves_figure(bfactors, scales, title="Per-frame B-factors and scales"):
    """Zivanov 2019 Fig. 2 c: B_f (A^2, amplitude convention, max 0) and C_f against frame."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    frames = np.arange(len(bfactors))
    axes[0].plot(frames, bfactors, "o-")
    axes[0].set_ylabel("B_f (A^2)")
    axes[1].plot(frames, scales, "o-", color="C1")
    axes[1].set_ylabel("C_f = ln scale")
    for ax in axes:
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def frame_weights_figure(weights, box, pixel_size, title="Frame weights (eq. 22)"):
    """Zivanov 2019 Fig. 2 d: weight w_f(s) of every frame (frames x spatial frequency); the
    weights sum to 1 over frames at every frequency."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    im = _frames_by_frequency(ax, np.asarray(weights), box, pixel_size, title, cmap="magma",
                              vmin=0)
    fig.colorbar(im, ax=ax, label="weight")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ motion-parameter training
TRAIN_SIGMA_LABELS = ("sigma_vel (A/dose)", "sigma_div (A)", "sigma_acc (A/dose)")


def tcc_trace_figure(restarts, title="TCC of every evaluation (eq. 19)"):
    """restarts: list of (label, tcc (N,), is_flatness (N,) bool); TCC against evaluation."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, tcc, flat in restarts:
        tcc, flat = np.asarray(tcc), np.asarray(flat, dtype=bool)
        idx = np.arange(len(tcc))
        line, = ax.plot(idx[~flat], tcc[~flat], ".-", lw=1, label=label)
        if flat.any():
            ax.plot(idx[flat], tcc[flat], "x", color=line.get_color())
    ax.set_xlabel("evaluation (x: flatness probes around the optimum)")
    ax.set_ylabel("TCC")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def optimiser_path_figure(restarts, n_fit=3, title="Nelder-Mead path (log sigmas)"):
    """restarts: list of (label, sigmas (N, 3), optimum (3,)); 2-D projections of the path."""
    pairs = [(0, 1), (0, 2), (1, 2)] if n_fit == 3 else [(0, 1)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        for label, s, opt in restarts:
            s = np.asarray(s)
            line, = ax.plot(s[:, i], s[:, j], ".-", lw=0.8, alpha=0.7, label=label)
            ax.plot(s[0, i], s[0, j], "o", mfc="none", color=line.get_color())
            ax.plot(opt[i], opt[j], "*", ms=12, color=line.get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(TRAIN_SIGMA_LABELS[i])
        ax.set_ylabel(TRAIN_SIGMA_LABELS[j])
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title + " (o start, * optimum)")
    fig.tight_layout()
    return fig


def tcc_slices_figure(slices, factors, title="TCC around the optimum"):
    """slices: list of (label, {sigma name: relative drops over factors}); relative TCC change
    (TCC - TCC_opt) / |TCC_opt| when one sigma is scaled by each factor."""
    names = list(slices[0][1]) if slices else []
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.6),
                             squeeze=False)
    f = np.concatenate([[1.0], np.asarray(factors, dtype=np.float64)])
    order = np.argsort(f)
    for ax, name in zip(axes[0], names):
        for label, drops in slices:
            y = np.concatenate([[0.0], -np.asarray(drops[name], dtype=np.float64)])
            ax.plot(f[order], y[order], "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("%s / optimum" % name)
        ax.set_ylabel("relative TCC change")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def restart_optima_figure(optima, geo_mean, spread, n_fit=3, title="Optimum of each restart",
                          widths=None):
    """optima (R, 3): per-restart sigmas; geometric mean and max/min spread per sigma. widths
    (R, 3), optional: each optimum's multiplicative width w (bar from sigma / w to sigma * w;
    None or inf: not constrained by the data, drawn as a hollow marker labelled "flat")."""
    optima = np.asarray(optima, dtype=np.float64)
    fig, axes = plt.subplots(1, n_fit, figsize=(3.4 * n_fit, 3.6), squeeze=False)
    x = np.arange(len(optima))
    for i, ax in enumerate(axes[0]):
        if widths is None:
            ax.plot(x, optima[:, i], "o")
        else:
            w = np.array([np.nan if r[i] is None else r[i] for r in widths], dtype=np.float64)
            ok = np.isfinite(w)
            y = optima[:, i]
            ax.errorbar(x[ok], y[ok], yerr=[y[ok] - y[ok] / w[ok], y[ok] * w[ok] - y[ok]],
                        fmt="o", capsize=4, label="optimum, Laplace width")
            if (~ok).any():
                ax.plot(x[~ok], y[~ok], "o", mfc="none", label="optimum, flat evidence")
                for xi, yi in zip(x[~ok], y[~ok]):
                    ax.annotate("flat", (xi, yi), textcoords="offset points", xytext=(0, 7),
                                ha="center", fontsize=7, color="gray")
        if geo_mean[i] and geo_mean[i] > 0:
            ax.axhline(geo_mean[i], color="k", ls="--", lw=1, label="geometric mean")
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xlim(-0.5, len(optima) - 0.5)
        ax.set_xlabel("restart")
        ax.set_ylabel(TRAIN_SIGMA_LABELS[i])
        sp = spread[i]
        ax.set_title("max/min %s" % ("-" if sp is None or not np.isfinite(sp) else "%.2f" % sp),
                     fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def refine_history_figure(iterations, resolution_A, lambdas, orders=None, accuracy_deg=None,
                          title="Refinement per iteration"):
    """Half-map resolution (A) and the RED weight lambda per iteration; the HEALPix order, when
    given, annotated at each point; with ``accuracy_deg`` (RELION's expected angular accuracy,
    999 where not computed) a third panel of it beside the order's angular step (sampling finer
    than the accuracy only narrows the posteriors onto noise)."""
    panels = 2 if accuracy_deg is None or orders is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    ax_r, ax_l = axes[:2]
    it = np.asarray(iterations)
    ax_r.plot(it, resolution_A, "o-", color="tab:blue")
    if orders is not None:
        for x, y, o in zip(it, resolution_A, orders):
            ax_r.annotate("%d" % o, (x, y), textcoords="offset points", xytext=(0, 6),
                          ha="center", fontsize=7, color="gray")
    ax_r.set_ylabel("half-map resolution (A, FSC 0.143)")
    if orders is not None:
        ax_r.set_title("grey numbers: HEALPix order", fontsize=9)
    ax_r.invert_yaxis()
    ax_l.plot(it, lambdas, "s-", color="tab:red")
    ax_l.set_ylim(-0.05, 1.05)
    ax_l.set_ylabel("lambda (weight of the denoiser, eq. 17)")
    if panels == 3:
        acc = np.asarray(accuracy_deg, float)
        known = acc < 999.0
        axes[2].plot(it, 60.0 / 2.0 ** np.asarray(orders, float), "o-", color="gray",
                     label="HEALPix step of the order")
        axes[2].plot(it[known], acc[known], "^-", color="tab:green",
                     label="expected angular accuracy (RELION's estimate)")
        axes[2].set_ylim(bottom=0)
        axes[2].set_ylabel("degrees")
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_xticks(it)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def slices_grid_figure(volumes, labels, title="Central slices"):
    """One row per volume: its three central orthogonal slices, each row scaled on its own."""
    fig, axes = plt.subplots(len(volumes), 3, figsize=(8, 2.7 * len(volumes)), squeeze=False)
    for row, (v, lab) in zip(axes, zip(volumes, labels)):
        v = np.asarray(v)
        c = v.shape[0] // 2
        lo, hi = _display_range(v, 0.5, 99.5)
        for ax, sl, name in zip(row, (v[c], v[:, c], v[:, :, c]), ("z", "y", "x")):
            ax.imshow(sl, cmap="gray", origin="lower", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("%s (%s = %d)" % (lab, name, c) if name == "z" else "%s = %d" % (name, c),
                         fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def angular_error_figure(errors_deg, title="Angular error"):
    """Histogram of per-particle orientation errors (degrees) with the median marked."""
    err = np.asarray(errors_deg, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.hist(err, bins=np.linspace(0.0, 180.0, 61), color="tab:blue")
    med = float(np.median(err))
    ax.axvline(med, color="tab:red", ls="--", label="median %.1f deg" % med)
    ax.set_xlabel("angle between refined and true orientation (deg)")
    ax.set_ylabel("particles")
    ax.set_title("%s (%d particles; %.0f%% within 10 deg)"
                 % (title, len(err), 100.0 * np.mean(err <= 10.0)))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
