"""The one place where motion-prior parameters change units.

Paper units (seed zivanov2019, Table 2): sigma_vel and sigma_acc in A per (e-/A^2) of exposure,
sigma_div in A. The GP works in pixels and frames: a frame carries ``dose_per_frame`` e-/A^2,
so per-frame velocity and acceleration standard deviations in pixels are
``sigma * dose_per_frame / pixel_size`` and the correlation length is ``sigma_div / pixel_size``
(the pixel size of the particle coordinates).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class MotionParams:
    sigma_vel: float   # A / (e-/A^2)
    sigma_div: float   # A
    sigma_acc: float   # A / (e-/A^2); <= 0 disables the acceleration term

    def to_pixels(self, dose_per_frame, pixel_size):
        """Return (sigma_vel_px, sigma_div_px, sigma_acc_px) per frame in pixels."""
        if dose_per_frame <= 0 or pixel_size <= 0:
            raise ValueError("dose per frame (%g) and pixel size (%g) must be positive"
                             % (dose_per_frame, pixel_size))
        return (self.sigma_vel * dose_per_frame / pixel_size,
                self.sigma_div / pixel_size,
                self.sigma_acc * dose_per_frame / pixel_size if self.sigma_acc > 0 else -1.0)
