"""Scipion viewer of ProtPolishTrain: the per-restart optima with their spread (both methods;
for the evidence method each optimum's Laplace width too) and, for TCC runs, the TCC over the
evaluations, the optimiser path in log-sigma space (2-D projections) and TCC slices around each
optimum (flatness probes)."""
from ..protocols import ProtPolishTrain
from ..figures import jobs as figures
from .figure_viewer import FigureViewer


class ProtPolishTrainViewer(FigureViewer):
    """Figures of a motion-parameter training run."""
    _label = "viewer train motion parameters"
    _targets = [ProtPolishTrain]
    ENTRIES = (("showOptima", "Optimum of each restart (spread, widths)"),
               ("showTcc", "TCC of every evaluation (TCC method)"),
               ("showPath", "Optimiser path, log sigmas (TCC method)"),
               ("showSlices", "TCC around the optimum, flatness (TCC method)"))
    _FIGURES = {"showTcc": figures.train_tcc_figure, "showPath": figures.train_path_figure,
                "showSlices": figures.train_slices_figure,
                "showOptima": figures.train_optima_figure}

    def _trainDir(self):
        return self.protocol._getExtraPath("train")

    def showEntry(self, key):
        method = figures.train_method(self._trainDir())
        if key != "showOptima" and method != "tcc":
            return [self.infoMessage("This run trained with the %s method, which evaluates no "
                                     "TCC: see 'Optimum of each restart'." % method,
                                     "No TCC figures")]
        return super().showEntry(key)

    def _figures(self, key):
        return [self._FIGURES[key](self._trainDir())]
