"""Turn the files a program wrote into pwem output objects (shared by the protocols)."""
import os

from ..io import convert


def volume_with_halves(protocol, path, pixel_size, half1=None, half2=None, suffix=""):
    """A pwem Volume for ``path``, with its half maps attached when given."""
    from pwem.objects import Volume
    vol = Volume(location=path)
    vol.setSamplingRate(pixel_size)
    if half1 and half2:
        vol.setHalfMaps([half1, half2])
    return vol


def simulated_dataset_outputs(protocol, sim_dir):
    """Outputs of ProtPolishSimulate from the simulate program's folder: movies (with the earlier
    global alignment), particles (alignment, CTF, coordinates, half-sets), the reference volume
    with its half maps, the mask and the true volume."""
    from pwem.objects import VolumeMask
    movies = protocol._createSetOfMovies()
    convert.read_set_of_movies(os.path.join(sim_dir, "MotionCorr", "corrected_micrographs.star"),
                               movies, root=sim_dir)
    particles = protocol._createSetOfParticles()
    convert.read_set_of_particles(os.path.join(sim_dir, "particles.star"), particles, root=sim_dir)
    px = particles.getSamplingRate()
    half1 = os.path.join(sim_dir, "half1_unfil.mrc")
    half2 = os.path.join(sim_dir, "half2_unfil.mrc")
    ref = os.path.join(sim_dir, "reference.mrc")
    volume = volume_with_halves(protocol, ref, px, half1, half2)
    mask = VolumeMask(location=os.path.join(sim_dir, "mask.mrc"))
    mask.setSamplingRate(px)
    truth = volume_with_halves(protocol, os.path.join(sim_dir, "truth", "volume.mrc"), px)
    return {"outputMovies": movies, "outputParticles": particles, "outputVolume": volume,
            "outputMask": mask, "outputTruthVolume": truth}
