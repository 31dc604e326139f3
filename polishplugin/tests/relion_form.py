"""scipion-em-relion's 3D auto-refine form in headless tests: does RELION's protocol take our
particles? (A skip marker without the plugin, the check, and RELION's Euler matrix.)"""
import os
import shutil
import unittest

import numpy as np

from polishplugin.io.convert import matrix_to_relion
from polishplugin.io.star import read_particles_star

try:
    import relion.protocols as relion_protocols
except ImportError:  # the test extra not installed
    relion_protocols = None

#: skip decorator for tests that need scipion-em-relion (its binaries may be absent)
needs_relion_plugin = unittest.skipIf(relion_protocols is None,
                                      "scipion-em-relion not installed (the 'test' extra)")


def relion_rotation(angles_deg):
    """RELION's Euler (rot, tilt, psi) ZYZ matrix: equal matrices for equivalent triples."""
    from pwem.convert.transformations import euler_matrix
    return euler_matrix(*np.deg2rad(angles_deg), axes="szyz")[:3, :3]


def check_relion_refine_takes(test, source, reference, reference_attr="outputVolume"):
    """RELION's 3D auto-refine (ProtRelionRefine3D) given ``source.outputParticles`` and the
    volume ``reference.<reference_attr>``: validate() reports only the missing RELION installation
    (if any), and its convert step, run in this process as the protocol would, writes every
    particle with the set's pixel size, defocus, angles (as rotations), origins and half-set.
    ``test``: the pyworkflow BaseTest (its project). Returns RELION's (optics, particles) tables."""
    import relion
    particles = source.outputParticles
    refine = test.newProtocol(relion_protocols.ProtRelionRefine3D, numberOfMpi=3, doGpu=False)
    refine.inputParticles.set(source)
    refine.inputParticles.setExtended("outputParticles")
    refine.referenceVolume.set(reference)
    refine.referenceVolume.setExtended(reference_attr)
    test.assertEqual(refine.validate(), relion.Plugin.validateInstallation())
    test.proj.saveProtocol(refine)
    for folder in (refine._getExtraPath(), refine._getTmpPath()):
        os.makedirs(folder, exist_ok=True)
    if shutil.which("relion_image_handler") is None:
        refine.referenceVolume.set(None)   # converting the reference needs a RELION binary
    refine._initialize()
    refine.convertInputStep(particles.getObjId(), True)
    optics, parts = read_particles_star(refine._getFileName("input_star"))
    px = particles.getSamplingRate()
    test.assertEqual(len(parts), particles.getSize())
    test.assertAlmostEqual(float(optics["rlnImagePixelSize"][0]), px)
    for i, p in enumerate(particles.iterItems(orderBy="id")):
        ctf = p.getCTF()
        test.assertAlmostEqual(float(parts["rlnDefocusU"][i]), ctf.getDefocusU(), places=2)
        test.assertAlmostEqual(float(parts["rlnDefocusV"][i]), ctf.getDefocusV(), places=2)
        angles, origin = matrix_to_relion(p.getTransform().getMatrix(), px)
        got = [float(parts[k][i]) for k in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
        test.assertTrue(np.allclose(relion_rotation(got), relion_rotation(angles), atol=1e-4),
                        (got, angles))
        test.assertAlmostEqual(float(parts["rlnOriginXAngst"][i]), origin[0], places=3)
        test.assertAlmostEqual(float(parts["rlnOriginYAngst"][i]), origin[1], places=3)
        test.assertEqual(int(parts["rlnRandomSubset"][i]), p._rlnRandomSubset.get())
    return optics, parts
