"""MATLAB-compatible resizing and colour conversions: the one home for both in this project.

Published super-resolution figures use MATLAB's `imresize` (bicubic, a = -0.5, kernel widened
by 1/scale when downscaling so it antialiases, symmetric edge padding) and MATLAB's BT.601
`rgb2ycbcr`; PIL, OpenCV and torch's `interpolate` all differ. Everything here reproduces
MATLAB on float images in [0, 1] so our numbers are comparable with the papers.

Array conventions, as in each library: numpy arrays are images, `(H, W)` or `(H, W, C)`;
torch tensors are channels-first, `(..., C, H, W)` (e.g. `(C, H, W)` or a batch `(N, C, H, W)`),
and `imresize`/`mod_crop` also accept a plain `(H, W)` tensor. Results keep the input's kind
and float dtype; nothing is clipped or rounded (as MATLAB for double input).
"""

from __future__ import annotations

import functools
import math
from typing import TypeVar

import numpy as np
import torch

Image = TypeVar("Image", np.ndarray, torch.Tensor)

# -- imresize -----------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
    absx = np.abs(x)
    absx2, absx3 = absx**2, absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
    ) * ((absx > 1) & (absx <= 2))


@functools.lru_cache(maxsize=256)
def resize_weights(in_length: int, out_length: int, scale: float, antialiasing: bool = True):
    """MATLAB's `contributions`: per output pixel, the input indices (0-based) and weights.

    Returns `(weights, indices)`, both `(out_length, taps)` float64/int64 numpy arrays (read-only,
    they are cached). Out-of-range taps are folded back by symmetric reflection that repeats the
    edge pixel (MATLAB's `aux = [1:n, n:-1:1]`), so no padding is needed when applying them.
    """
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        # A kernel stretched by 1/scale both interpolates and low-passes (antialiasing).
        kernel_width /= scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
    else:
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    # Maps output pixel centres to input coordinates so that 0.5 -> 0.5 and 0.5+scale -> 1.5.
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may leave [1, in_length]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    indices = aux[np.mod(indices.astype(np.int64) - 1, len(aux))] - 1
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero tap columns
    weights, indices = weights[:, keep], indices[:, keep]
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


def _resize_axis(x: Image, axis: int, weights: np.ndarray, indices: np.ndarray) -> Image:
    """Resize `x` along `axis` (-2 rows, -1 columns) as a sum over taps of gathered pixels.

    numpy arrays are computed with numpy (single-threaded: the cheapest for one image, and no
    thread-pool contention when many images are resized in parallel threads); tensors with
    torch (batches, any device).
    """
    shape = (-1, 1) if axis == -2 else (-1,)
    if isinstance(x, torch.Tensor):
        # Copies: the cached arrays are read-only and shared.
        w = torch.tensor(weights, dtype=x.dtype, device=x.device)
        idx = torch.tensor(indices, device=x.device)
        take = lambda k: x.index_select(axis, idx[:, k])  # noqa: E731
    else:
        w, idx = weights.astype(x.dtype), indices
        take = lambda k: np.take(x, idx[:, k], axis=axis)  # noqa: E731
    out = None
    for k in range(idx.shape[1]):
        term = take(k) * w[:, k].reshape(shape)
        out = term if out is None else out + term
    assert out is not None  # every output pixel has at least one tap
    return out


@functools.lru_cache(maxsize=16)
def _integer_upscale_kernel(scale: int) -> tuple[np.ndarray, int]:
    """MATLAB's upscale-by-`scale` weights as one small filter bank: `(kernel, first_offset)`.

    Upscaling by an integer, output pixel `scale * i + p` reads input pixels `i + offset` with
    weights that depend only on the phase `p`, never on `i` (and MATLAB folds the out-of-range
    taps at the edges, weights unchanged). The phases are read off `resize_weights` itself, at an
    output pixel far from the edges, so this stays MATLAB's kernel by construction:
    `kernel[p, t]` weighs input pixel `i + first_offset + t`.
    """
    probe, centre = 16, 8  # an input long enough that the centre's taps are never folded
    weights, indices = resize_weights(probe, probe * scale, float(scale), True)
    phases = [{int(i) - centre: float(w) for i, w in zip(indices[centre * scale + p], weights[centre * scale + p])}
              for p in range(scale)]
    first = min(min(taps) for taps in phases)
    last = max(max(taps) for taps in phases)
    kernel = np.zeros((scale, last - first + 1))
    for p, taps in enumerate(phases):
        for offset, weight in taps.items():
            kernel[p, offset - first] += weight
    kernel.setflags(write=False)
    return kernel, first


