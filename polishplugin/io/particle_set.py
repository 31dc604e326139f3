"""Write a simulated particle set (:class:`polishplugin.core.simulate.particles.ParticleSet`) as a
RELION 3.1 project: one MRCS stack and a particles STAR with optics, angles (degrees), origins
(A), CTF (defocus U = V, angle 0) and half-sets."""
import os

import numpy as np

from .mrc import write_mrc
from .star import StarTable, write_particles_star


def write_particle_set(folder, ps, pixel_size, voltage=300.0, cs=2.7, q0=0.1):
    """Write ``stack.mrcs`` and ``particles.star`` under ``folder``; returns the STAR path."""
    count, n = len(ps.images), ps.images.shape[-1]
    write_mrc(os.path.join(folder, "stack.mrcs"), ps.images, pixel_size)
    deg = np.rad2deg(ps.angles)
    parts = {"rlnImageName": ["%06d@stack.mrcs" % (i + 1) for i in range(count)],
             "rlnAngleRot": deg[:, 0], "rlnAngleTilt": deg[:, 1], "rlnAnglePsi": deg[:, 2],
             "rlnOriginXAngst": ps.origins_A[:, 0], "rlnOriginYAngst": ps.origins_A[:, 1],
             "rlnDefocusU": ps.defocus, "rlnDefocusV": ps.defocus,
             "rlnDefocusAngle": np.zeros(count), "rlnRandomSubset": ps.half_sets,
             "rlnOpticsGroup": np.ones(count, int)}
    optics = StarTable({"rlnOpticsGroupName": ["g1"], "rlnOpticsGroup": [1],
                        "rlnVoltage": [voltage], "rlnSphericalAberration": [cs],
                        "rlnAmplitudeContrast": [q0], "rlnImagePixelSize": [pixel_size],
                        "rlnImageSize": [n], "rlnImageDimensionality": [2]})
    path = os.path.join(folder, "particles.star")
    write_particles_star(path, optics, StarTable(parts))
    return path
