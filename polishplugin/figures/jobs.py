"""Figures of a job's output folder: read its files, draw with :mod:`.plots`, save PNG/PDF.

Shared by the programs (their logfile.pdf), the Scipion viewers and the demo, so a person sees
the same pictures everywhere.
"""
import json
import os

import numpy as np

from ..core import fourier
from ..io.mrc import read_mrc
from ..programs.simulate import project_files
from . import plots



def _save_all(figs, fig_dir, job_dir):
    """Each (base name, figure) of ``figs`` as PNG + PDF under ``fig_dir``, all of them joined
    into ``<job_dir>/logfile.pdf`` (none without figures); returns the paths written."""
    written = []
    for base, fig in figs:
        written += plots.save_figure(fig, os.path.join(fig_dir, base), close=False)
    if figs:
        plots.save_pdf_log([fig for _, fig in figs], os.path.join(job_dir, "logfile.pdf"))
    return written

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
    image, _ = read_mrc(os.path.join(project_files(sim_dir)["mic_dir"], name + ".mrc"))
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
    h1, _ = read_mrc(project_files(sim_dir)["half1"])
    h2, _ = read_mrc(project_files(sim_dir)["half2"])
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
    return _save_all(figs, fig_dir, sim_dir)


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
    return _save_all(figs, fig_dir, polish_dir)


def _true_tracks_for(polish_dir, sim_dir, name):
    """(estimated tracks, initial tracks, true tracks) in A of one polished simulated micrograph,
    particles matched by their refined centres, frames by the run's frame range."""
    from ..io.star import read_tracks_star
    from ..programs.polish import output_paths
    px = float(simulation_info(sim_dir)["config"]["pixel_size"])
    paths = output_paths(polish_dir, name)
    with open(paths["diag"]) as fh:
        diag = json.load(fh)
    t = _truth(sim_dir, os.path.splitext(os.path.basename(name))[0])
    centres = np.asarray(diag["centres"])
    match = np.argmin(np.linalg.norm(centres[:, None] - t["centres"][None], axis=-1), axis=1)
    first = diag["first_frame"] - 1
    true = (t["positions"] - t["centres"][:, None])[match, first:first + diag["frames"]] * px
    return read_tracks_star(paths["tracks"]), np.asarray(diag["initial_tracks_A"]), true, diag


def polish_vs_truth(polish_dir, sim_dir):
    """RMS error (A) over all particles and frames of the polished tracks and of the initial
    tracks against the truth of a simulated data set, in full and after removing each particle's
    mean offset ("shape"): dict with map_rms_A, map_shape_rms_A, initial_rms_A, ..."""
    err = {"map": [], "initial": []}
    for name in polished_micrographs(polish_dir):
        est, init, true, _ = _true_tracks_for(polish_dir, sim_dir, name)
        err["map"].append(est - true)
        err["initial"].append(init - true)
    out = {}
    for key, e in err.items():
        e = np.concatenate(e)
        out[key + "_rms_A"] = float(np.sqrt(np.mean(np.sum(e ** 2, axis=-1))))
        shape = e - e.mean(axis=1, keepdims=True)
        out[key + "_shape_rms_A"] = float(np.sqrt(np.mean(np.sum(shape ** 2, axis=-1))))
    return out


def polish_truth_figure(polish_dir, sim_dir, name, scale=20.0):
    """Polished tracks (solid) against the true ones (dashed) over the micrograph's frame sum."""
    from ..programs.polish import output_paths
    est, _, true, diag = _true_tracks_for(polish_dir, sim_dir, name)
    px = float(diag["pixel_size"])
    centres = np.asarray(diag["centres"])[:, None]
    image, sum_px = read_mrc(output_paths(polish_dir, name)["sum"])
    return plots.tracks_figure(image, centres + est / px, scale=scale,
                               extra_tracks=centres + true / px,
                               labels=("polished", "truth"), image_pixel=sum_px / px,
                               title="%s: polished vs true tracks" % os.path.basename(name))


