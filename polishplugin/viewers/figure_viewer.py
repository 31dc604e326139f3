"""What every viewer of this plugin shares: one form section of entries, each showing figures."""
import pyworkflow.protocol.params as params
from pyworkflow.gui.plotter import Plotter
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer


class FigureViewer(ProtocolViewer):
    """A viewer whose form lists ``ENTRIES`` ((key, label) pairs, in order) after the
    parameters of :meth:`_defineChoices`; entry ``key`` shows the matplotlib figures that
    :meth:`_figures` returns (none while there is nothing to show)."""
    _environments = [DESKTOP_TKINTER]
    ENTRIES = ()

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        self._defineChoices(form)
        for key, label in self.ENTRIES:
            form.addParam(key, params.LabelParam, label=label)

    def _defineChoices(self, form):
        """Parameters above the entries (which micrograph, a magnification...); none here."""

    def _getVisualizeDict(self):
        return {key: (lambda param=None, k=key: self.showEntry(k)) for key, _ in self.ENTRIES}

    def showEntry(self, key):
        """Plotters of the figures of entry ``key``."""
        return [Plotter(figure=fig) for fig in self._figures(key) if fig is not None]

    def _figures(self, key):
        raise NotImplementedError
