"""Scipion viewer of ProtPolishTrain: TCC over the evaluations, the optimiser path in log-sigma
space (2-D projections), TCC slices around each optimum (flatness probes) and the per-restart
optima with their spread."""
from ..protocols import ProtPolishTrain
from ..figures import jobs as figures
from .figure_viewer import FigureViewer


class ProtPolishTrainViewer(FigureViewer):
    """Figures of a motion-parameter training run."""
    _label = "viewer train motion parameters"
    _targets = [ProtPolishTrain]
    ENTRIES = (("showTcc", "TCC of every evaluation"),
               ("showPath", "Optimiser path (log sigmas)"),
               ("showSlices", "TCC around the optimum (flatness)"),
               ("showOptima", "Optimum of each restart"))
    _FIGURES = {"showTcc": figures.train_tcc_figure, "showPath": figures.train_path_figure,
                "showSlices": figures.train_slices_figure,
                "showOptima": figures.train_optima_figure}

    def _figures(self, key):
        return [self._FIGURES[key](self.protocol._getExtraPath("train"))]