def bfactor_figure_list(bfac_dir):
    """[(name, figure)] of a B-factor job folder (bfactors.json, fcc.mrc, fcc_model.mrc,
    weights.mrc): Zivanov 2019 Fig. 2 a-b (FCC, fit, residual), c (B_f, C_f), d (weights), and
    the FSC of reconstruct/ when present."""
    with open(os.path.join(bfac_dir, "bfactors.json")) as fh:
        info = json.load(fh)
    box, px = info["box"], info["pixel_size"]
    figs = []
    fcc_path = os.path.join(bfac_dir, "fcc.mrc")
    if os.path.exists(fcc_path):
        fcc = np.atleast_2d(read_mrc(fcc_path)[0])
        model = np.atleast_2d(read_mrc(os.path.join(bfac_dir, "fcc_model.mrc"))[0])
        figs.append(("fcc_fit", plots.fcc_fit_figure(fcc, model, box, px, info["rings"])))
    figs.append(("bfactors", plots.bfactor_curves_figure(info["bfactors_A2"], info["scales"])))
    w_path = os.path.join(bfac_dir, "weights.mrc")
    if os.path.exists(w_path):
        figs.append(("weights", plots.frame_weights_figure(np.atleast_2d(read_mrc(w_path)[0]),
                                                           box, px)))
    fsc = reconstruct_fsc_figure(os.path.join(bfac_dir, "reconstruct"))
    if fsc is not None:
        figs.append(("fsc", fsc))
    return figs


def bfactor_figures(bfac_dir, fig_dir):
    """PNG + PDF of :func:`bfactor_figure_list` and ``<bfac_dir>/logfile.pdf``; paths written."""
    figs = bfactor_figure_list(bfac_dir)
    return _save_all(figs, fig_dir, bfac_dir)


def reconstruct_fsc_figure(recon_dir):
    """FSC curves (half maps; vs truth when known) of a reconstruct program folder, or None."""
    from ..io.star import read_star
    path = os.path.join(recon_dir, "fsc.star")
    if not os.path.exists(path):
        return None
    blocks = read_star(path)
    t, g = blocks["fsc"], blocks["general"]
    box, px = int(g["rlnImageSize"][0]), float(g["rlnImagePixelSize"][0])
    curves, labels = [t["rlnFourierShellCorrelation"]], [
        "half maps (0.143: %.2f A)" % float(g["rlnFinalResolution"][0])]
    if "rlnFscAgainstTruth" in t:
        ct = np.asarray(t["rlnFscAgainstTruth"])
        curves.append(ct)
        labels.append("vs truth (0.5: %.2f A)" % fourier.resolution_at(ct, box, px, 0.5))
    return plots.fsc_figure(curves, labels, box, px, title="FSC of %s" % os.path.basename(
        os.path.normpath(recon_dir)))


# ------------------------------------------------------------------ motion-parameter training
def train_result(train_dir):
    """(train.json as a dict, trace.star rows as a StarTable or None) of a training run; only
    --method tcc writes a trace."""
    from ..io.star import read_star
    with open(os.path.join(train_dir, "train.json")) as fh:
        report = json.load(fh)
    trace = os.path.join(train_dir, "trace.star")
    return report, (read_star(trace)["evaluations"] if os.path.exists(trace) else None)


def train_method(train_dir):
    """The method of a training run (runs from before the evidence method are tcc)."""
    return train_result(train_dir)[0].get("method", "tcc")


def _train_restarts(train_dir):
    report, trace = train_result(train_dir)
    if trace is None:
        raise ValueError("%s: no trace.star (a --method %s run has no TCC figures)"
                         % (train_dir, report.get("method")))
    restart = np.asarray(trace["rlnPolishTrainRestart"])
    sig = np.stack([trace["rlnPolishTrainSigmaVel"], trace["rlnPolishTrainSigmaDiv"],
                    trace["rlnPolishTrainSigmaAcc"]], axis=1).astype(np.float64)
    flat = np.asarray(trace["rlnPolishTrainKind"]).astype(str) == "flatness"
    tcc = np.asarray(trace["rlnPolishTrainTcc"], dtype=np.float64)
    out = []
    for r, info in enumerate(report["restarts"]):
        sel = restart == r
        out.append(dict(label="restart %d (%d particles)" % (r, info["particles"]),
                        sigmas=sig[sel], flat=flat[sel], tcc=tcc[sel], info=info))
    return report, out


