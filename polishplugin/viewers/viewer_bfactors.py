"""Scipion viewer of ProtPolishBFactors: FCC, its fit and residual, B_f and C_f per frame, the
frame weights (Zivanov 2019 Fig. 2 a-d) and the FSC of a reconstruction when present."""
from ..protocols import ProtPolishBFactors
from ..figures import jobs as figures
from .figure_viewer import FigureViewer


class ProtPolishBFactorsViewer(FigureViewer):
    """Per-frame B-factors, FCC and weights of a B-factor weighting run."""
    _label = "viewer B-factor weighting"
    _targets = [ProtPolishBFactors]
    ENTRIES = (("showFcc", "FCC, fit and residual (Fig. 2 a-b)"),
               ("showBfactors", "B-factors and scales (Fig. 2 c)"),
               ("showWeights", "Frame weights (Fig. 2 d)"),
               ("showFsc", "FSC (if reconstructed)"))
    FIGURES = {"showFcc": "fcc_fit", "showBfactors": "bfactors", "showWeights": "weights",
               "showFsc": "fsc"}

    def _figures(self, key):
        figs = dict(figures.bfactor_figure_list(self.protocol._getExtraPath("bfactors")))
        return [figs.get(self.FIGURES[key])]
