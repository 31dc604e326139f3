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
  weights shipped in ``weights/unet3d.npz`` (model card: ``weights/MODEL_CARD.md``) or given.
"""
import numpy as np

DENOISERS = ("identity", "tv", "unet")
TV_WEIGHT = 0.1


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


def _unet(weights):
    from . import unet
    model = unet.load_unet(weights or unet.DEFAULT_WEIGHTS)

    def f(volume):
        return standardised(lambda v: unet.apply_unet(model, v), volume)
    return f


def get_denoiser(name, tv_weight=TV_WEIGHT, unet_weights=None):
    """The denoiser called ``name`` (one of :data:`DENOISERS`); ``unet_weights``: a weights file
    of ``programs/train_denoiser.py`` instead of the shipped one."""
    if name == "identity":
        return lambda volume: standardised(lambda v: v, volume)
    if name == "tv":
        if tv_weight <= 0:
            raise ValueError("TV weight must be positive, got %g" % tv_weight)
        return _tv(tv_weight)
    if name == "unet":
        return _unet(unet_weights)
    raise ValueError("unknown denoiser %r; available: %s" % (name, ", ".join(DENOISERS)))
