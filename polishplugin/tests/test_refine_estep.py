"""E-step (Kimanius et al. 2021, eq. 5 and 8) against brute force on a tiny case: log-likelihoods
against predictions rendered in real space (CTF, sub-pixel shift) and differenced pixel by pixel;
posteriors against exact decimal arithmetic where float exponentials underflow; the posterior-
weighted back-projection of eq. 9 against the sum over poses done one by one."""
from decimal import Decimal, getcontext

import numpy as np
import pytest

from polishplugin.core.fourier import fourier_shift
from polishplugin.core.geometry import euler_to_matrix
from polishplugin.core.reconstruct import Backprojector, centered_fft
from polishplugin.core.refine.estep import centred_projections, log_likelihoods, pose_posteriors
from polishplugin.core.refine.mstep import backproject
from polishplugin.tests.refine_case import N, tiny_case


@pytest.fixture(scope="module")
def case():
    """Image 0 at pose (orientation 2, translation 1) plus noise; image 1 pure noise."""
    c = tiny_case(11, 4, [[0.0, 0.0], [1.5, -0.5], [-1.0, 2.0]], [(2, 1), (-1, 0)],
                  defoci=(8000.0, 15000.0), noise=0.05)
    inv_s2 = np.where(c.k < 0.4, 1.0 / (1.0 + 10 * c.k), 0.0) / N ** 2
    return c.proj, c.angles, c.trans, c.ctfs, c.images, inv_s2


def test_log_likelihoods_against_real_space_predictions(case):
    proj, angles, trans, ctfs, images, inv_s2 = case
    y = centered_fft(images)
    got = log_likelihoods(y, ctfs, centred_projections(proj, angles), trans, inv_s2)
    brute = np.empty(got.shape)
    for i in range(len(images)):
        for o in range(len(angles)):
            p = np.fft.ifft2(proj.project_many(angles[o:o + 1])[0] * ctfs[i]).real
            for t in range(len(trans)):
                pred = centered_fft(fourier_shift(p, *trans[t]))
                brute[i, o, t] = -np.sum(inv_s2 * np.abs(y[i] - pred) ** 2)
    np.testing.assert_allclose(got, brute, rtol=1e-9, atol=1e-9 * np.abs(brute).max())
    assert np.unravel_index(np.argmax(got[0]), got[0].shape) == (2, 1)


def test_posteriors_by_log_sum_exp_against_exact_arithmetic():
    """Log-likelihoods around -1e5 (exp underflows in floats): weights and the log marginal
    likelihood agree with Decimal arithmetic; a flat log prior changes nothing, a peaked one
    moves the weight."""
    getcontext().prec = 50
    rng = np.random.default_rng(2)
    ll = -1e5 + rng.normal(0, 3.0, (3, 4, 5))
    w, logm = pose_posteriors(ll, prune=0.0)
    for i in range(3):
        ex = [Decimal(float(v)).exp() for v in ll[i].ravel()]
        tot = sum(ex)
        np.testing.assert_allclose(w[i].ravel(), [float(e / tot) for e in ex], rtol=1e-12)
        assert logm[i] == pytest.approx(float(tot.ln()), rel=1e-14)
    w_flat, _ = pose_posteriors(ll, log_prior=np.full((4, 5), -7.0), prune=0.0)
    np.testing.assert_allclose(w_flat, w)
    prior = np.zeros((4, 5))
    prior[0, 0] = 50.0
    w_peak, _ = pose_posteriors(ll, log_prior=prior)
    assert np.all(w_peak[:, 0, 0] > 0.999)


def test_pruning_drops_negligible_weights_and_renormalises():
    ll = np.log(np.array([[0.5, 0.5 - 1e-10, 1e-10]]))
    w, _ = pose_posteriors(ll, prune=1e-8)
    assert w[0, 2] == 0.0 and w.sum() == pytest.approx(1.0) and w[0, 0] == pytest.approx(0.5)


def test_weighted_backprojection_is_the_expectation_over_poses(case):
    """Eq. 9: B and K from posterior-weighted poses equal sum_g w_g (back-projection at g)."""
    proj, angles, trans, ctfs, images, inv_s2 = case
    y = centered_fft(images[:1])
    ll = log_likelihoods(y, ctfs[:1], centred_projections(proj, angles), trans, inv_s2)
    w, _ = pose_posteriors(ll / 50.0, prune=0.0)          # tempered: several poses weigh
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    o, t = np.meshgrid(np.arange(len(angles)), np.arange(len(trans)), indexing="ij")
    o, t = o.ravel(), t.ravel()
    shifted = centered_fft(np.repeat(images[:1], len(o), axis=0), trans[t])
    together = Backprojector(N, 2)
    backproject(together, shifted, rots[o], ctfs[[0] * len(o)], inv_s2, w[0].ravel())
    one_by_one = Backprojector(N, 2)
    for g in range(len(o)):
        single = Backprojector(N, 2)
        backproject(single, shifted[g:g + 1], rots[o[g]:o[g] + 1], ctfs[:1], inv_s2)
        one_by_one.data += w[0].ravel()[g] * single.data
        one_by_one.weight += w[0].ravel()[g] * single.weight
    np.testing.assert_allclose(together.data, one_by_one.data, atol=1e-12)
    np.testing.assert_allclose(together.weight, one_by_one.weight, atol=1e-12)
