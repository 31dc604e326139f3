"""The demo: a simulated data set through the workflow in a real (headless) Scipion project:
simulate, train the motion sigmas, polish (shiny particles), then refine the shiny particles with
CW-RED from a 30 A low-pass of the true map.

    python -m polishplugin.programs.demo --out demo_output

Creates ``<out>/polishplugin_demo`` (a Scipion project: open it with ``scipion project`` where
Scipion is installed) and writes the figures a person would look at to ``<out>/figures``.
"""
import argparse
import logging
import os
import shutil
import sys
import time

from .scipion_env import ensure_headless_scipion_env

log = logging.getLogger("polishplugin.demo")

#: the simulation's settings per size; tiny: a smaller box at a coarser pixel (the same particle
#: in A) and a higher SNR, so that its 32 particles still refine to a map better than the start
SIZES = {
    "tiny": dict(numberOfMicrographs=2, micrographSize=384, numberOfFrames=12,
                 particlesPerMicrograph=16, boxSize=48, pixelSize=2.4, snr=0.1),
    "default": dict(numberOfMicrographs=6, micrographSize=1024, numberOfFrames=24,
                    particlesPerMicrograph=30, boxSize=96),
}
#: refinement of the shiny particles (CW-RED, the default denoiser) from a 30 A low-pass of the
#: true map: HEALPix orders and iterations kept small enough for the demo's time
REFINE = {
    "tiny": dict(healpixOrder=1, localOrder=2, maxOrder=2, maxIter=4, offsetRange=2.0),
    "default": dict(healpixOrder=1, localOrder=2, maxOrder=3, maxIter=6),
}
#: resolution band (A) of the mean FSC against the truth that the demo reports
BAND_A = (30.0, 10.0)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="data set size (default: %(default)s, about 270 CPU-s: some 5 minutes "
                        "on 2 cores)")
    p.add_argument("--seed", type=int, default=2019)
    return p


def _launch(project, prot, name):
    t0 = time.time()
    log.info("running %s ...", name)
    project.launchProtocol(prot, wait=True)
    if not prot.isFinished():
        logs = prot.getLogPaths()
        tail = open(logs[1]).read()[-3000:] if len(logs) > 1 and os.path.exists(logs[1]) else ""
        raise RuntimeError("%s failed (%s). Last lines of its error log:\n%s"
                           % (name, prot.getStatusMessage(), tail))
    log.info("%s finished in %.1f s", name, time.time() - t0)
    return prot


def refine_shiny(project, sim, polish, size):
    """Launch the denoiser-regularised refinement of ``polish``'s shiny particles: CW-RED with
    the default denoiser, starting from the simulated true map low-passed at 30 A by the
    protocol's initial low-pass (the convention of issue 12 and benchmarks/refine_vs_relion.py),
    the simulation's mask; the true map and poses named as ground truth for the figures."""
    from polishplugin.protocols import ProtPolishRefine
    from polishplugin.protocols.protocol_base import link_inputs
    from polishplugin.protocols.protocol_refine import MODE_CWRED
    refine = project.newProtocol(ProtPolishRefine, objLabel="denoiser-regularised refinement",
                                 mode=MODE_CWRED, iniHigh=30.0, numberOfThreads=2,
                                 **REFINE[size])
    link_inputs(refine, polish, ("Particles",))
    link_inputs(refine, sim, ("Volume", "Mask", "TruthVolume", "TruthParticles"),
                Volume="outputTruthVolume", TruthVolume="outputTruthVolume",
                TruthParticles="outputParticles")
    return _launch(project, refine, "denoiser-regularised refinement")


def refine_vs_truth(refine, sim):
    """FSC against the true map (one value per shell) of the refined map and of the starting map
    as the refinement started from it (low-passed at its initial resolution): each with its FSC
    0.5 and 0.143 resolutions (A) and its mean over :data:`BAND_A`; with the half-map
    resolution and lambda of each iteration (refine.json)."""
    import json
    import numpy as np
    from polishplugin.core.fourier import fsc, resolution_at, shell_band
    from polishplugin.core.simulate.volumes import lowpass
    from polishplugin.io.mrc import read_mrc
    from polishplugin.protocols.protocol_refine import volume_file
    truth, px = read_mrc(volume_file(sim.outputTruthVolume))
    n = truth.shape[0]
    rdir = refine._getExtraPath("refine")
    with open(os.path.join(rdir, "refine.json")) as fh:
        info = json.load(fh)
    res = dict(half_map_A=info["resolution"], lambdas=[r["lambda"] for r in info["iterations"]],
               cw_low_A=info["settings"]["cw_low"], denoiser=info["settings"]["denoiser"])
    shells = shell_band(n, px, *BAND_A)
    for name, vol in (("refined", read_mrc(os.path.join(rdir, "map.mrc"))[0]),
                      ("start", lowpass(truth, refine.iniHigh.get(), px))):
        c = fsc(vol, truth)
        res[name] = dict(fsc=c.tolist(), fsc05_A=resolution_at(c, n, px, 0.5),
                         fsc0143_A=resolution_at(c, n, px), band_mean=float(np.mean(c[shells])))
    return res


