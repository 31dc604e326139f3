"""Scipion viewer of ProtPolishBayesian: MAP tracks over each micrograph (motion scaled, start
marked, initial tracks dashed), browsing micrograph by micrograph (in streaming, pass by pass: a
late pass shows its own particles); and, when the run wrote shiny particles, the FCC with its
fit, B_f and C_f per frame and the frame weights of that step, or of the newest running table in
streaming (Zivanov 2019 Fig. 2 a-d)."""
import os

import pyworkflow.protocol.params as params

from ..protocols import ProtPolishBayesian
from ..figures import jobs as figures
from .figure_viewer import FigureViewer


class ProtPolishBayesianViewer(FigureViewer):
    """Per-micrograph trajectories of a Bayesian polishing run."""
    _label = "viewer bayesian polishing"
    _targets = [ProtPolishBayesian]
    ENTRIES = (("showTracks", "Tracks over the micrograph"),
               ("showFcc", "Shiny: FCC, fit and residual"),
               ("showBfactors", "Shiny: B-factors and scales"),
               ("showWeights", "Shiny: frame weights"))
    SHINY_FIGURES = {"showFcc": "fcc_fit", "showBfactors": "bfactors", "showWeights": "weights"}

    def _polishDirs(self):
        """The polish program's output folders: one, or one per micrograph in streaming."""
        stream = self.protocol._getExtraPath("stream")
        if os.path.isdir(stream):
            return [os.path.join(stream, d, "polish") for d in sorted(os.listdir(stream))]
        return [self.protocol._getExtraPath("polish")]

    def _micrographs(self):
        """[(polish folder, micrograph name)] with finished tracks."""
        return [(d, name) for d in self._polishDirs() for name in figures.polished_micrographs(d)]

    def _defineChoices(self, form):
        names = self._micrographs() if self.protocol else []
        form.addParam("micrograph", params.IntParam, default=1,
                      validators=[params.Range(1, max(len(names), 1))],
                      label="Micrograph (1-%d)" % len(names))
        form.addParam("scale", params.FloatParam, default=20.0, label="Motion magnification")

    def _shinyDir(self):
        """Where the run's B-factor fit is: its shiny step, or in streaming the newest fit of
        the running table."""
        newest = getattr(self.protocol, "newestTableDir", lambda: None)()
        return newest or self.protocol._getExtraPath("shiny")

    def _figures(self, key):
        if key == "showTracks":
            names = self._micrographs()
            if not names:
                return []
            folder, name = names[min(self.micrograph.get(), len(names)) - 1]
            return [figures.polish_tracks_figure(folder, name, self.scale.get())]
        # a figure of the run's B-factor fit (none when it wrote no shiny particles)
        shiny = self._shinyDir()
        if not os.path.exists(os.path.join(shiny, "bfactors.json")):
            return []
        return [dict(figures.bfactor_figure_list(shiny)).get(self.SHINY_FIGURES[key])]
