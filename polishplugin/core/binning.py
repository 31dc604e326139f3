"""Average-binning of large images (micrograph sums kept for display)."""
import numpy as np


def binned(image, max_px=1024):
    """Average-bin ``image`` so that its larger side is at most ``max_px``; returns
    (image, bin factor)."""
    b = max(1, int(np.ceil(max(image.shape) / max_px)))
    if b == 1:
        return image, 1
    ny, nx = (image.shape[0] // b) * b, (image.shape[1] // b) * b
    return image[:ny, :nx].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3)), b
