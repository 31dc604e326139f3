"""Figures of a job's output folder: read its files, draw with :mod:`.plots`, save PNG/PDF.

Shared by the programs (their logfile.pdf), the Scipion viewers and the demo, so a person sees
the same pictures everywhere.
"""
import json
import os

import numpy as np

from ..core import fourier
from ..io.mrc import read_mrc
from . import plots


def simulation_info(sim_dir):
    """truth/truth.json of a simulated data set (config, sigmas, micrograph names)."""
    with open(os.path.join(sim_dir, "truth", "truth.json")) as fh:
        return json.load(fh)


def _truth(sim_dir, name):
    with np.load(os.path.join(sim_dir, "truth", name + ".npz")) as z:
        return {k: z[k] for k in z.files}


def simulated_tracks_figure(sim_dir, name, scale=20.0):
    """True tracks over the motion-corrected sum (positions minus the earlier global alignment),
    motion magnified ``scale`` times."""
    t = _truth(sim_dir, name)
    image, _ = read_mrc(os.path.join(sim_dir, "MotionCorr", "Movies", name + ".mrc"))
    tracks = t["positions"] - t["global_track"][None]
    return plots.tracks_figure(image, tracks, scale=scale, labels=("true tracks", ""),
                               title="%s: true particle tracks" % name)


def simulated_global_figure(sim_dir, name):
    """Stage drift, the earlier (noisy) global estimate and the mean true particle motion (A)."""
    t = _truth(sim_dir, name)
    px = float(simulation_info(sim_dir)["config"]["pixel_size"])
    mean_motion = (t["positions"] - t["positions"][:, :1]).mean(axis=0)
    return plots.global_track_figure(
        [t["global_track_true"] * px, t["global_track"] * px, mean_motion * px],
        ["stage drift (truth)", "earlier global estimate", "mean particle motion (truth)"],
        title="%s: whole-frame motion" % name)


def simulated_volume_figures(sim_dir):
    """Central slices of the truth and of half map 1, and the half-map FSC curves."""
    truth, px = read_mrc(os.path.join(sim_dir, "truth", "volume.mrc"))
    h1, _ = read_mrc(os.path.join(sim_dir, "half1_unfil.mrc"))
    h2, _ = read_mrc(os.path.join(sim_dir, "half2_unfil.mrc"))
    return [("truth_slices", plots.slices_figure(truth, "True volume: central slices")),
            ("half1_slices", plots.slices_figure(h1, "Half map 1: central slices")),
            ("half_map_fsc", plots.fsc_figure(
                [fourier.fsc(h1, h2), fourier.fsc(h1, truth)], ["half1 vs half2", "half1 vs truth"],
                truth.shape[0], px, title="Simulated half maps (unmasked)"))]


def simulation_figures(sim_dir, fig_dir, micrographs=1):
    """Save the figures of a simulated data set as PNG + PDF in ``fig_dir`` and join them into
    ``<sim_dir>/logfile.pdf``; returns the paths written."""
    names = simulation_info(sim_dir)["micrographs"][:micrographs]
    figs = []
    for name in names:
        figs.append(("%s_tracks" % name, simulated_tracks_figure(sim_dir, name)))
        figs.append(("%s_global" % name, simulated_global_figure(sim_dir, name)))
    figs += simulated_volume_figures(sim_dir)
    written = []
    for base, fig in figs:
        written += plots.save_figure(fig, os.path.join(fig_dir, base), close=False)
    plots.save_pdf_log([fig for _, fig in figs], os.path.join(sim_dir, "logfile.pdf"))
    return written


# ------------------------------------------------------------------------ polishing
def polished_micrographs(polish_dir):
    """Micrograph names with finished tracks, in processing order (from diag/*.json)."""
    out = []
    for root, _, files in os.walk(os.path.join(polish_dir, "diag")):
        for f in sorted(files):
            if f.endswith(".json"):
                with open(os.path.join(root, f)) as fh:
                    out.append(json.load(fh)["micrograph"])
    return sorted(out)


def polish_tracks_figure(polish_dir, name, scale=20.0):
    """MAP tracks (and the initial ones, dashed) over the micrograph's frame sum, motion
    magnified ``scale`` times (as Fig. 3 of Zivanov 2019)."""
    from ..io.star import read_tracks_star
    from ..programs.polish import output_paths
    paths = output_paths(polish_dir, name)
    with open(paths["diag"]) as fh:
        diag = json.load(fh)
    px = float(diag["pixel_size"])
    centres = np.asarray(diag["centres"])
    image, sum_px = read_mrc(paths["sum"])
    tracks = read_tracks_star(paths["tracks"]) / px
    initial = np.asarray(diag["initial_tracks_A"]) / px
    return plots.tracks_figure(image, centres[:, None] + tracks, scale=scale,
                               extra_tracks=centres[:, None] + initial,
                               labels=("MAP tracks", "initial"), image_pixel=sum_px / px,
                               title="%s: %d particles" % (os.path.basename(name), len(centres)))


def polish_figures(polish_dir, fig_dir, micrographs=3):
    """Tracks figures of the first polished micrographs as PNG + PDF, joined into
    ``<polish_dir>/logfile.pdf``; returns the paths written."""
    figs = [("polished_%s_tracks" % os.path.splitext(os.path.basename(n))[0],
             polish_tracks_figure(polish_dir, n))
            for n in polished_micrographs(polish_dir)[:micrographs]]
    written = []
    for base, fig in figs:
        written += plots.save_figure(fig, os.path.join(fig_dir, base), close=False)
    if figs:
        plots.save_pdf_log([fig for _, fig in figs], os.path.join(polish_dir, "logfile.pdf"))
    return written


def polish_vs_truth(polish_dir, sim_dir):
    """Compare the tracks of a polishing run on simulated data with the truth: RMS error (A) over
    all particles and frames of the MAP tracks and of the initial tracks, in full and after
    removing each particle's mean offset ("shape"). Returns a dict of the four numbers."""
    from ..io.star import read_tracks_star
    from ..programs.polish import output_paths
    px = float(simulation_info(sim_dir)["config"]["pixel_size"])
    err = {"map": [], "initial": []}
    for name in polished_micrographs(polish_dir):
        paths = output_paths(polish_dir, name)
        with open(paths["diag"]) as fh:
            diag = json.load(fh)
        t = _truth(sim_dir, os.path.splitext(os.path.basename(name))[0])
        first = diag["first_frame"] - 1
        true = (t["positions"] - t["centres"][:, None])[:, first:first + diag["frames"]] * px
        rows = np.asarray(diag["rows"]) - min(diag["rows"])
        true = true[rows]
        err["map"].append(read_tracks_star(paths["tracks"]) - true)
        err["initial"].append(np.asarray(diag["initial_tracks_A"]) - true)
    out = {}
    for key, e in err.items():
        e = np.concatenate(e)
        out[key + "_rms_A"] = float(np.sqrt(np.mean(np.sum(e ** 2, axis=-1))))
        shape = e - e.mean(axis=1, keepdims=True)
        out[key + "_shape_rms_A"] = float(np.sqrt(np.mean(np.sum(shape ** 2, axis=-1))))
    return out
