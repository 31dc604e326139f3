"""Scipion viewer of ProtPolishBayesian: MAP tracks over each micrograph (motion scaled, start
marked, initial tracks dashed), browsing micrograph by micrograph."""
import pyworkflow.protocol.params as params
from pyworkflow.gui.plotter import Plotter
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..protocols import ProtPolishBayesian
from ..figures import jobs as figures


class ProtPolishBayesianViewer(ProtocolViewer):
    """Per-micrograph trajectories of a Bayesian polishing run."""
    _label = "viewer bayesian polishing"
    _targets = [ProtPolishBayesian]
    _environments = [DESKTOP_TKINTER]

    def _polishDir(self):
        return self.protocol._getExtraPath("polish")

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        names = figures.polished_micrographs(self._polishDir()) if self.protocol else []
        form.addParam("micrograph", params.IntParam, default=1,
                      validators=[params.Range(1, max(len(names), 1))],
                      label="Micrograph (1-%d)" % len(names))
        form.addParam("scale", params.FloatParam, default=20.0, label="Motion magnification")
        form.addParam("showTracks", params.LabelParam, label="Tracks over the micrograph")

    def _getVisualizeDict(self):
        return {"showTracks": self._showTracks}

    def _showTracks(self, param=None):
        names = figures.polished_micrographs(self._polishDir())
        if not names:
            return []
        name = names[min(self.micrograph.get(), len(names)) - 1]
        return [Plotter(figure=figures.polish_tracks_figure(self._polishDir(), name,
                                                            self.scale.get()))]