def log_refinement(refine, res):
    """Log what :func:`refine_vs_truth` found, and say when the denoiser never acted."""
    ref, start = res["refined"], res["start"]
    log.info("refinement (CW-RED, denoiser %s): %d iterations, half-map resolution %.2f A, "
             "lambda per iteration %s", res["denoiser"], len(res["lambdas"]), res["half_map_A"],
             " ".join("%.2f" % x for x in res["lambdas"]))
    log.info("FSC vs the truth: refined map 0.5 at %.1f A, 0.143 at %.1f A, mean %.3f over "
             "%g-%g A; starting map (%g A low-pass) 0.5 at %.1f A, 0.143 at %.1f A, mean %.3f",
             ref["fsc05_A"], ref["fsc0143_A"], ref["band_mean"], BAND_A[0], BAND_A[1],
             refine.iniHigh.get(), start["fsc05_A"], start["fsc0143_A"], start["band_mean"])
    if max(res["lambdas"]) == 0:
        log.info("lambda stayed 0: the resolution never passed %g A, where CW-RED starts to "
                 "use the denoiser, so this run is the Tikhonov refinement", res["cw_low_A"])


def refine_figures(project, refine, fig_dir):
    """The refinement viewer's figures (FSC vs half maps and truth, resolution and lambda per
    iteration, slices, denoiser before/after, angular error) as PNG + PDF in ``fig_dir``."""
    from polishplugin.figures import plots
    from polishplugin.viewers import ProtPolishRefineViewer
    viewer = ProtPolishRefineViewer(project=project, protocol=refine)
    viewer.setProtocol(refine)
    written = []
    for key, _ in viewer.ENTRIES:
        figs = [f for f in viewer._figures(key) if f is not None]
        for i, fig in enumerate(figs):
            base = "refine_%s%s" % (key[4:].lower(), "_%d" % i if len(figs) > 1 else "")
            written += plots.save_figure(fig, os.path.join(fig_dir, base))
    return written


def run(out, size="default", seed=2019):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    ensure_headless_scipion_env(os.path.join(out, "scipion_home"))
    # pyworkflow reads the environment at import: import it only now
    from pyworkflow.project import Manager
    from polishplugin.protocols import ProtPolishBayesian, ProtPolishSimulate, ProtPolishTrain
    from polishplugin.protocols.protocol_base import link_inputs
    from polishplugin.figures import jobs as figures, plots

    name = "polishplugin_demo"
    proj_path = os.path.join(out, name)
    if os.path.exists(proj_path):
        shutil.rmtree(proj_path)
    manager = Manager()
    link = manager.getProjectPath(name)
    if os.path.lexists(link):
        os.remove(link)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    project = manager.createProject(name, location=out)
    os.chdir(project.getPath())

    t0 = time.time()
    sim = project.newProtocol(ProtPolishSimulate, objLabel="simulate dataset", seed=seed,
                              **SIZES[size])
    _launch(project, sim, "simulate dataset")

    train = project.newProtocol(ProtPolishTrain, objLabel="train motion parameters",
                                # half the micrographs (at least one): the tiny set has two
                                minParticles=SIZES[size]["particlesPerMicrograph"]
                                * max(1, SIZES[size]["numberOfMicrographs"] // 2),
                                restarts=2, evalMaxRes=6.0)  # the default method
    polish = project.newProtocol(ProtPolishBayesian, objLabel="bayesian polishing",
                                 numberOfThreads=2)
    for prot in (train, polish):
        link_inputs(prot, sim)
    _launch(project, train, "train motion parameters")
    log.info("trained sigmas: vel %.3g, div %.4g, acc %.3g (the movies were made with %g, %g, %g)",
             train.sigmaVel.get(), train.sigmaDiv.get(), train.sigmaAcc.get(),
             sim.sigmaVel.get(), sim.sigmaDiv.get(), sim.sigmaAcc.get())
    polish.inputTraining.set(train)
    _launch(project, polish, "bayesian polishing")

    fig_dir = os.path.join(out, "figures")
    sim_dir, pol_dir = sim._getExtraPath(), polish._getExtraPath("polish")
    written = figures.simulation_figures(sim_dir, fig_dir)
    written += figures.train_figures(train._getExtraPath("train"), fig_dir)
    written += figures.polish_figures(pol_dir, fig_dir)
    written += figures.bfactor_figures(polish._getExtraPath("shiny"), fig_dir)
    first = figures.polished_micrographs(pol_dir)[0]
    written += plots.save_figure(figures.polish_truth_figure(pol_dir, sim_dir, first),
                                 os.path.join(fig_dir, "polished_vs_truth"))
    acc = figures.polish_vs_truth(pol_dir, sim_dir)
    log.info("track error vs the truth (RMS over particles and frames): polished %.2f A "
             "(shape %.2f A), initial global track %.2f A (shape %.2f A)",
             acc["map_rms_A"], acc["map_shape_rms_A"], acc["initial_rms_A"],
             acc["initial_shape_rms_A"])
    refine = refine_shiny(project, sim, polish, size)
    written += refine_figures(project, refine, fig_dir)
    res = refine_vs_truth(refine, sim)
    log_refinement(refine, res)
    log.info("figures: %s", ", ".join(os.path.relpath(p, out) for p in written))
    log.info("demo finished in %.1f s; Scipion project: %s", time.time() - t0, proj_path)
    return dict(figures=written, tracks=acc, refine=res)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        run(args.out, args.size, args.seed)
    except Exception as exc:  # report, then fail with a non-zero status
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
