"""The oracle of benchmarks/polish_data_term.py (issue 14, data-term variants): its within-frame
blur is the simulator's, on the same axes, and its per particle-frame CC maps reduce to the
program's when the blur is 1 (so "the blur gives nothing" measures the blur, not a bug)."""
import os
import sys

import numpy as np

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "benchmarks")
sys.path.insert(0, BENCH)

import polish_data_term as pdt  # noqa: E402

from polishplugin.core.motion.observation import cc_maps_from_spectra, patch_spectra  # noqa
from polishplugin.core.simulate.motion import substep_offsets  # noqa: E402
from polishplugin.core.simulate.movies import render_particle  # noqa: E402


def _tracks(rng, P=2, F=5):
    """Tracks with different x and y speeds (an x/y swap or a sign error shows)."""
    v = rng.normal(0.0, 1.0, (P, F - 1, 2)) + np.array([2.5, -0.7])
    return np.concatenate([np.zeros((P, 1, 2)), np.cumsum(v, axis=1)], axis=1)


def test_sub_step_blur_is_the_simulators_blur():
    n = 32
    pos = _tracks(np.random.default_rng(3))
    sub = pos[:, :, None, :] + substep_offsets(pos, 4)
    blur = pdt.sub_step_blur(sub, pos, n)
    ones = np.ones((n, n))
    inner = np.r_[0:n // 2, n // 2 + 1:n]      # the Nyquist row and column of a real image
    inner = np.ix_(inner, inner)               # hold the mean of k and its alias: left out
    for p in range(len(pos)):
        # the rendered frames of a flat spectrum are the blur kernel itself, centred on the mean
        frames = render_particle(ones, ones, np.ones((pos.shape[1], n, n)), sub[p] - pos[p][:,
                                 None, :])
        assert np.allclose(np.fft.fft2(frames)[(slice(None),) + inner], blur[p][(slice(None),)
                           + inner], atol=1e-4)     # float32 frames
    assert blur.min() < 0.5                     # not trivially 1 at these speeds
    # uniform motion at the central velocity: close to the 4-sub-step average at low k
    k = np.fft.fftfreq(n)
    low = np.hypot(k[:, None], k[None, :]) <= 0.1
    assert np.abs(pdt.velocity_blur(pos, n) - blur)[..., low].max() < 0.05


def test_blur_cc_maps_with_unit_blur_are_the_programs():
    rng = np.random.default_rng(5)
    P, F, n, R = 3, 4, 24, 3
    spectra = patch_spectra(rng.standard_normal((P, F, n, n)))
    pred = np.fft.fft2(rng.standard_normal((P, n, n)))
    damage = np.exp(-rng.uniform(0, 1, (F, 1, 1)) * np.hypot(*np.meshgrid(
        np.fft.fftfreq(n), np.fft.fftfreq(n))) * 4)
    noise = rng.uniform(1.0, 2.0, n)
    ref = cc_maps_from_spectra(spectra, pred, damage, R, noise, dtype=np.float64)
    pdt._STATE["blur"] = np.ones((P, F, n, n))
    got = pdt.blur_cc_maps(spectra, pred, damage, R, noise, dtype=np.float64)
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    # a blur that varies per particle-frame changes exactly that particle-frame's map
    b = np.ones((P, F, n, n))
    b[1, 2] = 0.5
    pdt._STATE["blur"] = b
    got = pdt.blur_cc_maps(spectra, pred, damage, R, noise, dtype=np.float64)
    assert np.allclose(got[1, 2], 0.5 * ref[1, 2])
    got[1, 2] = ref[1, 2]
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
