"""Expected angular accuracy of the current reference (RELION 3.1's auto-refine,
``MlOptimiser::calculateExpectedAngularErrors`` and ``updateAngularSampling``).

For a particle at its current pose g with CTF c, the noiseless image is y = c P_g x. Turning one
of its Euler angles (rot, tilt or psi, chosen at random per particle) by an angle a gives the
pose g_a; the data can tell g_a from g once the log-likelihood of eq. 5 (the E-step's, noise
sigma^2 per ring, the current image size) drops by more than ln 100 = 4.605, i.e. the perturbed
pose is 100 times less likely:

    log P(y | g) - log P(y | g_a) = sum_k |c (P_g x - P_ga x)|^2 / (2 sigma^2) > ln 100.

a grows in RELION's steps (0.05 deg below 0.2, 0.1 below 1, 0.2 below 2, 0.5 below 5, 1 below 10,
2 below 20, then 5) and stops at the first step past 30 deg (35 deg: "cannot align"). The
expected accuracy is the mean of a over at most 100 particles of half 1. RELION makes the
angular sampling finer only while the searched step is at least 0.75 x that accuracy
(``has_fine_enough_angular_sampling``); our refinement reports the accuracy and applies that
stop only when asked (``Settings.accuracy_stop``). On RELION's own inputs of an iteration
(reference, noise, poses, image size) this estimate gives RELION's value within its spread over
trial particles (BENCHMARKS.md).
"""
import numpy as np

from .estep import centred_projections, log_likelihoods

LN_100 = float(np.log(100.0))    # RELION's pvalue, -ln 0.01
MAX_ANGLE = 30.0                 # deg: past this the search stops (at the next step, 35 deg)
TRIALS = 100                     # particles of half 1 RELION averages over
FINE_ENOUGH = 0.75               # step < this x the accuracy: no finer sampling


def trial_angles():
    """The angle errors (deg) RELION tries, in order: its step schedule up to the first value
    past :data:`MAX_ANGLE`."""
    out, a = [], 0.0
    while True:
        a = round(a + (0.05 if a < 0.2 else 0.1 if a < 1 else 0.2 if a < 2 else 0.5 if a < 5
                       else 1.0 if a < 10 else 2.0 if a < 20 else 5.0), 6)
        out.append(a)
        if a > MAX_ANGLE:
            return np.array(out)


def trial_particles(half_sets, seed, count=TRIALS):
    """Indices of at most ``count`` particles of half 1, in a random order of ``seed``."""
    ones = np.flatnonzero(np.asarray(half_sets) == 1)
    return np.random.default_rng(seed).permutation(ones)[:count]


def perturbed_poses(angles, which, errors_deg):
    """(len(errors), 3) copies of the pose ``angles`` (rot, tilt, psi radians) with Euler angle
    ``which`` (0, 1, 2) turned by each of ``errors_deg``."""
    out = np.repeat(np.asarray(angles, float)[None], len(errors_deg), axis=0)
    out[:, which] += np.deg2rad(errors_deg)
    return out


def angular_error_of(projector, angles, which, ctf, inv_sigma2, errors_deg):
    """The first of ``errors_deg`` at which turning Euler angle ``which`` of the pose ``angles``
    lowers the log-likelihood of the noiseless image by more than ln 100 (module text); the last
    one if none does. ``ctf`` (m, m) or None and ``inv_sigma2`` (m, m) on the E-step's grid."""
    if not np.any(inv_sigma2):                 # no pixel carries information
        return float(errors_deg[-1])
    poses = np.concatenate([np.asarray(angles, float)[None],
                            perturbed_poses(angles, which, errors_deg)])
    p = centred_projections(projector, poses)
    y = p[:1] if ctf is None else ctf[None] * p[:1]
    c = None if ctf is None else ctf[None]
    ll = log_likelihoods(y, c, p, np.zeros((1, 2)), inv_sigma2)[0, :, 0]
    drop = ll[0] - ll[1:]
    hit = np.flatnonzero(drop > LN_100)
    return float(errors_deg[hit[0]] if len(hit) else errors_deg[-1])


def turned_angle(particle):
    """Which Euler angle (0 rot, 1 tilt, 2 psi) the accuracy test turns for particle number
    ``particle``: random, but the same in every iteration (RELION reseeds per image)."""
    return int(np.random.default_rng([7, int(particle)]).integers(3))


def expected_accuracy(projector, angles, ctfs, inv_sigma2, which):
    """RELION's expected angular accuracy (deg): the mean of :func:`angular_error_of` over the
    poses ``angles`` (P, 3) with CTFs ``ctfs`` (P, m, m) or None, turning Euler angle
    ``which[j]`` of pose j."""
    errors = trial_angles()
    out = [angular_error_of(projector, a, int(w), None if ctfs is None else ctfs[j], inv_sigma2,
                            errors)
           for j, (a, w) in enumerate(zip(np.asarray(angles, float), which))]
    return float(np.mean(out)) if out else np.inf


def fine_enough(searched_step_deg, accuracy_deg, factor=FINE_ENOUGH):
    """True when the sampling should not get finer: the step searched is below ``factor`` x the
    expected accuracy (RELION's has_fine_enough_angular_sampling)."""
    return bool(searched_step_deg < factor * accuracy_deg)
