"""The enhancers compared side by side: classical baselines and learned SR models, one signature.

Every enhancer is `enhance(lr, scale) -> hr`: `lr` an (h, w, 3) float RGB image in [0, 1], the
result an (h*scale, w*scale, 3) float RGB image in [0, 1]. Each call is stateless (nothing is kept
between images), so enhancers are safe to call from several threads at once.

Classical baselines all start from MATLAB-compatible bicubic (`tasks.resize.imresize`, the
resize published SR figures use) and touch only the luma (BT.601 Y as MATLAB), keeping the
bicubic chroma, so they never shift colours. Adding one: a function and a `register_enhancer`
call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage import exposure, filters, restoration
from torch import nn

from catalog_enhance.tasks.inference.tiling import Tiling, super_resolve
from catalog_enhance.tasks.imaging.metrics import quantize
from catalog_enhance.tasks.imaging.resize import imresize, rgb_to_ycbcr, ycbcr_to_rgb

Enhancer = Callable[[np.ndarray, int], np.ndarray]

# Luma range of MATLAB's BT.601 YCbCr, as a fraction of 255.
Y_MIN, Y_MAX = 16.0 / 255.0, 235.0 / 255.0

_ENHANCERS: dict[str, Enhancer] = {}


def register_enhancer(name: str, fn: Enhancer) -> Enhancer:
    """Add a named enhancer; a duplicate name is an error (two baselines must not shadow each other)."""
    if name in _ENHANCERS:
        raise ValueError(f"enhancer {name!r} is already registered")
    _ENHANCERS[name] = fn
    return fn


def get_enhancer(name: str) -> Enhancer:
    try:
        return _ENHANCERS[name]
    except KeyError:
        raise KeyError(f"unknown enhancer {name!r}; known: {', '.join(sorted(_ENHANCERS))}") from None


def enhancer_names() -> list[str]:
    """Registered names, in registration order (bicubic, the reference, first)."""
    return list(_ENHANCERS)


def classical_enhancers() -> dict[str, Enhancer]:
    """A fresh name -> enhancer dict of every registered baseline (add models to it freely)."""
    return dict(_ENHANCERS)


def _check_lr(lr: np.ndarray, scale: int) -> np.ndarray:
    lr = np.asarray(lr)
    if lr.ndim != 3 or lr.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {lr.shape}")
    if not np.issubdtype(lr.dtype, np.floating):
        raise TypeError(f"expected a float RGB image in [0, 1], got dtype {lr.dtype}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return lr


# -- classical baselines ---------------------------------------------------------------------------


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB `imresize(lr, scale)` (bicubic, a = -0.5), clipped to [0, 1]."""
    lr = _check_lr(lr, scale)
    return np.clip(imresize(lr.astype(np.float64), scale), 0.0, 1.0)


def _on_luma(transform: Callable[[np.ndarray], np.ndarray]) -> Enhancer:
    """Bicubic, then `transform` on the luma only (values in [Y_MIN, Y_MAX]); chroma from bicubic."""

    def enhance(lr: np.ndarray, scale: int) -> np.ndarray:
        ycbcr = rgb_to_ycbcr(bicubic(lr, scale))
        ycbcr[..., 0] = np.clip(transform(ycbcr[..., 0]), Y_MIN, Y_MAX)
        return np.clip(ycbcr_to_rgb(ycbcr), 0.0, 1.0)

    return enhance


def _unsharp(y: np.ndarray) -> np.ndarray:
    # A mild, common setting: Gaussian radius 1 px, half the detail added back.
    return filters.unsharp_mask(y, radius=1.0, amount=0.5, preserve_range=True)


def _histeq(y: np.ndarray) -> np.ndarray:
    # equalize_hist maps to [0, 1]; map back onto the luma range so black/white stay legal.
    return Y_MIN + (Y_MAX - Y_MIN) * exposure.equalize_hist(y)


def _denoise(y: np.ndarray) -> np.ndarray:
    # Mild total-variation denoising (weight for [0, 1] data; skimage's default 0.1 is strong).
    return restoration.denoise_tv_chambolle(y, weight=0.02)


def denoise_unsharp(weight: float = 0.05, amount: float = 0.5) -> Enhancer:
    """The classical restoration pipeline: bicubic, TV denoising of the luma (`weight`, for
    [0, 1] data), then an unsharp mask (radius 1 px, `amount`) to give back the edges denoising
    softened. The registered default is a middle setting; `bench/restore_quality.py` tunes both
    on validation pairs, the fair classical opponent of a restoration model."""
    def transform(y: np.ndarray) -> np.ndarray:
        smooth = restoration.denoise_tv_chambolle(y, weight=weight) if weight > 0 else y
        return filters.unsharp_mask(smooth, radius=1.0, amount=amount, preserve_range=True) if amount > 0 else smooth

    return _on_luma(transform)


register_enhancer("bicubic", bicubic)
register_enhancer("bicubic+unsharp", _on_luma(_unsharp))
register_enhancer("bicubic+histeq", _on_luma(_histeq))
register_enhancer("bicubic+denoise", _on_luma(_denoise))
register_enhancer("bicubic+denoise+unsharp", denoise_unsharp())


# -- learned models ----------------------------------------------------------------------------------


def model_enhancer(
    module: nn.Module,
    scale: int,
    channels: int,
    *,
    tiling: Tiling = Tiling(),
) -> Enhancer:
    """Wrap an SR network as an `Enhancer` that runs exactly the production inference path.

    The call goes through `tasks.inference.tiling.super_resolve` (tiled by ``tiling``, so a large
    photo never has to fit through the network at once; `torch.inference_mode`):
    `module.upsamples_inside` (ESPCN) -> the net gets the LR image, otherwise (SRCNN) its
    MATLAB-bicubic upscale; `channels=1` -> the net sees MATLAB BT.601 Y and Cb/Cr are
    bicubic-upscaled and recombined with the exact inverse (`ycbcr_to_rgb`); `channels=3` -> RGB
    in and out. The LR input is taken as an 8-bit image (as stored pairs and photos are) and the
    result is the 8-bit output as float in [0, 1]. The module is put in eval mode here and only
    read afterwards, so one wrapper may serve concurrent calls.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (luma) or 3 (RGB), got {channels}")
    module.eval()

    def enhance(lr: np.ndarray, call_scale: int) -> np.ndarray:
        lr = _check_lr(lr, call_scale)
        if call_scale != scale:
            raise ValueError(f"this model was trained for x{scale}, asked for x{call_scale}")
        out = super_resolve(quantize(lr), module, scale=scale, channels=channels, tiling=tiling)
        return out.astype(np.float64) / 255.0

    return enhance
