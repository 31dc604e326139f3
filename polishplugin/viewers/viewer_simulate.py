"""Scipion viewer of ProtPolishSimulate: a frame sum with the true particle tracks (scaled),
the whole-frame motion, and the volumes with their FSC."""
import pyworkflow.protocol.params as params

from ..protocols import ProtPolishSimulate
from ..figures import jobs as figures
from .figure_viewer import FigureViewer


class ProtPolishSimulateViewer(FigureViewer):
    """Browse the micrographs of a simulated data set and its ground truth."""
    _label = "viewer simulate dataset"
    _targets = [ProtPolishSimulate]
    ENTRIES = (("showTracks", "True tracks over the micrograph"),
               ("showGlobal", "Whole-frame motion"),
               ("showVolumes", "Volumes and half-map FSC"))

    def _defineChoices(self, form):
        n = self.protocol.numberOfMicrographs.get() if self.protocol else 1
        form.addParam("micrograph", params.IntParam, default=1,
                      validators=[params.Range(1, max(n, 1))],
                      label="Micrograph (1-%d)" % n)
        form.addParam("scale", params.FloatParam, default=20.0, label="Motion magnification")

    def _figures(self, key):
        out = self.protocol._getExtraPath()
        if key == "showVolumes":
            return [fig for _, fig in figures.simulated_volume_figures(out)]
        name = figures.simulation_info(out)["micrographs"][self.micrograph.get() - 1]
        if key == "showTracks":
            return [figures.simulated_tracks_figure(out, name, self.scale.get())]
        return [figures.simulated_global_figure(out, name)]
