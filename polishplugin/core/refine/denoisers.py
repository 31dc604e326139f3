"""Denoisers for RED (Kimanius et al. 2021, eq. 17) behind one interface: a callable taking a
real-space map (n^3) and returning the denoised map of the same shape. Every denoiser runs on the
standardised map (volume mean subtracted, divided by its standard deviation) and its output is
de-standardised, as §3.1 does for the network.

- ``identity``: f(x) = x, so eq. 17 with lambda = 1 returns the unregularised x~ = B / K (a check
  of the plumbing; the Gaussian prior of eq. 11 is the zero prior mean, mode ``tikhonov``);
- ``tv``: total-variation denoising (Chambolle's projection algorithm, scikit-image's
  ``denoise_tv_chambolle``), a classical edge-preserving denoiser; ``weight`` trades fidelity
  for smoothness on the standardised map;
- ``unet``: the learned residual 3D U-Net of §3.1 (:mod:`.unet`; needs the ``unet`` extra, torch),
  weights shipped in ``weights/unet3d.npz`` (model card: ``weights/MODEL_CARD.md``) or given;
  by default (:data:`UNET_TTA`) averaged over the cube's 8 axis flips, each undone on its output
  (test-time augmentation, :func:`group_averaged`; ``tta`` 48 adds the axis permutations, 1 is
  the plain network): trained with random flips and permutations but only nearly equivariant to
  them, the network's average is an exactly flip-equivariant version of it (measured: BENCHMARKS.md,
  "U-Net test-time augmentation in CW-RED"); run in bfloat16 where the CPU has it natively
  (``unet_precision``, :func:`.unet.resolve_precision`).
"""
import itertools

import numpy as np

DENOISERS = ("identity", "tv", "unet")
TV_WEIGHT = 0.1
TTA = (1, 8, 48)
UNET_TTA = 8


def cube_group(order):
    """The ``order`` elements (1, 8 or 48) of the cube's symmetry group as (flipped axes, axis
    permutation): the identity; the 8 axis flips; or those times the 6 axis permutations."""
    if order not in TTA:
        raise ValueError("test-time augmentation must be one of %s, got %r"
                         % (", ".join(map(str, TTA)), order))
    flips = [tuple(a for a in range(3) if bits >> a & 1) for bits in range(8 if order > 1 else 1)]
    perms = list(itertools.permutations(range(3))) if order == 48 else [(0, 1, 2)]
    return [(f, p) for p in perms for f in flips]


def group_averaged(fn, volume, group):
    """(1 / |G|) sum_g g^-1 fn(g x) over ``group`` (:func:`cube_group`), g x = the volume flipped
    along g's axes, then its axes permuted: an average of fn that is exactly G-equivariant
    (test-time augmentation). A one-element group calls fn(x) alone."""
    if len(group) == 1 and group[0] == ((), (0, 1, 2)):
        return fn(volume)
    if any(p != (0, 1, 2) for _, p in group) and len(set(np.shape(volume))) != 1:
        raise ValueError("axis permutations need a cube, got shape %s" % (np.shape(volume),))
    total = None
    for flips, perm in group:
        out = np.asarray(fn(np.ascontiguousarray(np.flip(volume, flips).transpose(perm))),
                         dtype=np.float64)
        out = np.flip(out.transpose(np.argsort(perm)), flips)
        total = out if total is None else total + out
    return total / len(group)


def standardised(fn, volume):
    """sigma fn((x - mu) / sigma) + mu with the volume's mean mu and standard deviation sigma."""
    volume = np.asarray(volume, dtype=np.float64)
    mu, sigma = float(volume.mean()), float(volume.std())
    if sigma == 0:
        return volume.copy()
    return sigma * np.asarray(fn((volume - mu) / sigma), dtype=np.float64) + mu


def _tv(weight):
    from skimage.restoration import denoise_tv_chambolle

    def tv(volume):
        return standardised(lambda v: denoise_tv_chambolle(v, weight=weight), volume)
    return tv


def _unet(weights, tta, precision):
    from . import unet
    model = unet.load_unet(weights or unet.DEFAULT_WEIGHTS, precision)
    group = cube_group(tta)

    def f(volume):
        return standardised(lambda v: group_averaged(lambda u: unet.apply_unet(model, u), v,
                                                     group), volume)
    return f


def default_denoiser():
    """The denoiser used when none is named: the U-Net where torch is installed (the ``unet``
    extra; measured ahead of TV in every refinement against RELION, BENCHMARKS.md "Refinement at
    box 64"), else TV."""
    import importlib.util
    return "unet" if importlib.util.find_spec("torch") is not None else "tv"


def get_denoiser(name, tv_weight=TV_WEIGHT, unet_weights=None, tta=None, unet_precision="auto"):
    """The denoiser called ``name`` (one of :data:`DENOISERS`); ``unet_weights``: a weights file
    of ``programs/train_denoiser.py`` instead of the shipped one; ``tta``: the U-Net averaged
    over that many elements of the cube group (:data:`TTA`, :func:`cube_group`; None:
    :data:`UNET_TTA`); ``unet_precision``: one of :data:`.unet.PRECISIONS`."""
    if tta not in (None, 1) and name != "unet":
        raise ValueError("test-time augmentation is for the unet denoiser, not %r" % name)
    if name == "identity":
        return lambda volume: standardised(lambda v: v, volume)
    if name == "tv":
        if tv_weight <= 0:
            raise ValueError("TV weight must be positive, got %g" % tv_weight)
        return _tv(tv_weight)
    if name == "unet":
        return _unet(unet_weights, UNET_TTA if tta is None else tta, unet_precision)
    raise ValueError("unknown denoiser %r; available: %s" % (name, ", ".join(DENOISERS)))
