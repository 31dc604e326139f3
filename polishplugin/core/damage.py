"""Radiation damage: the exposure filter of Grant & Grigorieff (2015) and per-frame B-factors.

Grant & Grigorieff eq. 3: the critical exposure Ne(k) = a * k^b + c (k in 1/A, Ne in e-/A^2)
with a = 0.245, b = -1.665, c = 2.81 (their fit at 300 kV); eq. 5: the signal amplitude after an
accumulated exposure N decays as exp(-N / (2 Ne(k))). Frame f (0-based) is taken at its
mid-frame accumulated exposure ``pre + (f + 1/2) * dose_per_frame``.

RELION 3.1's relion_motion_refine differs (DamageHelper::damageWeight): exp(-N / tau(k)) with
tau = 3.40 k^-1.06 - 0.54 and N the exposure at the frame's start. Its time constant tau is 1.36 x
our 2 Ne at 10 A, 1.19 x at 3 A and 0.91 x at 2 A: RELION damps low frequencies less. Pinned by
tests/test_damage.py.
"""
import numpy as np

GG_A, GG_B, GG_C = 0.245, -1.665, 2.81


def critical_exposure(k, voltage_kv=300.0):
    """Ne(k) in e-/A^2 for |k| in 1/A (Grant & Grigorieff 2015, eq. 3); 200 kV scaled by 0.8
    as in their paper/unblur."""
    k = np.maximum(np.asarray(k, dtype=np.float64), 1e-6)
    ne = GG_A * k ** GG_B + GG_C
    if voltage_kv < 250:
        ne = ne * 0.8
    return ne


def frame_doses(nframes, dose_per_frame, pre_exposure=0.0):
    """Mid-frame accumulated exposure (e-/A^2) of each frame."""
    return pre_exposure + (np.arange(nframes) + 0.5) * dose_per_frame


def exposure_filter(k, dose, voltage_kv=300.0):
    """Amplitude attenuation exp(-N / (2 Ne(k))) for accumulated exposure ``dose`` (scalar or
    array, broadcast on the left of k)."""
    dose = np.asarray(dose, dtype=np.float64)[..., None, None] if np.ndim(dose) else dose
    return np.exp(-dose / (2.0 * critical_exposure(k, voltage_kv)))


def bfactor_filter(k, bfactors, scales=None):
    """Amplitude attenuation exp(C_f) * exp(B_f |k|^2 / 4) per frame (B in A^2, negative for
    decay, standard crystallographic amplitude convention; k in 1/A)."""
    b = np.asarray(bfactors, dtype=np.float64)[:, None, None]
    out = np.exp(b * np.asarray(k) ** 2 / 4.0)
    if scales is not None:
        out = out * np.exp(np.asarray(scales, dtype=np.float64))[:, None, None]
    return out
