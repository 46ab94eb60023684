"""Super-resolution of one large image in horizontal bands: bounded memory, the same pixels.

`super_resolve` builds the whole image as float32 at every step (input, network output, chroma,
alpha, the fitted result: ~180 bytes per input pixel at x2); here the input stays uint8 and only
one band of tile rows is float at a time, so memory is about one band plus the 8-bit rows the
caller keeps (none, when it encodes them as they come: `tasks.imaging.png_writer`).

Same pixels as `super_resolve` / `super_resolve_to_long_side` (tests/test_enhance_streaming.py):
    - the network sees the same windows (`tile_engine._tiled_rows` cuts the same tiles, one tile
      row at a time); only how tiles are grouped into batches differs, which can move a float by
      an ulp, so at most a rare 1 in uint8;
    - colour conversions are per pixel, so a band's are the image's;
    - the MATLAB-bicubic Cb/Cr and alpha upscales read ``_HALO`` input rows beyond the band: each
      output row's taps lie within 2 input rows, so the band's rows are exactly the image's (at the
      image's own top and bottom the band edge is the image edge, folded alike);
    - the final fit (`target_long_side`) applies MATLAB's own per-row weights (`resize_weights`)
      to a rolling window of the rows it needs, in MATLAB's axis order.
Alpha: the colour under transparent pixels is filled from the whole image (`_bleed_colour` is a
pyramid over all of it), so an RGBA image keeps one input-sized float RGB copy; RGB images none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from catalog_enhance.tasks.imaging.resize import (
    _resize_axis,
    _upscale_axis_integer,
    imresize,
    resize_weights,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from catalog_enhance.tasks.inference.pixels import _bleed_colour, _quantise, checked_uint8_image
from catalog_enhance.tasks.inference.tile_engine import Tiling, _tiled_rows
from catalog_enhance.tasks.inference.tiling import _check_call, _runner, choose_scale, fit_size
from catalog_enhance.tasks.runtime import Runtime

__all__ = ["RowBands", "super_resolve_bands", "super_resolve_bands_to_long_side"]

# Input rows read beyond a band for the bicubic upscales (their taps reach 2 rows; 1 spare).
_HALO = 3
# Input pixels per forward pass on a CPU (a 256 + 2 x 16 px window is 82,944): the network's
# activations, not the image, are then the largest buffers. The cpu-preset ESPCN (64 features)
# keeps ~3 activation maps alive: 8 such windows a pass peaked ~440 MB above 1 window, and on this
# 2-core CPU were no faster (oneDNN parallelises within a window). On a GPU `batch_tiles` rules.
_CPU_BATCH_PIXELS = 128 * 1024
# Input rows per band after the network (colour, alpha, fit, quantisation, PNG).
_POST_ROWS = 32


@dataclass
class RowBands:
    """An image produced top to bottom: ``bands`` yields uint8 (rows, width, channels) arrays
    whose rows add up to ``height``. Consume it once."""

    height: int
    width: int
    channels: int  # 3 (RGB) or 4 (RGBA)
    bands: Iterator[np.ndarray]

    def collect(self) -> np.ndarray:
        """The whole image as one uint8 (height, width, channels) array (tests, small images)."""
        out = np.empty((self.height, self.width, self.channels), dtype=np.uint8)
        top = 0
        for band in self.bands:
            out[top : top + band.shape[0]] = band
            top += band.shape[0]
        if top != self.height:
            raise RuntimeError(f"bands gave {top} rows, expected {self.height}")
        return out


class _Source:
    """A uint8 (H, W, 3|4) image, read as float rows on demand: what `pixels._prepare` computes
    for the whole image, for just the rows asked for."""

    def __init__(self, image: np.ndarray, channels: int) -> None:
        image = checked_uint8_image(image)
        self.image = image
        self.height, self.width = image.shape[:2]
        self.has_alpha = image.shape[2] == 4
        self.channels = channels
        self._bled: torch.Tensor | None = None
        if self.has_alpha:
            alpha = self._float(0, self.height, slice(3, 4))
            if not bool((alpha > 0).all()):  # else `_bleed_colour` would return the colour as is
                self._bled = _bleed_colour(self._float(0, self.height, slice(0, 3)), alpha)

    def _float(self, r0: int, r1: int, planes: slice) -> torch.Tensor:
        # As `pixels._to_float_hwc`: float32, then / 255 (the same float32 division).
        band = self.image[r0:r1, :, planes].astype(np.float32) / 255.0
        return torch.from_numpy(band).permute(2, 0, 1).contiguous()

    def rgb(self, r0: int, r1: int) -> torch.Tensor:
        if self._bled is not None:
            return self._bled[:, r0:r1]
        return self._float(r0, r1, slice(0, 3))

    def net_input(self, r0: int, r1: int) -> torch.Tensor:
        rgb = self.rgb(r0, r1)
        return rgb if self.channels == 3 else rgb_to_ycbcr(rgb)[:1].contiguous()

    def chroma(self, r0: int, r1: int) -> torch.Tensor:
        return rgb_to_ycbcr(self.rgb(r0, r1))[1:].contiguous()

    def alpha(self, r0: int, r1: int) -> torch.Tensor:
        return self._float(r0, r1, slice(3, 4))


def _upscaled_rows(read, source: _Source, c0: int, c1: int, scale: int) -> torch.Tensor:
    """Rows [c0 * scale, c1 * scale) of ``imresize(read(0, H), scale)``, from input rows
    [c0 - _HALO, c1 + _HALO) only."""
    lo, hi = max(c0 - _HALO, 0), min(c1 + _HALO, source.height)
    up = imresize(read(lo, hi), scale)
    return up[:, (c0 - lo) * scale : (c1 - lo) * scale]


def _hr_bands(source: _Source, model: nn.Module | None, scale: int, tiling: Tiling,
              runtime: Runtime | None) -> Iterator[torch.Tensor]:
    """Float (C, rows, W * scale) bands of `pixels._finish`'s image before its fit: network
    output (+ chroma) as RGB, plus alpha, top to bottom, ``_POST_ROWS`` input rows a band (the
    colour planes' temporaries are a few output-sized floats, so they are made a few rows at a
    time, not a tile row at a time). ``model`` None: scale 1, no network."""
    if model is None:
        for top in range(0, source.height, _POST_ROWS):
            bottom = min(top + _POST_ROWS, source.height)
            planes = [source.rgb(top, bottom)] + ([source.alpha(top, bottom)] if source.has_alpha else [])
            yield torch.cat(planes)
        return
    run = _runner(model, scale, runtime)
    cap = _CPU_BATCH_PIXELS if run.device.type == "cpu" else None
    for c0, c1, hr in _tiled_rows(source.net_input, source.height, source.width, run, scale=scale, tiling=tiling,
                                  max_batch_pixels=cap):
        for top in range(c0, c1, _POST_ROWS):
            bottom = min(top + _POST_ROWS, c1)
            rows = hr[:, (top - c0) * scale : (bottom - c0) * scale]
            if source.channels == 1:
                rows = ycbcr_to_rgb(torch.cat([rows, _upscaled_rows(source.chroma, source, top, bottom, scale)]))
            if source.has_alpha:
                rows = torch.cat([rows, _upscaled_rows(source.alpha, source, top, bottom, scale)])
            yield rows
        del hr


class _RowFit:
    """`imresize(image, size=...)` applied to an image arriving in row bands, emitting the output
    in row bands: MATLAB's axis order and weights, each output row computed from the input rows
    its taps name (kept in a rolling window), so every value is the whole-image one."""

    def __init__(self, in_h: int, in_w: int, size: tuple[int, int]) -> None:
        out_h, out_w = size
        self.in_w, self.out_h, self.out_w = in_w, out_h, out_w
        self.col_scale = out_w / in_w
        row_scale = out_h / in_h
        self.rows_first = row_scale <= self.col_scale  # as `imresize`: the smaller scale first
        self.row_weights, self.row_indices = resize_weights(in_h, out_h, row_scale, True)
        # Output rows [j0, j1) need input rows [need_lo[j0], need_hi[j1 - 1]).
        self.need_hi = np.maximum.accumulate(self.row_indices.max(axis=1) + 1)
        self.need_lo = np.minimum.accumulate(self.row_indices.min(axis=1)[::-1])[::-1]

    def _columns(self, band: torch.Tensor) -> torch.Tensor:
        # As `imresize` on the column axis (its integer-upscale path included): per row.
        scale = self.col_scale
        if scale > 1 and scale == int(scale) and self.out_w == self.in_w * int(scale):
            return _upscale_axis_integer(band, -1, int(scale))
        return _resize_axis(band, -1, *resize_weights(self.in_w, self.out_w, scale, True))

    def __call__(self, bands: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        window: torch.Tensor | None = None
        start = 0  # input row of window[:, 0]
        done = 0  # output rows emitted
        for band in bands:
            if not self.rows_first:
                band = self._columns(band)
            window = band if window is None else torch.cat([window, band], dim=1)
            end = start + window.shape[1]
            j1 = int(np.searchsorted(self.need_hi, end, side="right"))
            if j1 > done:
                weights = self.row_weights[done:j1]
                indices = self.row_indices[done:j1] - start
                rows = _resize_axis(window, -2, weights, indices)
                yield rows if not self.rows_first else self._columns(rows)
                done = j1
                if done < self.out_h:
                    keep_from = int(self.need_lo[done])
                    window = window[:, keep_from - start :].contiguous()
                    start = keep_from
        if done != self.out_h:
            raise RuntimeError(f"fit produced {done} of {self.out_h} rows")


def _bands(source: _Source, model: nn.Module | None, scale: int, tiling: Tiling, runtime: Runtime | None,
           size: tuple[int, int] | None) -> RowBands:
    hr_h, hr_w = source.height * scale, source.width * scale
    bands = _hr_bands(source, model, scale, tiling, runtime)
    if size is not None and tuple(size) != (hr_h, hr_w):
        bands = _RowFit(hr_h, hr_w, size)(bands)
        hr_h, hr_w = size
    return RowBands(hr_h, hr_w, 4 if source.has_alpha else 3, (_quantise(b) for b in bands))


def super_resolve_bands(image: np.ndarray, model: nn.Module, *, scale: int, channels: int,
                        tiling: Tiling = Tiling(), runtime: Runtime | None = None) -> RowBands:
    """`tiling.super_resolve` of a uint8 (H, W, 3|4) array, produced in row bands (lazily: the
    work happens as ``bands`` is consumed). Same arguments, same pixels (see the module notes)."""
    _check_call(model, scale, channels, tiling)
    return _bands(_Source(image, channels), model, scale, tiling, runtime, None)


def super_resolve_bands_to_long_side(image: np.ndarray, models: Mapping[int, nn.Module], target_long_side: int,
                                     *, channels: int, tiling: Tiling = Tiling(),
                                     runtime: Runtime | None = None) -> RowBands:
    """`tiling.super_resolve_to_long_side` of a uint8 (H, W, 3|4) array, in row bands."""
    array = np.asarray(image)
    h, w = array.shape[:2]
    size = fit_size(h, w, target_long_side)
    scale = choose_scale(h, w, target_long_side, models)
    if scale is None:
        return _bands(_Source(array, 3), None, 1, tiling, runtime, size)
    _check_call(models[scale], scale, channels, tiling)
    return _bands(_Source(array, channels), models[scale], scale, tiling, runtime, size)
