"""The masked, phase-randomisation-corrected FSC (core/masked_fsc.py) against relion_postprocess
3.1.3 on the same half maps and mask, and its behaviour where the answer is known without RELION."""
import shutil

import numpy as np
import pytest

from polishplugin.core.fourier import resolution_at
from polishplugin.core.masked_fsc import SHELL_OFFSET, masked_fsc
from polishplugin.core.simulate.volumes import lowpass, pseudo_protein, soft_mask
from polishplugin.io.mrc import write_mrc
from polishplugin.tests.relion import needs_relion, relion_postprocess

N, PX, CUTOFF = 64, 1.5, 8.0     # box, A/px, low-pass (A) of the halves' common signal


@pytest.fixture(scope="module")
def case():
    """Halves = a common map low-passed at CUTOFF + independent white noise, and a tight mask
    with a sharp (2 px) edge: the true FSC is ~0 beyond CUTOFF, where the mask's own
    correlation inflates the masked FSC (the failure the correction exists for)."""
    rng = np.random.default_rng(5)
    signal = lowpass(pseudo_protein(N, PX, rng, radius_A=0.2 * N * PX), CUTOFF, PX)
    halves = [signal + signal.std() * rng.standard_normal(signal.shape) for _ in range(2)]
    mask = soft_mask(lowpass(signal, 12.0, PX), 0.15 * signal.max(), 1.0, 2.0)
    return halves[0], halves[1], mask


def _beyond(shell_k0):
    return slice(shell_k0 + SHELL_OFFSET, None)


def test_mask_of_ones_changes_nothing(case):
    """Without a mask the correction is a no-op: the masked FSC is the unmasked one, the
    randomised halves keep their FSC below k0, and beyond k0 + 2 the corrected FSC differs from
    the unmasked one only by the random phases' own correlation, |r| (1 - FSC) with |r| ~
    1 / sqrt(voxels in the shell)."""
    h1, h2, _ = case
    f = masked_fsc(h1, h2, np.ones_like(h1), np.random.default_rng(1))
    np.testing.assert_allclose(f.masked, f.unmasked, atol=1e-12)
    k0 = f.randomize_shell
    assert f.unmasked[k0] < 0.8 <= f.unmasked[1:k0].min()
    np.testing.assert_allclose(f.randomised[:k0], f.unmasked[:k0], atol=1e-9)
    np.testing.assert_array_equal(f.corrected[:k0 + SHELL_OFFSET], f.unmasked[:k0 + SHELL_OFFSET])
    k = np.fft.fftfreq(N) * N
    shells = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2
                             + np.arange(N // 2 + 1) ** 2))
    count = np.bincount(shells.ravel().astype(int))[:N // 2 + 1]
    far = _beyond(k0)
    assert np.all(np.abs(f.corrected - f.unmasked)[far] <= 6 / np.sqrt(count[far]))


def test_correction_removes_the_mask_correlation(case):
    """Beyond the common signal's cut-off the halves share nothing: the unmasked FSC is ~0, the
    tight mask's FSC far above it, the corrected one back to ~0."""
    h1, h2, mask = case
    f = masked_fsc(h1, h2, mask, np.random.default_rng(1))
    far = slice(int(N * PX / CUTOFF) + 3, None)
    assert abs(f.unmasked[far].mean()) < 0.02
    assert f.masked[far].mean() > 0.1 and f.masked[far].max() > 0.3
    assert abs(f.corrected[far].mean()) < 0.03


def test_bad_input_is_refused(case):
    h1, h2, mask = case
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        masked_fsc(h1, h2, 2 * mask)
    with pytest.raises(ValueError, match="shape"):
        masked_fsc(h1, h2[:-1], mask)
    with pytest.raises(ValueError, match="never drops below"):
        masked_fsc(h1, h1, mask)


@needs_relion
@pytest.mark.skipif(shutil.which("relion_postprocess") is None, reason="needs relion_postprocess")
def test_agrees_with_relion_postprocess(case, tmp_path):
    """Unmasked and masked FSC equal relion_postprocess's to its STAR file's precision (1e-5);
    the same randomisation shell; the phase-randomised (all shells: its random phases leak below
    k0 through the mask) and corrected (from k0 + 2) curves as close to RELION's as two of our
    seeds are to each other (RELION's is one more draw of the random phases: the rms
    difference within 2x the seeds', so a ratio of two chi^2 with ~20 degrees of freedom; every
    shell within 5x); the corrected 0.143 resolution within one shell."""
    h1, h2, mask = case
    for name, vol in (("half1.mrc", h1), ("half2.mrc", h2), ("mask.mrc", mask)):
        write_mrc(tmp_path / name, vol, PX)
    blocks = relion_postprocess("half1.mrc", "half2.mrc", "mask.mrc", tmp_path, angpix=PX)
    t = blocks["fsc"]
    rel = {k: np.asarray(t[k], float) for k in t.labels}
    a, b = (masked_fsc(h1, h2, mask, np.random.default_rng(s)) for s in (1, 2))
    np.testing.assert_allclose(a.unmasked, rel["rlnFourierShellCorrelationUnmaskedMaps"],
                               atol=1e-5)
    np.testing.assert_allclose(a.masked, rel["rlnFourierShellCorrelationMaskedMaps"], atol=1e-5)
    k0 = a.randomize_shell
    assert a.randomise_from(PX) == pytest.approx(float(blocks["general"]["rlnRandomiseFrom"][0]),
                                                 abs=1e-5)
    for ours, other, label, start in (
            (a.randomised, b.randomised,
             "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps", 0),
            (a.corrected, b.corrected, "rlnFourierShellCorrelationCorrected", k0 + SHELL_OFFSET)):
        spread = np.sqrt(np.mean((ours - other)[start:] ** 2))
        diff = (ours - rel[label])[start:]
        assert np.sqrt(np.mean(diff ** 2)) <= 2 * spread, label
        assert np.abs(diff).max() <= 5 * spread, label
    # below k0 + 2 the masked FSC; beyond, far from it (the test can tell a missing correction)
    np.testing.assert_allclose(a.corrected[:k0 + SHELL_OFFSET],
                               rel["rlnFourierShellCorrelationCorrected"][:k0 + SHELL_OFFSET],
                               atol=1e-5)
    assert np.abs(a.masked - a.corrected)[k0 + SHELL_OFFSET:].max() > 5 * spread
    res = float(blocks["general"]["rlnFinalResolution"][0])
    assert abs(N * PX / resolution_at(a.corrected, N, PX) - N * PX / res) <= 1.0
