"""Super-resolution metrics with the protocol papers report (so our figures compare with theirs).

Protocol, as in SRCNN/ESPCN/EDSR evaluation code:
1. the SR output is quantised like a saved 8-bit image (round, clip to 0..255), the HR too;
2. both are converted to BT.601 luma exactly as MATLAB's `rgb2ycbcr` (`rgb_to_y`: Y in [16, 235]),
   kept unrounded (as BasicSR's `test_y_channel`), on the 0-255 scale;
3. `border` pixels (= the scale) are shaved from every side, since neither bicubic nor most
   networks can reconstruct the edge;
4. PSNR with a peak of 255; SSIM with Wang et al.'s constants (K1 0.01, K2 0.03, L 255), an 11x11
   Gaussian window with sigma 1.5, averaged over the "valid" window positions (as their ssim.m
   and skimage's `structural_similarity(gaussian_weights=True, use_sample_covariance=False)`).
The metric arithmetic itself is torchmetrics' (float64).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from catalog_enhance.tasks.imaging.resize import rgb_to_y

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_KERNEL_SIZE = 11  # torchmetrics' Gaussian window for sigma 1.5 is 2*int(3.5*1.5+0.5)+1 = 11 too
# Identical images have infinite PSNR (MSE 0). Flat crops (a white studio background) reproduced
# exactly would make every mean infinite, so PSNR is capped here; a cap this high is far above
# anything a non-identical 8-bit image can score on a realistic crop.
PSNR_CAP_DB = 100.0


def quantize(img: np.ndarray) -> np.ndarray:
    """An image as it would be saved in 8 bits: uint8 input unchanged, float [0, 1] rounded and
    clipped to 0..255 (as MATLAB's `im2uint8`). Returns uint8; greyscale (H, W) becomes (H, W, 3)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"expected uint8 or float [0, 1] image, got dtype {img.dtype}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image holds NaN or infinite values")
    return np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def y_channel_255(img: np.ndarray, border: int = 0) -> torch.Tensor:
    """Quantised BT.601 (MATLAB) luma on the 0-255 scale, border shaved: a (1, 1, H, W) float64 tensor."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    rgb = torch.from_numpy(quantize(img)).permute(2, 0, 1).to(torch.float64) / 255.0
    y = rgb_to_y(rgb) * 255.0  # (1, H, W)
    h, w = y.shape[-2:]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"image of {h}x{w} is too small to shave a border of {border}")
    return y[None, :, border : h - border, border : w - border]


def _pair(sr: np.ndarray, hr: np.ndarray, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    if np.shape(sr)[:2] != np.shape(hr)[:2]:
        raise ValueError(f"SR {np.shape(sr)} and HR {np.shape(hr)} differ in size")
    return y_channel_255(sr, border), y_channel_255(hr, border)


def psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR (dB) of `sr` against `hr` on quantised MATLAB luma, 0-255, `border` px shaved per side.

    Images: (H, W, 3) float RGB in [0, 1] or uint8 (grey (H, W) accepted). Capped at PSNR_CAP_DB.
    """
    pred, target = _pair(sr, hr, border)
    value = float(peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE))
    return min(value, PSNR_CAP_DB)


def ssim_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM of `sr` against `hr` on quantised MATLAB luma, 0-255, `border` px shaved per side.

    Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, mean over valid window positions, so the
    shaved image must be at least 11 px on each side.
    """
    pred, target = _pair(sr, hr, border)
    h, w = pred.shape[-2:]
    if min(h, w) < SSIM_KERNEL_SIZE:
        raise ValueError(
            f"SSIM needs at least {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE} px after shaving the border, got {h}x{w}"
        )
    # torchmetrics (1.9) reflect-pads and averages the SSIM map over every pixel; Wang et al.'s
    # ssim.m (and skimage) average only where the window fits inside the image ("valid"), which
    # shifts the figure by ~1e-3 on a photo. So take torchmetrics' map and average its valid part.
    _, ssim_map = structural_similarity_index_measure(
        pred,
        target,
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        data_range=DATA_RANGE,
        k1=0.01,
        k2=0.03,
        return_full_image=True,
    )
    pad = SSIM_KERNEL_SIZE // 2
    return float(ssim_map[..., pad : h - pad, pad : w - pad].mean())