def train_tcc_figure(train_dir):
    _, rs = _train_restarts(train_dir)
    return plots.tcc_trace_figure([(r["label"], r["tcc"], r["flat"]) for r in rs])


def train_path_figure(train_dir):
    report, rs = _train_restarts(train_dir)
    return plots.optimiser_path_figure([(r["label"], r["sigmas"][~r["flat"]], r["info"]["sigmas"])
                                        for r in rs], 3 if report["fit_acc"] else 2)


def train_slices_figure(train_dir):
    report, rs = _train_restarts(train_dir)
    return plots.tcc_slices_figure([(r["label"], r["info"]["flatness"]) for r in rs],
                                   report["flatness_factors"])


def train_optima_figure(train_dir):
    """Per-restart optima, their geometric mean (written) and max/min spread; for --method
    evidence also each optimum's Laplace width."""
    report = train_result(train_dir)[0]
    n_fit = 3 if report["fit_acc"] else 2
    spread = [np.nan if v is None else v for v in report["spread"]]
    evidence = report.get("method") == "evidence"
    return plots.restart_optima_figure(
        [r["sigmas"] for r in report["restarts"]], report["sigmas"], spread, n_fit,
        title="%s of each restart; written: %s"
        % ("Marginal-likelihood optimum" if evidence else "TCC optimum",
           " ".join("%.4g" % v for v in report["sigmas"])),
        widths=[r["evidence_spread"] for r in report["restarts"]] if evidence else None)


#: figures of a training run by method: (file base name, function of the run's folder)
TRAIN_FIGURES = {"tcc": (("train_tcc", train_tcc_figure), ("train_path", train_path_figure),
                         ("train_slices", train_slices_figure),
                         ("train_optima", train_optima_figure)),
                 "evidence": (("train_optima", train_optima_figure),)}


def train_figures(train_dir, fig_dir):
    """The training figures of the run's method as PNG + PDF, joined into
    ``<train_dir>/logfile.pdf``."""
    figs = [(base, f(train_dir)) for base, f in TRAIN_FIGURES[train_method(train_dir)]]
    return _save_all(figs, fig_dir, train_dir)


# ------------------------------------------------------------------ denoiser-regularised refinement
def refine_result(refine_dir):
    """(refine.json as a dict, iterations.star rows as a StarTable) of a refine program folder."""
    from ..io.star import read_star
    with open(os.path.join(refine_dir, "refine.json")) as fh:
        summary = json.load(fh)
    return summary, read_star(os.path.join(refine_dir, "iterations.star"))["iterations"]


def refine_fsc_figure(refine_dir, truth=None):
    """Gold-standard FSC of the last iteration's half maps; with a mask also their masked FSC,
    that of the phase-randomised masked halves and the corrected one (Chen et al. 2013); with
    ``truth`` (a map) also the final map and half map 1 against it."""
    from ..io.star import read_star
    blocks = read_star(os.path.join(refine_dir, "fsc.star"))
    t, g = blocks["fsc"], blocks["general"]
    box, px = int(g["rlnImageSize"][0]), float(g["rlnImagePixelSize"][0])
    curves = [np.asarray(t["rlnFourierShellCorrelation"], float)]
    labels = ["half maps (0.143: %.2f A)" % float(g["rlnFinalResolution"][0])]
    if "rlnFourierShellCorrelationCorrected" in t:
        for label, name in (
                ("rlnFourierShellCorrelationCorrected", "masked, corrected (0.143: %.2f A)"
                 % float(g["rlnPpCorrectedResolution"][0])),
                ("rlnFourierShellCorrelationMaskedMaps", "masked"),
                ("rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps",
                 "masked, phases random beyond %.1f A" % float(g["rlnRandomiseFrom"][0]))):
            curves.append(np.asarray(t[label], float))
            labels.append(name)
    if truth is not None:
        final, _ = read_mrc(os.path.join(refine_dir, "map.mrc"))
        half1, _ = read_mrc(os.path.join(refine_dir, "half1.mrc"))
        for vol, name in ((final, "final map"), (half1, "half map 1")):
            c = fourier.fsc(vol, truth)
            curves.append(c)
            labels.append("%s vs truth (0.5: %.2f A)" % (name, fourier.resolution_at(c, box, px,
                                                                                      0.5)))
    return plots.fsc_figure(curves, labels, box, px, title="FSC after iteration %d"
                            % int(g["rlnCurrentIteration"][0]))