def _upscale_axis_integer(x: torch.Tensor, axis: int, scale: int) -> torch.Tensor:
    """`_resize_axis` for an integer upscale of a tensor, computed at input resolution.

    The generic path gathers every tap at OUTPUT resolution (about 6 full-size passes per
    axis); here the input is edge-folded once (MATLAB's symmetric padding), each phase is a
    weighted sum of a few shifted views of it, and the phases are interleaved: the same sums.
    Shifted views rather than a convolution: a 1-channel, 4-tap convolution is a poor fit for
    oneDNN (6.3 ms against ~1.5 ms for the Cb/Cr planes of a 256 px image, bench/NOTES.md).
    """
    kernel, first = _integer_upscale_kernel(scale)
    length = x.shape[axis]
    aux = np.concatenate([np.arange(length), np.arange(length - 1, -1, -1)])
    fold = torch.from_numpy(aux[np.mod(np.arange(first, length + first + kernel.shape[1] - 1), 2 * length)])
    padded = x.index_select(axis, fold.to(x.device))
    phases: list[torch.Tensor] = []
    for taps in kernel:
        phase = None
        for offset, weight in enumerate(taps):
            if weight == 0.0:
                continue
            term = padded.narrow(axis, offset, length) * float(weight)
            phase = term if phase is None else phase.add_(term)
        assert phase is not None  # every phase has a non-zero tap
        phases.append(phase)
    # (..., L, W) -> (..., L, scale, W) -> (..., L*scale, W); likewise along the last axis.
    stacked = torch.stack(phases, dim=axis)
    shape = list(x.shape)
    shape[axis] = length * scale
    return stacked.reshape(shape)


def _output_length(in_length: int, scale: float) -> int:
    # MATLAB's ceil(scale * size); the rounding guards against 1/3-style float noise
    # (e.g. 192 * (1/3) must give 64, never 65).
    return math.ceil(round(in_length * scale, 9))


def _is_float(x: Image) -> bool:
    return x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)


