"""Per-micrograph file work shared by the movie programs (polish, train, bfactors)."""
import numpy as np

from ..core.defects import detect_defects
from ..io.movies import Movie, read_gain


def micrograph_defects(mic, first, last, disabled=False, extra=None, raw_sum=None):
    """Defect mask (ny, nx) of a micrograph for frames [first, last): hot and dead pixels found
    from the raw counts (:func:`polishplugin.core.defects.detect_defects`), those its motion
    correction listed and ``extra`` (a user's defect map). With ``disabled`` only the pixels of
    zero gain, or None without a gain reference. ``raw_sum`` saves reading the movie again."""
    gain = read_gain(mic.gain) if mic.gain else None
    if disabled:
        return None if gain is None else gain == 0
    if raw_sum is None:
        with Movie(mic.movie) as raw:  # raw counts: the Poisson test needs them
            raw_sum = raw.sum(first, last)
    known = np.zeros(mic.shape, dtype=bool) if extra is None else np.array(extra, dtype=bool)
    if len(mic.hot_pixels):
        hp = np.rint(mic.hot_pixels).astype(int)
        ok = (hp[:, 0] >= 0) & (hp[:, 1] >= 0) & (hp[:, 0] < mic.shape[1]) & \
            (hp[:, 1] < mic.shape[0])
        known[hp[ok, 1], hp[ok, 0]] = True
    return detect_defects(raw_sum, last - first, gain, known=known)