def refine_history_figure(refine_dir):
    summary, its = refine_result(refine_dir)
    mode = summary["settings"].get("mode", "")
    return plots.refine_history_figure(
        its["rlnCurrentIteration"], np.asarray(its["rlnCurrentResolution"], float),
        np.asarray(its["rlnPpLambda"], float), its["rlnHealpixOrder"],
        accuracy_deg=its["rlnAccuracyRotations"] if "rlnAccuracyRotations" in its else None,
        title="Refinement (%s)%s" % (mode, ", converged" if summary["converged"] else ""))


def refine_slices_figure(refine_dir, start=None):
    """Central slices of the starting map as refinement starts from it (low-passed at the run's
    initial resolution), half map 1 and the final map."""
    from ..core.simulate.volumes import lowpass
    summary, _ = refine_result(refine_dir)
    vols, labels = [], []
    if start is not None:
        s = summary["settings"]
        px = read_mrc(os.path.join(refine_dir, "map.mrc"))[1]
        vols.append(lowpass(start, float(s["ini_high"]), px))
        labels.append("start (low-pass %g A)" % float(s["ini_high"]))
    for name, label in (("half1.mrc", "half map 1"), ("map.mrc", "final map")):
        vols.append(read_mrc(os.path.join(refine_dir, name))[0])
        labels.append(label)
    return plots.slices_grid_figure(vols, labels, title="Before and after refinement")


def refine_denoising_figure(refine_dir):
    """Central slices of each half's x~ = B / K (the denoiser's input, eq. 17) and f(x~) (its
    output) of the last iteration that ran the denoiser (lambda > 0); None when none did."""
    summary, _ = refine_result(refine_dir)
    from ..programs.refine import RED_MAPS
    before, after = RED_MAPS
    names = [(before % h, "half %d: x~ = B/K" % h, after % h, "half %d: f(x~)" % h)
             for h in (1, 2)]
    if not all(os.path.exists(os.path.join(refine_dir, n[0])) for n in names):
        return None
    ran = [r for r in summary["iterations"] if r["lambda"] > 0]
    vols, labels = [], []
    for before, lb, after, la in names:
        vols += [read_mrc(os.path.join(refine_dir, before))[0],
                 read_mrc(os.path.join(refine_dir, after))[0]]
        labels += [lb, la]
    it = ran[-1] if ran else None
    title = "Before and after the denoiser (%s)" % summary["settings"].get("denoiser") + (
        ", iteration %d, lambda %.2f" % (it["iteration"], it["lambda"]) if it else "")
    return plots.slices_grid_figure(vols, labels, title=title)


def refine_angular_errors(refine_dir, true_angles):
    """Per-particle angle (degrees) between the refined orientation in particles.star and
    ``true_angles`` ((N, 3) RELION Euler angles in radians, one row per particle of the file;
    rows with NaN, particles without a known truth, are left out)."""
    from ..core.refine.sampling import angular_distance
    from ..io.star import read_particles_star
    _, parts = read_particles_star(os.path.join(refine_dir, "particles.star"))
    refined = np.deg2rad(np.stack([np.asarray(parts[k], float) for k in
                                   ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], axis=1))
    true_angles = np.asarray(true_angles, float)
    known = np.all(np.isfinite(true_angles), axis=1)
    return angular_distance(refined[known], true_angles[known])

