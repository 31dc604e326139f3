"""Denoiser-regularised 3D refinement (Kimanius et al. 2021): the M-step pieces on the padded
Fourier grid of :class:`polishplugin.core.reconstruct.Backprojector` (B and K of eq. 9, tau^2 of
eq. 12, the Tikhonov update of eq. 11 and the RED update of eq. 17), the CW-RED confidence weight
(§4.3), denoisers behind one small interface, and the RELION-convention conversions between that
grid and a real-space map (the ``--external_reconstruct`` hook)."""
