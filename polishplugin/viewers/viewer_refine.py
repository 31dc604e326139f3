"""Scipion viewer of ProtPolishRefine: FSC of the half maps (and against the true map when the
run names one), resolution and lambda per iteration, central slices of the starting and refined
maps and of each half's x~ = B / K before and after the denoiser (RED / CW-RED), and the angular
error against the true poses when the run names particles with them."""
import os

import numpy as np
from pyworkflow.gui.plotter import Plotter
from pyworkflow.protocol.params import LabelParam
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..figures import jobs as figures
from ..figures import plots
from ..protocols import ProtPolishRefine


class ProtPolishRefineViewer(ProtocolViewer):
    """Plots of a denoiser-regularised refinement run."""
    _label = "viewer denoiser-regularised refinement"
    _targets = [ProtPolishRefine]
    _environments = [DESKTOP_TKINTER]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("showFsc", LabelParam, label="FSC (half maps; vs the true map if given)")
        form.addParam("showHistory", LabelParam, label="Resolution and lambda per iteration")
        form.addParam("showSlices", LabelParam, label="Central slices: start, half map, final")
        form.addParam("showDenoising", LabelParam,
                      label="Central slices before/after the denoiser (RED / CW-RED)")
        form.addParam("showAngularError", LabelParam,
                      label="Angular error (when particles with true poses are given)")

    def _getVisualizeDict(self):
        return {"showFsc": self._showFsc, "showHistory": self._showHistory,
                "showSlices": self._showSlices, "showDenoising": self._showDenoising,
                "showAngularError": self._showAngularError}

    def _refineDir(self):
        return self.protocol._getExtraPath("refine")

    def _done(self):
        return os.path.exists(os.path.join(self._refineDir(), "fsc.star"))

    def _show(self, fig):
        return [Plotter(figure=fig)]

    def _showFsc(self, param=None):
        if not self._done():
            return []
        truth = None
        vol = self.protocol.inputTruthVolume.get()
        if vol is not None:
            from ..io.mrc import read_mrc
            from ..protocols.protocol_refine import volume_file
            truth = read_mrc(volume_file(vol))[0]
        return self._show(figures.refine_fsc_figure(self._refineDir(), truth))

    def _showHistory(self, param=None):
        if not os.path.exists(os.path.join(self._refineDir(), "iterations.star")):
            return []
        return self._show(figures.refine_history_figure(self._refineDir()))

    def _showSlices(self, param=None):
        if not self._done():
            return []
        from ..io.mrc import read_mrc
        start = self.protocol._inputDir("reference.mrc")
        start = read_mrc(start)[0] if os.path.exists(start) else None
        return self._show(figures.refine_slices_figure(self._refineDir(), start))

    def _showDenoising(self, param=None):
        if not os.path.exists(os.path.join(self._refineDir(), "refine.json")):
            return []
        fig = figures.refine_denoising_figure(self._refineDir())
        if fig is None:
            return [self.infoMessage("No denoiser ran in this run (mode tikhonov, or lambda 0 "
                                     "in every iteration so far).", "Before/after denoising")]
        return self._show(fig)

    def _showAngularError(self, param=None):
        truth = self.protocol.inputTruthParticles.get()
        if truth is None or not self._done():
            return []
        return self._show(plots.angular_error_figure(
            figures.refine_angular_errors(self._refineDir(), self.trueAngles(truth)),
            "Refined vs true orientations"))

    def trueAngles(self, truth):
        """(N, 3) RELION angles (radians) of ``truth``'s particle with the id of each converted
        particle (row of particles.star); NaN where ``truth`` has no such particle."""
        from ..io.convert import matrix_to_relion
        px = truth.getSamplingRate()
        by_id = {p.getObjId(): np.deg2rad(matrix_to_relion(p.getTransform().getMatrix(), px)[0])
                 for p in truth.iterItems()}
        return np.array([by_id.get(i, np.full(3, np.nan)) for i in self.protocol.convertedIds()])
