"""The tile engine under `tiling` (super-resolution) and `translate` (style transfer): cut
images into overlapping windows, run them through a network in bounded batches, paste the cores.

Internal to `tasks.inference`: callers use `super_resolve*` and `translate_full_resolution`.

Tiled inference and memory
    The image stays on the CPU as float32. It is cut into core tiles of ``tile`` x ``tile`` input
    pixels; each core is read together with ``overlap`` real neighbouring pixels on every side (its
    *window*); windows are stacked into batches of at most ``batch_tiles``, and only a batch is moved
    to the device, run under ``torch.inference_mode()``, moved back, cropped to its core (x scale) and
    pasted into the CPU output. Device memory is bounded by one batch, never the image
    (Real-ESRGAN #184, #514).

    Image borders are deliberately NOT reflect-padded: a window that would stick out of the image is
    shifted inwards instead (all windows keep the same size, so they stack), so at an image border
    the network sees exactly what it sees in a whole-image call and applies its own border padding
    (SRCNN/ESPCN pad with ``replicate`` in every layer; no input padding can reproduce that). Hence
    the tiled result equals the whole-image result everywhere, borders included, once ``overlap``
    covers the receptive field, instead of only away from the borders.

Errors
    A failing batch is never swallowed (Real-ESRGAN #633): it raises `TileError` naming every tile of
    the batch (image index, rows, columns), chained to the original exception; so does a batch
    whose output has the wrong shape or non-finite values (e.g. an fp16 overflow under AMP).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from catalog_enhance.tasks.imaging.resize import imresize


@dataclass(frozen=True)
class Tiling:
    """How images are cut for inference, one value passed whole: cores of ``tile`` x ``tile``
    input pixels, each read with ``overlap`` pixels of context on every side (it must cover the
    network's receptive field), ``batch_tiles`` windows a forward pass (speed and device memory
    only, never the pixels)."""

    tile: int = 256
    overlap: int = 16
    batch_tiles: int = 8


class TileError(RuntimeError):
    """Inference failed on a batch of tiles; ``tiles`` lists ``(image_index, y0, y1, x0, x1)`` cores."""

    def __init__(self, message: str, tiles: Sequence[tuple[int, int, int, int, int]]) -> None:
        super().__init__(message)
        self.tiles = list(tiles)


# -- tiling geometry ----------------------------------------------------------------------------


class _Span(NamedTuple):
    """One tile along one axis: the core [c0, c1) it produces and the window [w0, w1) it reads."""

    c0: int
    c1: int
    w0: int
    w1: int


def _spans(length: int, tile: int, overlap: int, align: int = 1) -> list[_Span]:
    window = min(length, tile + 2 * overlap)
    spans = []
    for c0 in range(0, length, tile):
        c1 = min(c0 + tile, length)
        # Shift the window inside the image rather than padding it: the core keeps >= overlap real
        # pixels on each interior side, or reaches the true image border, and every window has
        # the same size (so windows of one image, and of same-sized images, stack into a batch).
        w0 = min(max(c0 - overlap, 0), length - window)
        # Strided networks (CycleGAN downsamples by 4) need windows on the whole image's stride
        # grid, or every tile would sample a different phase; the end then grows to keep the core
        # covered (such windows may differ in size by < align and batch separately).
        w0 -= w0 % align
        w1 = max(min(w0 + window, length), min(c1 + overlap, length))
        spans.append(_Span(c0, c1, w0, w1))
    return spans


class _Tile(NamedTuple):
    image: int  # index of the image in the call
    rows: _Span
    cols: _Span

    def describe(self) -> str:
        return f"image {self.image} rows {self.rows.c0}:{self.rows.c1} cols {self.cols.c0}:{self.cols.c1}"


# -- the batched tile engine --------------------------------------------------------------------


@dataclass(frozen=True)
class _Runner:
    """How to run one batch of LR windows through the network (no per-image state)."""

    model: nn.Module
    scale: int
    upsample_first: bool  # bicubic-upscale each window before the model (SRCNN-style models)
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        x = windows.to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode():
            if self.upsample_first:
                # Per-window MATLAB bicubic from LR pixels, not a crop of a whole-image upscale, so
                # only LR pixels travel to the device. Is it exact? Each HR pixel's bicubic taps are
                # the 4 nearest LR pixels (support 2 px each side), and a window starts on an
                # integer LR pixel, so its HR grid has the same phase as the whole image's: every
                # HR pixel whose taps lie inside the window gets the same weights on the same
                # pixels, i.e. the same value. Only HR pixels within 2 LR px of an interior window
                # edge differ (imresize mirrors there); the network then spreads that difference
                # by its HR receptive radius r, so overlap >= 2 + ceil(r / scale) LR px keeps every
                # core pixel identical to the whole-image result (at image borders the window
                # edge IS the image edge, where both mirror alike).
                x = imresize(x, self.scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                y = self.model(x)
        return y.float().to("cpu")


def _run_checked(run: Callable[[torch.Tensor], torch.Tensor], windows: torch.Tensor,
                 tiles: Sequence[_Tile], scale: int) -> torch.Tensor:
    """``run(windows)``, or `TileError` naming ``tiles`` if it raises or returns a wrong shape
    or non-finite values."""
    n, c, h, w = windows.shape
    expected = (n, c, h * scale, w * scale)
    where = "; ".join(t.describe() for t in tiles)
    cores = [(t.image, t.rows.c0, t.rows.c1, t.cols.c0, t.cols.c1) for t in tiles]
    try:
        result = run(windows)
    except Exception as exc:
        raise TileError(f"inference failed on tile(s) {where}: {type(exc).__name__}: {exc}", cores) from exc
    if tuple(result.shape) != expected:
        raise TileError(
            f"model returned shape {tuple(result.shape)}, expected {expected} "
            f"(is scale={scale} right for this model?) on tile(s) {where}",
            cores,
        )
    if not torch.isfinite(result).all():
        raise TileError(f"model returned non-finite values on tile(s) {where}", cores)
    return result


def _tiled_rows(
    rows_of: Callable[[int, int], torch.Tensor],
    height: int,
    width: int,
    run: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: int,
    tiling: Tiling,
    max_batch_pixels: int | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """One image, one row of tiles at a time: yield ``(c0, c1, out)`` top to bottom, ``out`` the
    (C, (c1 - c0) * scale, width * scale) output of input rows [c0, c1).

    The tiles are `_tiled`'s own (same windows, so the same pixels), but only the input rows of
    one tile row's windows are ever asked for (``rows_of(w0, w1)`` -> (C, w1 - w0, width) float)
    and only one output band exists at a time: memory is bounded by a band, not the image.
    ``max_batch_pixels`` caps the input pixels of a forward pass below ``tiling.batch_tiles``
    windows (at least one window): the network's activations are the rest of the memory.
    """
    cols = _spans(width, tiling.tile, tiling.overlap)
    s = scale
    for r in _spans(height, tiling.tile, tiling.overlap):
        band = rows_of(r.w0, r.w1)
        out = torch.empty((band.shape[0], (r.c1 - r.c0) * s, width * s), dtype=torch.float32)
        tiles = [_Tile(0, r, q) for q in cols]
        per_batch = tiling.batch_tiles
        if max_batch_pixels is not None:
            window_pixels = (r.w1 - r.w0) * (cols[0].w1 - cols[0].w0)
            per_batch = max(1, min(per_batch, max_batch_pixels // window_pixels))
        for first in range(0, len(tiles), per_batch):
            batch = tiles[first : first + per_batch]
            # Column windows of one row all have the same width (`_spans`, align 1), so they stack.
            windows = torch.stack([band[:, :, t.cols.w0 : t.cols.w1] for t in batch])
            result = _run_checked(run, windows, batch, scale)
            for tile_out, t in zip(result, batch):
                q = t.cols
                out[:, :, q.c0 * s : q.c1 * s] = tile_out[
                    :, (r.c0 - r.w0) * s : (r.c1 - r.w0) * s, (q.c0 - q.w0) * s : (q.c1 - q.w0) * s
                ]
            del result, windows
        yield r.c0, r.c1, out


def _tiled(
    inputs: Iterable[torch.Tensor],
    run: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: int,
    tiling: Tiling,
    max_images_in_flight: int,
    align: int = 1,
) -> Iterator[torch.Tensor]:
    """Run ``run`` over the tiles of each (C, h, w) CPU input; yield (C, h*scale, w*scale) in order.

    Tiles wait in one queue per window shape, so tiles of different images share a batch when
    their windows have the same size (any image at least ``tile + 2*overlap`` in both sides, or
    same-sized small images). A full queue runs at once; when more than ``max_images_in_flight``
    images are unfinished every partial queue runs, so host memory stays bounded too.
    """
    sources: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    remaining: dict[int, int] = {}
    queues: dict[tuple[int, int], list[_Tile]] = {}
    next_out = 0

    def run_queue(shape: tuple[int, int]) -> None:
        tiles = queues.pop(shape)
        windows = torch.stack(
            [sources[t.image][:, t.rows.w0 : t.rows.w1, t.cols.w0 : t.cols.w1] for t in tiles]
        )
        result = _run_checked(run, windows, tiles, scale)
        s = scale
        for out, t in zip(result, tiles):
            r, q = t.rows, t.cols
            outputs[t.image][:, r.c0 * s : r.c1 * s, q.c0 * s : q.c1 * s] = out[
                :, (r.c0 - r.w0) * s : (r.c1 - r.w0) * s, (q.c0 - q.w0) * s : (q.c1 - q.w0) * s
            ]
            remaining[t.image] -= 1
            if remaining[t.image] == 0:
                del sources[t.image]  # the input is no longer needed

    def finished() -> Iterator[torch.Tensor]:
        nonlocal next_out
        while next_out in outputs and remaining[next_out] == 0:
            del remaining[next_out]
            yield outputs.pop(next_out)
            next_out += 1

    for index, source in enumerate(inputs):
        c, h, w = source.shape
        sources[index] = source
        outputs[index] = torch.empty((c, h * scale, w * scale), dtype=torch.float32)
        rows = _spans(h, tiling.tile, tiling.overlap, align)
        cols = _spans(w, tiling.tile, tiling.overlap, align)
        tiles = [_Tile(index, r, q) for r in rows for q in cols]
        remaining[index] = len(tiles)
        for t in tiles:
            shape = (t.rows.w1 - t.rows.w0, t.cols.w1 - t.cols.w0)
            queues.setdefault(shape, []).append(t)
            if len(queues[shape]) == tiling.batch_tiles:
                run_queue(shape)
        yield from finished()
        if len(outputs) > max_images_in_flight:
            for shape in list(queues):
                run_queue(shape)
            yield from finished()
    for shape in list(queues):
        run_queue(shape)
    yield from finished()
