"""What several benchmark scripts share (imported as ``_common``: a script's own folder is on
sys.path when it runs as ``python benchmarks/NAME.py``).

Polishing (polish_accuracy, polish_autosigma, polish_data_term, polish_shape_floor, train_sigmas):
the options of the simulated movies and the SimulationConfig they make, the development set;
track errors against the simulated truth.
Refinement (refine_mpi, refine_offset_prior, refine_vs_relion): a simulated project on disk, the
pp_refine command line, the environment of child processes and their CPU time, refined angles.
"""
import os
import resource
import sys

import numpy as np


# ------------------------------------------------------------------------------ polishing
def add_movie_options(ap, micrographs=4, size=1024, frames=24, particles=30, box=96,
                      snr=(0.01, 0.05), seed=1):
    """--micrographs (unless ``micrographs`` is None), --size, --frames, --particles (per
    micrograph), --box, --snr (one or more) and --seed, with these defaults."""
    if micrographs is not None:
        ap.add_argument("--micrographs", type=int, default=micrographs)
    ap.add_argument("--size", type=int, default=size, help="micrograph side (px)")
    ap.add_argument("--frames", type=int, default=frames)
    ap.add_argument("--particles", type=int, default=particles, help="per micrograph")
    ap.add_argument("--box", type=int, default=box)
    ap.add_argument("--snr", type=float, nargs="+", default=list(snr))
    ap.add_argument("--seed", type=int, default=seed)


def movie_config(a, snr, n_micrographs=None, **more):
    """SimulationConfig of :func:`add_movie_options`' options ``a`` at ``snr`` (n_micrographs:
    default --micrographs); ``more``: other SimulationConfig fields."""
    from polishplugin.core.simulate.dataset import SimulationConfig
    return SimulationConfig(seed=a.seed, micrograph_shape=(a.size, a.size),
                            n_micrographs=a.micrographs if n_micrographs is None else n_micrographs,
                            n_frames=a.frames, particles_per_micrograph=a.particles, box=a.box,
                            snr=snr, **more)


#: sigma_vel, sigma_div, sigma_acc (paper units) of the development set's simulated motion
TRUE_SIGMAS = (0.5, 5000.0, 2.0)


def add_development_options(ap):
    """:func:`add_movie_options` at the development set's SNRs 0.007 and 0.035, and --true."""
    add_movie_options(ap, snr=(0.007, 0.035))
    ap.add_argument("--true", type=float, nargs=3, default=list(TRUE_SIGMAS),
                    help="sigma_vel, sigma_div, sigma_acc of the simulated motion (paper units)")


def development_config(a, snr, **more):
    """SimulationConfig of the polishing development set (polish_autosigma, polish_data_term,
    polish_shape_floor) from :func:`add_development_options`' options ``a``: dark particles,
    centres refined from the data, motion drawn with --true's sigmas; ``more``: other fields."""
    return movie_config(a, snr, dark_particles=True, refined_from_data=True,
                        sigma_vel=a.true[0], sigma_div=a.true[1], sigma_acc=a.true[2], **more)


def track_errors(mic, tracks, pixel_size):
    """(P, F, 2) A: each particle's position by ``tracks`` (its refined centre + track, px) minus
    the simulated true position."""
    return (mic.centres[:, None, :] + tracks - mic.positions) * pixel_size


def rms_errors(errors):
    """(RMS, shape RMS) in A over every particle and frame of ``errors`` (a list of (P, F, 2)
    arrays): in full, and after removing each particle's mean error over the frames."""
    d = np.concatenate(errors)
    shape = d - d.mean(axis=1, keepdims=True)
    return float(np.sqrt((d ** 2).sum(-1).mean())), float(np.sqrt((shape ** 2).sum(-1).mean()))


# ----------------------------------------------------------------------------- refinement
def write_project(folder, truth, ps, px, start_A=30.0):
    """particles.star and its stack for the simulated particles ``ps``, and ref.mrc, the truth
    low-passed at ``start_A``; returns that starting map."""
    from polishplugin.core.simulate.volumes import lowpass
    from polishplugin.io.mrc import write_mrc
    from polishplugin.io.particle_set import write_particle_set
    os.makedirs(folder, exist_ok=True)
    write_particle_set(folder, ps, px)
    start = lowpass(truth, start_A, px)
    write_mrc(os.path.join(folder, "ref.mrc"), start, px)
    return start


def refine_command(*options):
    """pp_refine on a :func:`write_project` folder (run there) with more ``options``."""
    return [sys.executable, "-m", "polishplugin.programs.refine", "--particles", "particles.star",
            "--ref", "ref.mrc"] + [str(o) for o in options]


def child_env(one_thread=False, mpirun=False):
    """This process's environment for a child: ``one_thread``: OpenMP, OpenBLAS and numba on one
    thread each; ``mpirun``: Open MPI allowed to run as root and to oversubscribe the cores."""
    env = dict(os.environ)
    if one_thread:
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    if mpirun:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1")
    return env


def children_cpu():
    """CPU seconds (user + system) of the finished children of this process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def refined_angles(star):
    """(rot, tilt, psi) radians (N, 3) of a particles STAR, in its row order, and its table."""
    from polishplugin.io.star import read_particles_star
    _, parts = read_particles_star(star)
    return np.deg2rad(np.stack([np.asarray(parts[k], float) for k in
                                ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], axis=1)), parts
