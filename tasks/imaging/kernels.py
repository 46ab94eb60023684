"""Blur kernels of Real-ESRGAN's degradation model, as plain normalised numpy arrays.

Shapes follow BasicSR's `basicsr/data/degradations.py` (Real-ESRGAN's data synthesis): the
bivariate Gaussian, its generalized form `exp(-0.5 * q**beta)` and the plateau `1 / (1 + q**beta)`,
where `q = x' inv(S) x` with `S` the rotated covariance of sigmas (sigma_x, sigma_y) at angle
theta; and the circular low-pass ("2-D sinc", the jinc `cutoff * J1(cutoff r) / (2 pi r)`) used
both as a blur and as the final ringing/overshoot filter. Every kernel is an odd (size, size)
array centred on the middle pixel and sums to 1.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """`x' inv(S) x` on the (size, size) grid centred at 0, S = R diag(sx^2, sy^2) R'."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    inverse = np.linalg.inv(covariance)
    r = np.arange(size) - size // 2
    grid = np.stack(np.meshgrid(r, r, indexing="xy"), axis=-1)  # (y, x, [x, y])
    return np.einsum("...i,ij,...j->...", grid, inverse, grid)


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A normalised (size, size) bivariate Gaussian, rotated by theta (radians)."""
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """`exp(-0.5 q^beta)`: beta = 1 is the Gaussian, beta > 1 a flatter top with lighter tails,
    beta < 1 a sharper peak with heavier tails (BasicSR `bivariate_generalized_Gaussian`)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """`1 / (1 + q^beta)`: a flat top and polynomial (heavy) tails (BasicSR `bivariate_plateau`)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    return _normalised(1.0 / (1.0 + _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Circularly symmetric ideal low-pass, truncated to (size, size): passes spatial frequencies
    below `cutoff` (radians per pixel, pi = Nyquist) and removes those above, with ringing
    (BasicSR `circular_lowpass_kernel`)."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    if not 0 < cutoff <= np.pi:
        raise ValueError(f"cutoff must be in (0, pi], got {cutoff}")
    r_axis = np.arange(size) - size // 2
    r = np.hypot(*np.meshgrid(r_axis, r_axis, indexing="xy"))
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
    return _normalised(kernel)
