"""Scipion viewer of ProtPolishRefine: FSC of the half maps (with a mask also their masked,
phase-randomised and corrected FSC; against the true map when the run names one), resolution
and lambda per iteration, central slices of the starting and refined maps and of each half's
x~ = B / K before and after the denoiser (RED / CW-RED), and the angular error against the true
poses when the run names particles with them."""
import os

import numpy as np

from ..figures import jobs as figures
from ..figures import plots
from ..protocols import ProtPolishRefine
from .figure_viewer import FigureViewer


class ProtPolishRefineViewer(FigureViewer):
    """Plots of a denoiser-regularised refinement run."""
    _label = "viewer denoiser-regularised refinement"
    _targets = [ProtPolishRefine]
    ENTRIES = (("showFsc", "FSC (half maps; masked and corrected with a mask; vs the true map "
                            "if given)"),
               ("showHistory", "Resolution and lambda per iteration"),
               ("showSlices", "Central slices: start, half map, final"),
               ("showDenoising", "Central slices before/after the denoiser (RED / CW-RED)"),
               ("showAngularError", "Angular error (when particles with true poses are given)"))

    def _refineDir(self):
        return self.protocol._getExtraPath("refine")

    def _figures(self, key):
        d = self._refineDir()
        if key == "showHistory":
            ok = os.path.exists(os.path.join(d, "iterations.star"))
            return [figures.refine_history_figure(d)] if ok else []
        if not os.path.exists(os.path.join(d, "fsc.star")):     # not finished
            return []
        from ..io.mrc import read_mrc
        if key == "showFsc":
            vol = self.protocol.inputTruthVolume.get()
            if vol is not None:
                from ..protocols.protocol_refine import volume_file
                vol = read_mrc(volume_file(vol))[0]
            return [figures.refine_fsc_figure(d, vol)]
        if key == "showSlices":
            start = self.protocol._inputDir("reference.mrc")
            start = read_mrc(start)[0] if os.path.exists(start) else None
            return [figures.refine_slices_figure(d, start)]
        if key == "showDenoising":     # none when no denoiser ran (tikhonov, or lambda 0)
            return [figures.refine_denoising_figure(d)]
        truth = self.protocol.inputTruthParticles.get()
        if truth is None:
            return []
        return [plots.angular_error_figure(figures.refine_angular_errors(d, self.trueAngles(truth)),
                                           "Refined vs true orientations")]

    def trueAngles(self, truth):
        """(N, 3) RELION angles (radians) of ``truth``'s particle with the id of each converted
        particle (row of particles.star); NaN where ``truth`` has no such particle."""
        from ..io.convert import matrix_to_relion
        px = truth.getSamplingRate()
        by_id = {p.getObjId(): np.deg2rad(matrix_to_relion(p.getTransform().getMatrix(), px)[0])
                 for p in truth.iterItems()}
        return np.array([by_id.get(i, np.full(3, np.nan)) for i in self.protocol.convertedIds()])
