"""The demo: a simulated data set through the workflow in a real (headless) Scipion project.

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

SIZES = {  # micrographs, micrograph px, frames, particles per micrograph
    "tiny": dict(numberOfMicrographs=2, micrographSize=512, numberOfFrames=12,
                 particlesPerMicrograph=8, boxSize=64),
    "default": dict(numberOfMicrographs=6, micrographSize=1024, numberOfFrames=24,
                    particlesPerMicrograph=30, boxSize=96),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="data set size (default: %(default)s, about 2 minutes on 2 cores)")
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


def run(out, size="default", seed=2019):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    ensure_headless_scipion_env(os.path.join(out, "scipion_home"))
    # pyworkflow reads the environment at import: import it only now
    from pyworkflow.project import Manager
    from polishplugin.protocols import ProtPolishBayesian, ProtPolishSimulate, ProtPolishTrain
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

    links = (("inputMovies", "outputMovies"), ("inputParticles", "outputParticles"),
             ("inputVolume", "outputVolume"), ("inputMask", "outputMask"))
    train = project.newProtocol(ProtPolishTrain, objLabel="train motion parameters",
                                # half the micrographs (at least one): the tiny set has two
                                minParticles=SIZES[size]["particlesPerMicrograph"]
                                * max(1, SIZES[size]["numberOfMicrographs"] // 2),
                                restarts=2, evalMaxRes=6.0)  # the default method
    polish = project.newProtocol(ProtPolishBayesian, objLabel="bayesian polishing",
                                 numberOfThreads=2)
    for prot in (train, polish):
        for name, output in links:
            getattr(prot, name).set(sim)
            getattr(prot, name).setExtended(output)
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
    log.info("figures: %s", ", ".join(os.path.relpath(p, out) for p in written))
    log.info("demo finished in %.1f s; Scipion project: %s", time.time() - t0, proj_path)
    return written


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
