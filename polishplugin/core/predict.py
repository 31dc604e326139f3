"""Reference predictions of particle images for polishing (seed zivanov2019 §2.1.3: V_p is the
projection of the particle's own half-set map at its refined orientation, times its CTF).

Half sets stay independent: ``opposite=False`` projects each particle's own half map (motion
fit), ``opposite=True`` the other one (FCC / parameter evaluation, eq. 19-20). As in RELION's
ReferenceMap the half maps are multiplied by the solvent mask before projection.
"""
import numpy as np

from .ctf import CtfParams, ctf_2d
from .projector import Projector


def make_projectors(half1, half2, mask=None, pad=2, backend=None, r_max=0.5, half=True,
                    out=None):
    """{1: Projector, 2: Projector} of the (masked) half maps, padding ``pad`` (RELION --pad 2),
    slices interpolated by ``backend`` (None: the default), frequencies up to ``r_max`` cycles
    per px (default Nyquist); ``half``: only half of each transform kept (see Projector);
    ``out``: {1: array, 2: array} that receive the transforms (:func:`projector_shape`)."""
    h1, h2 = np.asarray(half1), np.asarray(half2)
    if h1.shape != h2.shape:
        raise ValueError("half maps differ in shape: %s vs %s" % (h1.shape, h2.shape))
    m = None if mask is None else np.asarray(mask)
    if m is not None and m.shape != h1.shape:
        raise ValueError("mask %s does not match the half maps %s" % (m.shape, h1.shape))
    projectors = {}
    for h, v in ((1, h1), (2, h2)):
        # one masked copy alive at a time, corrected in place: the setup's peak (BENCHMARKS.md,
        # "Side by side at the large end")
        projectors[h] = Projector(v if m is None else v * m, pad=pad, r_max=r_max,
                                  backend=backend, half=half, out=None if out is None else out[h],
                                  overwrite=m is not None)
    return projectors


def projector_shape(n, pad=2, r_max=0.5, half=True):
    """Shape of the (complex64) transform of each of :func:`make_projectors`' projectors for
    n^3 maps."""
    p = Projector.__new__(Projector)
    p._layout(n, pad, r_max, None, half)
    return p.shape


def projectors_around(transforms, n, pad=2, backend=None, r_max=0.5, half=True):
    """The projectors of :func:`make_projectors` (the same arguments) around the transforms it
    wrote into ``out`` (e.g. in another process, into memory both share)."""
    return {h: Projector.around(transforms[h], n, pad=pad, r_max=r_max, backend=backend,
                                half=half) for h in (1, 2)}


def _ctf_array(ctf, n, pixel_size, crop=None):
    from .motion.observation import crop_plane
    if isinstance(ctf, CtfParams):
        return ctf_2d(ctf, n, pixel_size, crop=crop)
    a = np.asarray(ctf)
    if a.shape != (n, n):
        raise ValueError("CTF array of shape %s, expected (%d, %d)" % (a.shape, n, n))
    return a if crop is None else crop_plane(a, crop)


def predict_particles(projectors, angles, half_sets, ctfs, n, pixel_size, opposite=False,
                      chunk=8, crop=None, dtype=np.complex128):
    """Predictions (P, n, n) ``dtype`` (default complex128): fft2 (unshifted layout) of the projection of each particle's
    half map (``opposite``: the other half; "both": a pair (own, opposite), each particle's CTF
    computed once for the two) at ``angles`` (P, 3) (rot, tilt, psi, radians), times its
    CTF (CtfParams or an (n, n) array in the same layout); the particle centre is at pixel n//2.
    ``n`` may exceed the map box (zero-padded projection); ``chunk``: particles projected at once;
    ``crop``: keep only the frequencies of a crop x crop grid
    (:func:`polishplugin.core.motion.observation.crop_plane`), (P, crop, crop)."""
    m = n if crop is None else int(crop)
    angles = np.atleast_2d(np.asarray(angles, dtype=np.float64))
    half_sets = np.asarray(half_sets).astype(int).ravel()
    P = len(angles)
    if len(half_sets) != P or len(ctfs) != P:
        raise ValueError("%d angles, %d half sets and %d CTFs" % (P, len(half_sets), len(ctfs)))
    if not np.all(np.isin(half_sets, (1, 2))):
        raise ValueError("half sets must be 1 or 2, got %s" % np.unique(half_sets))
    if opposite not in (False, True, "both"):
        raise ValueError("opposite must be False, True or 'both', got %r" % (opposite,))
    # (output, half map of each particle) for each prediction asked for
    wanted = [(np.empty((P, m, m), dtype=dtype), 3 - half_sets if opposite is True else half_sets)]
    if opposite == "both":
        wanted.append((np.empty((P, m, m), dtype=dtype), 3 - half_sets))
    for h in (1, 2):
        idx = np.flatnonzero(half_sets == h)
        # a few particles at a time: the projections stay small (no particle-sized temporary)
        for k0 in range(0, idx.size, chunk):
            ids = idx[k0:k0 + chunk]
            projs = [projectors[use[ids[0]]].project_many(angles[ids], shape=(n, n), crop=m)
                     for _, use in wanted]
            for j, p in enumerate(ids):
                ctf = _ctf_array(ctfs[p], n, pixel_size, m)
                for (out, _), proj in zip(wanted, projs):
                    np.multiply(proj[j], ctf, out=out[p])
    return (wanted[0][0], wanted[1][0]) if opposite == "both" else wanted[0][0]
