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
