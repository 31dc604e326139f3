"""Scipion viewer of ProtPolishBFactors: FCC, its fit and residual, B_f and C_f per frame, the
frame weights (Zivanov 2019 Fig. 2 a-d) and the FSC of a reconstruction when present."""
import pyworkflow.protocol.params as params
from pyworkflow.gui.plotter import Plotter
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..protocols import ProtPolishBFactors
from ..figures import jobs as figures


class ProtPolishBFactorsViewer(ProtocolViewer):
    """Per-frame B-factors, FCC and weights of a B-factor weighting run."""
    _label = "viewer B-factor weighting"
    _targets = [ProtPolishBFactors]
    _environments = [DESKTOP_TKINTER]

    FIGURES = {"showFcc": "fcc_fit", "showBfactors": "bfactors", "showWeights": "weights",
               "showFsc": "fsc"}

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showFcc", params.LabelParam, label="FCC, fit and residual (Fig. 2 a-b)")
        form.addParam("showBfactors", params.LabelParam, label="B-factors and scales (Fig. 2 c)")
        form.addParam("showWeights", params.LabelParam, label="Frame weights (Fig. 2 d)")
        form.addParam("showFsc", params.LabelParam, label="FSC (if reconstructed)")

    def _getVisualizeDict(self):
        return {key: (lambda param=None, k=key: self._show(k)) for key in self.FIGURES}

    def _show(self, key):
        figs = dict(figures.bfactor_figure_list(self.protocol._getExtraPath("bfactors")))
        fig = figs.get(self.FIGURES[key])
        return [Plotter(figure=fig)] if fig is not None else []
