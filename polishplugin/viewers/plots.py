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


def _display_range(image, lo=1.0, hi=99.0):
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    return np.percentile(finite, lo), np.percentile(finite, hi)


def binned(image, max_px=1024):
    """Average-bin a large micrograph for display; returns (image, bin factor)."""
    b = max(1, int(np.ceil(max(image.shape) / max_px)))
    if b == 1:
        return image, 1
    ny, nx = (image.shape[0] // b) * b, (image.shape[1] // b) * b
    return image[:ny, :nx].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3)), b


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
