"""Pixels in, pixels out: a uint8 RGB(A) image to what the network sees and back.

Internal to `tasks.inference` (`tiling` and `translate` both go through `_prepare` and
`_finish`).

Colour
    Y-channel models (``channels=1``) run on MATLAB BT.601 Y; Cb/Cr are upscaled with MATLAB bicubic
    and converted back with the exact inverse matrix. Quantisation is round-and-clip once, at the
    very end, so white stays 255 (not 254) and grey stays grey (#246, #285). Arrays are RGB(A)
    throughout, never BGR (#558).

Alpha (RGBA)
    See `_bleed_colour`: colour under fully transparent pixels is filled from the nearby visible
    colour (an alpha-weighted, i.e. premultiplied, pull-push average), the straight colour is
    super-resolved by the model and alpha by MATLAB bicubic. Transparent areas never come out black
    and a sharpening network cannot make dark fringes (#291, #325).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from catalog_enhance.tasks.imaging.resize import imresize, rgb_to_ycbcr, ycbcr_to_rgb

ImageLike = Image.Image | np.ndarray


def _to_float_hwc(image: ImageLike) -> np.ndarray:
    """uint8 RGB/RGBA pixels as a float32 (H, W, 3|4) array in [0, 1]."""
    if isinstance(image, Image.Image):
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        target = "RGBA" if has_alpha else "RGB"
        array = np.asarray(image if image.mode == target else image.convert(target))
    else:
        array = checked_uint8_image(image)
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"empty image of shape {array.shape}")
    return array.astype(np.float32) / 255.0


def checked_uint8_image(image: np.ndarray) -> np.ndarray:
    """`image` as a uint8 (H, W, 3|4) array, or a ValueError saying what it is instead."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W, 4) RGBA array, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"empty image of shape {array.shape}")
    return array


def _quantise(chw: torch.Tensor) -> np.ndarray:
    """Float (C, H, W) in [0, 1] -> uint8 (H, W, C), only here, once: round half up then saturate,
    as MATLAB's im2uint8 (and `tasks.pairs`), so 254.99997 from float noise is 255, never 254."""
    return chw.mul(255.0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _bleed_colour(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Fill the colour of fully transparent pixels from nearby visible colour (pull-push).

    Why not "premultiply, super-resolve, un-premultiply": that is exact for a linear upscaler, but
    a learned network sharpens the premultiplied colour edge (object on black) while alpha is
    upscaled separately; wherever the two edges disagree, colour / alpha undershoots and the object
    gets a dark fringe. Measured with an unsharp-mask "model" at x3 on an antialiased white disc:
    premultiplied gives colour down to 0.16 (of 1.0) on edge pixels with alpha in (0.1, 0.5] and
    0.95 at alpha > 0.5; this fill gives 1.0 on all of them. Filling the invisible colour with the
    object's own colour leaves the network no black to mix in, so the fringe cannot arise whatever
    the network does, and the RGB under alpha=0 is a plausible colour rather than black for
    viewers that ignore alpha. The fill is still the
    premultiplied idea: at each coarser level colour = avg(rgb * alpha) / avg(alpha), so
    semi-transparent pixels count by their opacity; coarser levels fill larger holes.
    """
    visible = alpha > 0
    if bool(visible.all()) or not bool(visible.any()):
        return rgb  # nothing to fill, or nothing to fill it from
    levels = [(rgb * alpha, alpha)]
    while not bool((levels[-1][1] > 0).all()):  # ends by 1x1 at the latest: some pixel is visible
        p, a = levels[-1]
        levels.append((F.avg_pool2d(p, 2, ceil_mode=True), F.avg_pool2d(a, 2, ceil_mode=True)))
    p, a = levels.pop()
    colour = p / a
    for p, a in reversed(levels):
        up = F.interpolate(colour[None], size=p.shape[-2:], mode="bilinear", align_corners=False)[0]
        colour = torch.where(a > 0, p / a.clamp_min(1e-12), up)
    # Visible pixels keep their own colour exactly.
    return torch.where(visible, rgb, colour)


@dataclass(frozen=True)
class _Prepared:
    """One image split into what the network sees and what is upscaled beside it."""

    net_input: torch.Tensor  # (1|3, h, w): MATLAB Y, or RGB (colour bled under transparent pixels)
    chroma: torch.Tensor | None  # (2, h, w) Cb, Cr for Y-channel models
    alpha: torch.Tensor | None  # (1, h, w)


def _prepare(image: ImageLike, channels: int) -> _Prepared:
    array = torch.from_numpy(_to_float_hwc(image)).permute(2, 0, 1).contiguous()
    rgb, alpha = array[:3], (array[3:] if array.shape[0] == 4 else None)
    if alpha is not None:
        rgb = _bleed_colour(rgb, alpha)
    if channels == 3:
        return _Prepared(rgb, None, alpha)
    ycbcr = rgb_to_ycbcr(rgb)
    return _Prepared(ycbcr[:1].contiguous(), ycbcr[1:].contiguous(), alpha)


def _finish(
    prepared: _Prepared, hr: torch.Tensor, scale: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Network output -> uint8 RGB(A): add chroma and alpha, optionally fit to ``size``, quantise."""
    if prepared.chroma is not None:
        rgb = ycbcr_to_rgb(torch.cat([hr, imresize(prepared.chroma, scale)]))
    else:
        rgb = hr
    planes = [rgb]
    if prepared.alpha is not None:
        planes.append(imresize(prepared.alpha, scale) if scale != 1 else prepared.alpha)
    out = torch.cat(planes)
    if size is not None and tuple(out.shape[-2:]) != tuple(size):
        out = imresize(out, size=size)
    return _quantise(out)
