"""E_AP of eq. 18: every term's analytic gradient against central finite differences, plus the
position map of eq. 6-7 against a brute-force loop."""
import numpy as np
import pytest

from polishplugin.backends import get_backend
from polishplugin.core.motion import energy as en
from polishplugin.core.motion.prior import gp_basis


def _problem(seed=0, P=5, F=7, W=15, sigma_acc=0.7, backend="numpy", cut=False, max_dims=None):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 800, size=(P, 2))
    basis, lam = gp_basis(pos, 0.6, 300.0, max_dims=max_dims)
    # smooth random CC maps so that finite differences are well conditioned
    y, x = np.mgrid[:W, :W] - W // 2
    cc = np.zeros((P, F, W, W))
    for k in range(4):
        cx, cy = rng.uniform(-4, 4, size=2)
        cc += rng.uniform(0.5, 2) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 8.0)
    cc = cc * rng.uniform(0.5, 1.5, size=(P, F, 1, 1))
    cuts = rng.integers(-2, 3, size=(P, F, 2)).astype(float) if cut else None
    prob = en.MotionProblem(cc, basis, lam, sigma_acc, get_backend(backend), cuts)
    s0 = rng.uniform(-2, 2, size=(P, 2))
    c = rng.normal(scale=0.5, size=(F - 1, basis.shape[1], 2))
    return prob, en.pack(s0, c)


def _fd(fun, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(len(x)):
        d = np.zeros_like(x)
        d[i] = h
        g[i] = (fun(x + d) - fun(x - d)) / (2 * h)
    return g


def _rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def test_space_term_gradient():
    prob, x = _problem()
    s0, c = en.unpack(x, prob.n_particles, prob.n_frames, prob.n_dims)
    _, g = en.space_term(c)
    fd = _fd(lambda v: en.space_term(v.reshape(c.shape))[0], c.ravel())
    assert _rel_err(g.ravel(), fd) < 1e-5


def test_time_term_gradient_and_value():
    prob, x = _problem(1)
    s0, c = en.unpack(x, prob.n_particles, prob.n_frames, prob.n_dims)
    e, g = en.time_term(c, prob.lambdas, prob.sigma_acc_px)
    fd = _fd(lambda v: en.time_term(v.reshape(c.shape), prob.lambdas, prob.sigma_acc_px)[0], c.ravel())
    assert _rel_err(g.ravel(), fd) < 1e-5
    # eq. 10 == eq. 11: velocity changes of the particles, summed, equal the lambda-weighted form
    v = np.einsum("pd,fdk->pfk", prob.basis, c)
    e10 = np.sum(np.diff(v, axis=1) ** 2) / prob.sigma_acc_px ** 2
    assert e == pytest.approx(e10, rel=1e-10)
    assert en.time_term(c, prob.lambdas, -1.0)[0] == 0.0


@pytest.mark.parametrize("cut", [False, True])
def test_obs_term_gradient(cut):
    prob, x = _problem(2, cut=cut)
    P, F, D = prob.n_particles, prob.n_frames, prob.n_dims

    def e(v):
        return en.obs_term(*en.unpack(v, P, F, D), prob)[0]
    _, g_s0, g_c = en.obs_term(*en.unpack(x, P, F, D), prob)
    assert _rel_err(en.pack(g_s0, g_c), _fd(e, x)) < 1e-5


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_total_energy_gradient(backend):
    prob, x = _problem(3, backend=backend)
    _, g = en.energy(x, prob)
    assert _rel_err(g, _fd(lambda v: en.energy(v, prob)[0], x)) < 1e-5


def test_positions_brute_force_and_round_trip():
    prob, x = _problem(4)
    P, F, D = prob.n_particles, prob.n_frames, prob.n_dims
    s0, c = en.unpack(x, P, F, D)
    s = en.positions(s0, c, prob.basis)
    for p in range(P):
        for f in range(F):
            ref = s0[p] + sum(prob.basis[p, i] * c[g, i] for g in range(f) for i in range(D))
            np.testing.assert_allclose(s[p, f], ref, atol=1e-12)
    s0b, cb = en.params_from_tracks(s, prob.basis, prob.lambdas)
    np.testing.assert_allclose(s0b, s0, atol=1e-10)
    np.testing.assert_allclose(cb, c, atol=1e-8)


def test_truncated_basis_positions_and_gradient():
    """D < P and F - 1 != D, 2: the one-product layout of B c_f and B^T g (positions, obs_term)
    must not mix particles, dimensions, frames and axes."""
    prob, x = _problem(5, P=7, F=5, max_dims=3, cut=True)
    P, F, D = prob.n_particles, prob.n_frames, prob.n_dims
    assert D == 3
    s0, c = en.unpack(x, P, F, D)
    s = en.positions(s0, c, prob.basis)
    ref = s0[:, None, :] + np.concatenate(
        [np.zeros((P, 1, 2)), np.cumsum(np.einsum("pi,fia->pfa", prob.basis, c), axis=1)], axis=1)
    np.testing.assert_allclose(s, ref, atol=1e-12)
    _, g_s0, g_c = en.obs_term(s0, c, prob)
    assert g_c.shape == (F - 1, D, 2)
    assert _rel_err(en.pack(g_s0, g_c),
                    _fd(lambda v: en.obs_term(*en.unpack(v, P, F, D), prob)[0], x)) < 1e-5
