"""The exposure filter against Grant & Grigorieff (2015) at known doses, and how it differs from
the damage weights RELION 3.1 uses in relion_motion_refine."""
import numpy as np
import pytest

from polishplugin.core.damage import critical_exposure, exposure_filter, frame_doses
from polishplugin.core.motion.patches import damage_filters


def test_critical_exposure_at_known_resolutions():
    """G&G eq. 3 with their 300 kV fit: Ne(k) = 0.245 k^-1.665 + 2.81 (k in 1/A). Values worked
    out by hand: at 10 A, 0.245 * 10^1.665 + 2.81 = 14.14; at 3 A, 4.34; at 2 A, 3.59 e-/A^2;
    200 kV exposures are 0.8 x these (their paper, unblur)."""
    k = np.array([0.1, 1 / 3.0, 0.5])
    np.testing.assert_allclose(critical_exposure(k), [14.138, 4.336, 3.587], atol=2e-3)
    np.testing.assert_allclose(critical_exposure(k, 200.0), 0.8 * np.array([14.138, 4.336, 3.587]),
                               atol=2e-3)


def test_exposure_filter_is_amplitude_decay_at_known_doses():
    """G&G eq. 5: the amplitude after exposure N is exp(-N / (2 Ne)): at 3 A after 20 e-/A^2,
    exp(-20 / 8.672) = 0.0996; at 10 A after 5 e-/A^2, exp(-5 / 28.277) = 0.8379."""
    assert exposure_filter(1 / 3.0, 20.0) == pytest.approx(0.0996, abs=2e-4)
    assert exposure_filter(0.1, 5.0) == pytest.approx(0.8379, abs=2e-4)


def test_frame_filters_use_mid_frame_exposure():
    """Frame f (0-based) of a movie with pre-exposure e0 and d e-/A^2 per frame is weighted at
    e0 + (f + 1/2) d; checked at one frequency of the fft2 grid (n = 32, 1.25 A/px: ring 8 is
    k = 8 / 40 = 0.2 1/A)."""
    d, e0 = 1.6, 0.7
    filt = damage_filters(32, 1.25, 5, d, e0, 300.0)
    ne = 0.245 * 0.2 ** -1.665 + 2.81
    for f in range(5):
        assert filt[f, 0, 8] == pytest.approx(np.exp(-(e0 + (f + 0.5) * d) / (2 * ne)), rel=1e-9)
    np.testing.assert_allclose(frame_doses(3, 2.0, 1.0), [2.0, 4.0, 6.0])


def test_difference_from_relion_damage_weights_is_bounded():
    """RELION 3.1 (DamageHelper::damageWeight, reference notes C3) weights frame f by
    exp(-N / tau(k)) with tau = 3.40 k^-1.06 - 0.54 and N the exposure at the frame's start; we use
    G&G's published amplitude filter exp(-N / (2 Ne(k))) at mid-frame. The two time constants
    (tau vs 2 Ne) agree within 40 % between 10 and 2 A: RELION damps less at low resolution
    (10 A: tau 38.5 vs 2 Ne 28.3) and slightly more at 2 A (6.55 vs 7.17). Pinned here so that a
    change of either formula is a decision, not an accident."""
    k = np.array([0.1, 1 / 3.0, 0.5])
    tau_relion = 3.40 * k ** -1.06 - 0.54
    two_ne = 2 * critical_exposure(k)
    np.testing.assert_allclose(tau_relion, [38.497, 10.355, 6.549], atol=2e-3)
    ratio = tau_relion / two_ne
    assert np.all((ratio > 0.9) & (ratio < 1.4)), ratio
