"""One EM pass (eq. 7-9) on a tiny case with known truth: with a clean reference and images made
at poses of the search grid, the posteriors pick the true poses and B, K equal the back-projection
at the known poses; with flatter posteriors B, K are their expectation."""
import numpy as np
import pytest

from polishplugin.core.geometry import euler_to_matrix
from polishplugin.core.reconstruct import Backprojector, centered_fft
from polishplugin.core.refine.iteration import expectation_step
from polishplugin.core.refine.mstep import backproject
from polishplugin.tests.refine_case import N, tiny_case

COUNT = 12


@pytest.fixture(scope="module")
def case():
    c = tiny_case(4, 8, [[0.0, 0.0], [1.0, 0.0], [0.0, -1.5]], COUNT, noise=0.02)
    inv_s2 = np.where(c.k < 0.45, 1.0, 0.0) / (0.02 ** 2 * N ** 2)
    return c.proj, c.angles, c.trans, c.true_o, c.true_t, c.ctfs, c.images, inv_s2


def test_sharp_posteriors_give_the_known_pose_backprojection(case):
    proj, angles, trans, true_o, true_t, ctfs, images, inv_s2 = case
    em = Backprojector(N, 2)
    w, _ = expectation_step(em, proj, centered_fft(images), ctfs, inv_s2, angles, trans)
    flat = w.reshape(COUNT, -1)
    np.testing.assert_array_equal(flat.argmax(axis=1), true_o * len(trans) + true_t)
    assert flat.max(axis=1).min() > 0.999
    known = Backprojector(N, 2)
    rots = euler_to_matrix(angles[true_o, 0], angles[true_o, 1], angles[true_o, 2])
    backproject(known, centered_fft(images, trans[true_t]), rots, ctfs, inv_s2)
    np.testing.assert_allclose(em.weight, known.weight, rtol=1e-6, atol=1e-9 * known.weight.max())
    np.testing.assert_allclose(em.data, known.data, rtol=1e-6, atol=1e-6 * np.abs(known.data).max())


def test_flat_posteriors_accumulate_the_expectation(case):
    """Tempered likelihoods (noise power 1e4 x larger): B = sum_g w_g H_g^* y, pose by pose."""
    proj, angles, trans, _, _, ctfs, images, inv_s2 = case
    y = centered_fft(images[:2])
    em = Backprojector(N, 2)
    w, _ = expectation_step(em, proj, y, ctfs[:2], inv_s2 * 1e-4, angles, trans, prune=0.0)
    assert np.all(w.reshape(2, -1).max(axis=1) < 0.9)
    ref = Backprojector(N, 2)
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    for i in range(2):
        for o in range(len(angles)):
            for t in range(len(trans)):
                backproject(ref, centered_fft(images[i:i + 1], trans[t:t + 1]), rots[o:o + 1],
                            ctfs[i:i + 1], inv_s2 * 1e-4, w[i:i + 1, o, t])
    np.testing.assert_allclose(em.data, ref.data, atol=1e-9 * np.abs(ref.data).max())
    np.testing.assert_allclose(em.weight, ref.weight, atol=1e-9 * ref.weight.max())
