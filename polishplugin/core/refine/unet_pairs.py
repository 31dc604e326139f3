"""Training pairs for the RED denoiser (Kimanius et al. 2021, §3.1) from our simulator, and the
scores that compare denoisers against a known truth.

A pair is (x~, t): x~ a noisy, unregularised half-map reconstruction of a truth map x, and
    t = F^-1[ FSC_half(k) F[x](k) ]
the truth low-passed by the FSC between x~ and its independent other half (§3.1, "multiplying the
Fourier transform of the ground truth by the FSC of each noisy input map"). Two kinds of x~:

- :func:`gaussian_pair`: the truth damped by a B-factor (rotational smearing of early
  iterations), plus coloured Gaussian noise per Fourier shell whose power makes the expected
  half-map FSC fall as 1 / (1 + c (k / k_res)^p) (:func:`..simulate.volumes.target_fsc`), the
  "Gaussian noise" network of §3.1;
- :func:`reconstruction_pair`: direct Fourier inversion x~ = B / K of noisy CTF-modulated
  projections of the truth (:func:`..simulate.particles.simulate_particles`), back-projected with
  orientations perturbed by random rotations of a few degrees (pose errors of an intermediate
  iteration);
- :func:`engine_pairs`: the unregularised half maps x~ = B / K of every iteration of our own
  refinement (:mod:`.loop`, eq. 11 Tikhonov) of simulated particles started from a 30 A low-pass
  of the truth, as §3.1 took RELION's intermediate half maps.
"""
import numpy as np

from ..ctf import CtfParams, ctf_2d
from ..fourier import crossing_shell, fsc, shell_band
from ..geometry import euler_to_matrix
from ..reconstruct import Backprojector, centered_fft
from ..simulate.particles import simulate_particles
from ..simulate.volumes import _shell_index, target_fsc, volume_from_model


def random_rotation(rng, max_angle_deg=None):
    """A rotation matrix uniform on SO(3) or, with ``max_angle_deg``, about a random axis by an
    angle drawn from N(0, max_angle_deg) (Rodrigues' formula)."""
    if max_angle_deg is None:
        q = rng.normal(size=4)
        a, b, c, d = q / np.linalg.norm(q)
        return np.array([[a*a + b*b - c*c - d*d, 2*(b*c - a*d), 2*(b*d + a*c)],
                         [2*(b*c + a*d), a*a - b*b + c*c - d*d, 2*(c*d - a*b)],
                         [2*(b*d - a*c), 2*(c*d + a*b), a*a - b*b - c*c + d*d]])
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    theta = np.deg2rad(rng.normal(0.0, max_angle_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def model_truth(path_or_structure, n, pixel_size, rng, tries=20):
    """Map (n^3, float64, unit standard deviation) of an atomic model in a random orientation that
    fits the box, at Nyquist resolution (:func:`volume_from_model`); the model's own orientation
    if no random one fits in ``tries``."""
    import gemmi
    st = (gemmi.read_structure(str(path_or_structure))
          if not isinstance(path_or_structure, gemmi.Structure) else path_or_structure)
    for i in range(tries + 1):
        s = st.clone()
        if i < tries:
            r = random_rotation(rng)
            s[0].transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(r.tolist()), gemmi.Vec3(0, 0, 0)))
        try:
            v = volume_from_model(s, n, pixel_size, 2.0 * pixel_size).astype(np.float64)
        except ValueError:
            continue
        return v / v.std()
    raise ValueError("the model does not fit a %d px box at %.2f A/px" % (n, pixel_size))


def fsc_target(truth, curve):
    """The truth multiplied per Fourier shell by the FSC ``curve`` clipped to [0, 1] (shells
    beyond the curve: 0)."""
    n = truth.shape[0]
    shells = np.rint(_shell_index(n) * n).astype(int)
    filt = np.zeros(shells.max() + 1)
    c = np.clip(np.nan_to_num(np.asarray(curve, dtype=np.float64)), 0.0, 1.0)
    filt[:min(len(c), len(filt))] = c[:len(filt)]
    return np.fft.ifftn(np.fft.fftn(truth) * filt[shells]).real


