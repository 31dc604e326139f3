"""Scipion viewer of ProtPolishTrain: TCC over the evaluations, the optimiser path in log-sigma
space (2-D projections), TCC slices around each optimum (flatness probes) and the per-restart
optima with their spread."""
from pyworkflow.gui.plotter import Plotter
from pyworkflow.protocol.params import LabelParam
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..protocols import ProtPolishTrain
from ..figures import jobs as figures


class ProtPolishTrainViewer(ProtocolViewer):
    """Figures of a motion-parameter training run."""
    _label = "viewer train motion parameters"
    _targets = [ProtPolishTrain]
    _environments = [DESKTOP_TKINTER]

    _FIGURES = {"showTcc": figures.train_tcc_figure, "showPath": figures.train_path_figure,
                "showSlices": figures.train_slices_figure,
                "showOptima": figures.train_optima_figure}

    def _trainDir(self):
        return self.protocol._getExtraPath("train")

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showTcc", LabelParam, label="TCC of every evaluation")
        form.addParam("showPath", LabelParam, label="Optimiser path (log sigmas)")
        form.addParam("showSlices", LabelParam, label="TCC around the optimum (flatness)")
        form.addParam("showOptima", LabelParam, label="Optimum of each restart")

    def _getVisualizeDict(self):
        return {key: (lambda param=None, k=key: self._show(k)) for key in self._FIGURES}

    def _show(self, key):
        return [Plotter(figure=self._FIGURES[key](self._trainDir()))]
