"""Scipion viewer of ProtPolishSimulate: a frame sum with the true particle tracks (scaled),
the whole-frame motion, and the volumes with their FSC."""
import pyworkflow.protocol.params as params
from pyworkflow.gui.plotter import Plotter
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..protocols import ProtPolishSimulate
from ..figures import jobs as figures


class ProtPolishSimulateViewer(ProtocolViewer):
    """Browse the micrographs of a simulated data set and its ground truth."""
    _label = "viewer simulate dataset"
    _targets = [ProtPolishSimulate]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        n = self.protocol.numberOfMicrographs.get() if self.protocol else 1
        form.addParam("micrograph", params.IntParam, default=1,
                      validators=[params.Range(1, max(n, 1))],
                      label="Micrograph (1-%d)" % n)
        form.addParam("scale", params.FloatParam, default=20.0, label="Motion magnification")
        form.addParam("showTracks", params.LabelParam, label="True tracks over the micrograph")
        form.addParam("showGlobal", params.LabelParam, label="Whole-frame motion")
        form.addParam("showVolumes", params.LabelParam, label="Volumes and half-map FSC")

    def _getVisualizeDict(self):
        return {"showTracks": self._showTracks, "showGlobal": self._showGlobal,
                "showVolumes": self._showVolumes}

    def _name(self):
        info = figures.simulation_info(self.protocol._getExtraPath())
        return info["micrographs"][self.micrograph.get() - 1]

    def _showTracks(self, param=None):
        return [Plotter(figure=figures.simulated_tracks_figure(
            self.protocol._getExtraPath(), self._name(), self.scale.get()))]

    def _showGlobal(self, param=None):
        return [Plotter(figure=figures.simulated_global_figure(self.protocol._getExtraPath(),
                                                               self._name()))]

    def _showVolumes(self, param=None):
        return [Plotter(figure=fig) for _, fig in
                figures.simulated_volume_figures(self.protocol._getExtraPath())]