@torch.no_grad()
def imresize(
    img: Image,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> Image:
    """Bicubic resize exactly as MATLAB's `imresize(img, scale)` / `imresize(img, [h w])`.

    `scale` is MATLAB's multiplier (`1/4` downscales x4, `2` upscales x2; output size
    `ceil(scale * size)`); or give `size=(height, width)`, then each axis uses `out/in` as its
    scale. Float input only (`[0, 1]` images by convention); output is not clipped.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale or size")
    x, restore = _channels_first(img, allow_2d=True)
    if not _is_float(x):
        raise TypeError(f"imresize expects a float image in [0, 1], got dtype {x.dtype}")
    in_h, in_w = x.shape[-2:]
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be positive, got {size}")
        scales = (out_h / in_h, out_w / in_w)
    else:
        assert scale is not None  # exactly one of scale and size, checked above
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        scales = (float(scale), float(scale))
        out_h, out_w = _output_length(in_h, scale), _output_length(in_w, scale)
    plans = {
        -2: resize_weights(in_h, out_h, scales[0], antialiasing),
        -1: resize_weights(in_w, out_w, scales[1], antialiasing),
    }
    axes = {-2: (in_h, out_h, scales[0]), -1: (in_w, out_w, scales[1])}
    # MATLAB resizes the axis with the smaller scale first (rows first on a tie).
    order = (-2, -1) if scales[0] <= scales[1] else (-1, -2)
    out = x
    for axis in order:
        in_length, out_length, axis_scale = axes[axis]
        if isinstance(out, torch.Tensor) and axis_scale > 1 and axis_scale == int(axis_scale) \
                and out_length == in_length * int(axis_scale):
            # Integer upscaling of a tensor (Cb/Cr and alpha planes, SRCNN inputs): same sums, faster.
            out = _upscale_axis_integer(out, axis, int(axis_scale))
        else:
            out = _resize_axis(out, axis, *plans[axis])
    return restore(out)


# -- colour (BT.601 as MATLAB's rgb2ycbcr / ycbcr2rgb, for double images in [0, 1]) ---------------

# Rows give Y, Cb, Cr in 0-255 units from RGB in [0, 1].
_YCBCR_FROM_RGB = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_FROM_RGB)  # exact inverse, as MATLAB's ycbcr2rgb uses


def _apply_colour_matrix(img: Image, matrix: np.ndarray, pre: np.ndarray, post: np.ndarray) -> Image:
    """out = matrix @ (pixel + pre) + post on the channel axis (last for numpy, -3 for torch)."""
    if isinstance(img, torch.Tensor):
        if img.ndim < 3 or img.shape[-3] != 3:
            raise ValueError(f"expected a (..., 3, H, W) tensor, got shape {tuple(img.shape)}")
        m = torch.as_tensor(matrix, dtype=img.dtype, device=img.device)
        a = torch.as_tensor(pre, dtype=img.dtype, device=img.device).view(3, 1, 1)
        b = torch.as_tensor(post, dtype=img.dtype, device=img.device).view(3, 1, 1)
        return torch.einsum("ij,...jhw->...ihw", m, img + a) + b
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {img.shape}")
    out = (img + pre) @ matrix.T + post
    return out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64)


def rgb_to_ycbcr(img: Image) -> Image:
    """MATLAB `rgb2ycbcr` on a float RGB image in [0, 1]: YCbCr in [0, 1] units, i.e.
    Y in [16, 235]/255 and Cb, Cr in [16, 240]/255 for in-gamut input."""
    return _apply_colour_matrix(img, _YCBCR_FROM_RGB / 255.0, np.zeros(3), _YCBCR_OFFSET / 255.0)


def ycbcr_to_rgb(img: Image) -> Image:
    """MATLAB `ycbcr2rgb`, the exact inverse of `rgb_to_ycbcr` (RGB in [0, 1], not clipped)."""
    return _apply_colour_matrix(img, _RGB_FROM_YCBCR * 255.0, -_YCBCR_OFFSET / 255.0, np.zeros(3))


def rgb_to_y(img: Image) -> Image:
    """BT.601 luma as MATLAB computes it, the channel SR papers report PSNR/SSIM on.

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 for RGB in [0, 1], so the result is in
    [16/255, 235/255] (white -> 235/255, black -> 16/255), NOT [0, 1]. Multiply by 255 for the
    0-255 scale papers use. numpy `(H, W, 3)` -> `(H, W)`; tensor `(..., 3, H, W)` ->
    `(..., 1, H, W)` (channel kept, as torchmetrics wants NCHW).
    """
    coeffs = _YCBCR_FROM_RGB[0] / 255.0
    offset = _YCBCR_OFFSET[0] / 255.0
    if isinstance(img, torch.Tensor):
        if img.ndim < 3 or img.shape[-3] != 3:
            raise ValueError(f"expected a (..., 3, H, W) tensor, got shape {tuple(img.shape)}")
        w = torch.as_tensor(coeffs, dtype=img.dtype, device=img.device).view(3, 1, 1)
        return (img * w).sum(dim=-3, keepdim=True) + offset
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {img.shape}")
    out = img @ coeffs + offset
    return out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64)


# -- cropping -----------------------------------------------------------------------------------


def mod_crop(img: Image, scale: int) -> Image:
    """Crop bottom/right so height and width are multiples of `scale` (MATLAB `modcrop`)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


# -- conventions --------------------------------------------------------------------------------


def _channels_first(img: Image, allow_2d: bool = False):
    """`(x, restore)`: `img` as channels-first `(..., C, H, W)` of the same kind (a numpy
    `(H, W, C)` image becomes a `(C, H, W)` view, a tensor is used as is; `(H, W)` passes when
    `allow_2d`), and a function that turns a result back into img's layout."""
    if isinstance(img, torch.Tensor):
        if img.ndim < 2 or (img.ndim == 2 and not allow_2d):
            raise ValueError(f"expected a (..., C, H, W) tensor, got shape {tuple(img.shape)}")
        return img, lambda t: t
    array = np.asarray(img)
    if array.ndim == 2 and allow_2d:
        return array, lambda a: a
    if array.ndim == 3:
        return np.moveaxis(array, -1, 0), lambda a: np.ascontiguousarray(np.moveaxis(a, 0, -1))
    raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {array.shape}")