def gaussian_pair(truth, pixel_size, rng, resolution_A, steepness=8.0, bfactor=0.0, floor=1e-3):
    """(x~, target, half-map FSC) for the coloured-noise model of the module docstring: signal
    F[x] exp(-B s^2 / 4) (s in 1/A), noise power S_B (1 - f) / f per shell (S_B the damped signal's
    shell power, f = target_fsc at 1/resolution_A), floored at ``floor`` x the mean shell power."""
    truth = np.asarray(truth, dtype=np.float64)
    n = truth.shape[0]
    k = _shell_index(n)
    shells = np.rint(k * n).astype(int)
    ft = np.fft.fftn(truth) * np.exp(-bfactor * (k / pixel_size) ** 2 / 4.0)
    nsh = shells.max() + 1
    power = np.bincount(shells.ravel(), (np.abs(ft) ** 2).ravel(), nsh) / np.maximum(
        np.bincount(shells.ravel(), minlength=nsh), 1)
    f = target_fsc(np.arange(nsh) / (n * pixel_size), 1.0 / resolution_A, steepness)
    noise = np.maximum(power * (1.0 - f) / np.maximum(f, 1e-12), floor * power[1:n // 2].mean())
    amp = np.sqrt(noise[shells] / n ** 3)
    signal = np.fft.ifftn(ft).real
    halves = [signal + np.fft.ifftn(np.fft.fftn(rng.standard_normal(truth.shape)) * amp).real
              for _ in range(2)]
    curve = fsc(halves[0], halves[1])
    return halves[0], fsc_target(truth, curve), curve


def reconstruction_pair(truth, pixel_size, rng, count, snr, angle_error_deg=0.0):
    """(x~, target, half-map FSC): two half-set reconstructions B / K (:class:`Backprojector`,
    nearly unregularised) of ``count`` noisy projections of the truth at ``snr``, inserted with
    each orientation perturbed by a random rotation of N(0, angle_error_deg) degrees."""
    truth = np.asarray(truth, dtype=np.float64)
    n = truth.shape[0]
    ps = simulate_particles(truth.astype(np.float32), count, pixel_size, snr, rng)
    rots = euler_to_matrix(ps.angles[:, 0], ps.angles[:, 1], ps.angles[:, 2])
    if angle_error_deg > 0:
        rots = np.stack([r @ random_rotation(rng, angle_error_deg) for r in rots])
    halves = []
    for h in (1, 2):
        bp = Backprojector(n)
        idx = np.flatnonzero(ps.half_sets == h)
        for i0 in range(0, len(idx), 256):
            sel = idx[i0:i0 + 256]
            ctfs = np.stack([ctf_2d(CtfParams(d, d, 0.0), n, pixel_size) for d in ps.defocus[sel]])
            bp.insert(centered_fft(ps.images[sel], -ps.origins_A[sel] / pixel_size), rots[sel], ctfs)
        halves.append(bp.reconstruct().astype(np.float64))
    curve = fsc(halves[0], halves[1])
    return halves[0], fsc_target(truth, curve), curve


def in_truth_frame(x, target, curve, slack=0.1):
    """Whether x~ agrees with its truth as far as its half-map FSC claims: over the shells where
    the FSC of the halves is >= 0.5, the FSC of x~ with the truth (= with the FSC-filtered
    target there) falls short of it by less than ``slack`` on average. A refinement that went
    astray (a mixed or turned frame: the halves agree with each other, not with the truth) fails,
    and its maps would pair x~ with a target it does not show."""
    curve = np.nan_to_num(np.asarray(curve, dtype=np.float64))
    good = np.flatnonzero(curve >= 0.5)
    if len(good) == 0:
        return True
    return bool(np.mean(fsc(x, target)[good] - curve[good]) > -slack)


def red_blend(x, prior_mean, curve, lam=1.0, current_size=None):
    """The eq. 17 update on the map x~ itself, shell by shell: with tau^2 from the half-map FSC
    (eq. 12, SSNR = FSC / (1 - FSC) = K tau^2) x = FSC x~ + (1 - FSC) lam m, m = f(x~); m = 0 is
    eq. 11 (Tikhonov). Where the FSC is low the prior mean's share (1 - FSC) lam far outweighs
    FSC x~, so what f puts in the shells beyond the FSC resolution *is* the update there.
    ``current_size``: the iteration's image size; the update is zero at radii of current_size / 2
    and beyond, as the loop's (:func:`.update.regularised_map`) is, whatever f puts there."""
    n = x.shape[0]
    radius = _shell_index(n) * n
    shells = np.rint(radius).astype(int)
    c = np.zeros(shells.max() + 1)
    cc = np.clip(np.nan_to_num(np.asarray(curve, dtype=np.float64)), 0.0, 1.0)
    c[:min(len(cc), len(c))] = cc[:len(c)]
    w = c[shells]
    out = w * np.fft.fftn(x) + (1.0 - w) * lam * np.fft.fftn(prior_mean)
    if current_size is not None:
        out = np.where(radius < current_size / 2.0, out, 0.0)
    return np.fft.ifftn(out).real


def mean_fsc(vol, truth, pixel_size, low_A=10.0, high_A=4.0):
    """Mean FSC between ``vol`` and ``truth`` over the shells from low_A to high_A (§4 score)."""
    band = shell_band(truth.shape[0], pixel_size, low_A, high_A)
    return float(fsc(vol, truth)[band].mean())


def distance_ratio(maps, reference, truth, mask, p=2):
    """L_p distance to the truth (Kimanius et al. 2021, Fig. 1c) of each map in ``maps`` over that
    of ``reference``, inside ``mask``, all at the one grey scale that fits ``reference`` best to
    the truth (least squares): < 1 where a map is closer to the truth than the reference."""
    m = np.asarray(mask, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64) * m
    t = np.asarray(truth, dtype=np.float64) * m
    a = float((r * t).sum() / (r * r).sum())

    def dist(v):
        return float((np.abs(a * np.asarray(v, dtype=np.float64) * m - t) ** p).sum() ** (1.0 / p))
    ref = dist(reference)
    return [dist(v) / ref for v in maps]


def fsc_shell(curve, threshold=0.143):
    """Shell (fractional) where a shell curve first drops below ``threshold``
    (:func:`..fourier.crossing_shell`, NaN read as 0); the last shell if it never does."""
    curve = np.nan_to_num(np.asarray(curve, dtype=np.float64))
    shell = crossing_shell(curve, threshold)
    return float(len(curve) - 1) if shell is None else shell


def half_map_optimism(half1, half2, truth, mask, threshold=0.143, current_size=None):
    """Shells by which the half maps' FSC 0.143 point lies beyond what their agreement with the
    truth supports: for halves x_h = t + n_h with independent n_h, FSC(x1, x2) = FSC(x1, t)
    FSC(x2, t) per shell, so (shell where FSC(x1, x2) drops below ``threshold``) - (shell where
    FSC(x1, t) FSC(x2, t) does); > 0 when the halves share something the truth does not have
    (the false features of §4.3). Everything inside ``mask`` (the loop's particle mask); with
    ``current_size`` both curves are 0 from current_size / 2 on, as the loop's own FSC is (beyond
    the maps' band the masked FSC holds only the mask's correlation with itself)."""
    m = np.asarray(mask, dtype=np.float64)
    a, b, t = half1 * m, half2 * m, truth * m
    half, vs_truth = fsc(a, b), fsc(a, t) * fsc(b, t)
    if current_size is not None:
        half[current_size // 2:] = vs_truth[current_size // 2:] = 0.0
    return fsc_shell(half, threshold) - fsc_shell(vs_truth, threshold)


def engine_pairs(truth, pixel_size, rng, count, snr, max_iter=12, **settings):
    """[(x~, target, half-map FSC, record)] from a gold-standard refinement (:func:`.loop.refine`)
    of ``count`` simulated particles of ``truth`` at ``snr``, blind (no angles, no offsets) from
    the truth low-passed at 30 A: both halves' x~ = B / K at every iteration (§3.1). The update is
    eq. 17 with the zero prior mean, i.e. eq. 11 (Tikhonov) exactly, so that the loop hands over
    x~; ``settings``: more :class:`.loop.Settings` fields. record: iteration, half, the loop's
    (masked) half-map resolution and the current image size."""
    from .loop import Particles, Settings, initial_state, refine
    truth = np.asarray(truth, dtype=np.float64)
    n = truth.shape[0]
    ps = simulate_particles(truth.astype(np.float32), count, pixel_size, snr, rng)
    ctfs = np.stack([ctf_2d(CtfParams(d, d, 0.0), n, pixel_size) for d in ps.defocus])
    particles = Particles(ps.images, ctfs.astype(np.float32), ps.half_sets, pixel_size)
    st = Settings(mode="red", lam=1.0, max_iter=max_iter,
                  denoiser=lambda volume: np.zeros_like(volume), **settings)
    out = []

    def keep(state, record):
        halves = state.red_maps[:, 0].astype(np.float64)
        curve = fsc(halves[0], halves[1])
        target = fsc_target(truth, curve)
        for h in (0, 1):
            out.append((halves[h], target, curve,
                        dict(iteration=record["iteration"], half=h + 1,
                             resolution=record["resolution"],
                             current_size=record["current_size"])))
    refine(particles, initial_state(particles, truth, st), st, after_iteration=keep)
    return out
