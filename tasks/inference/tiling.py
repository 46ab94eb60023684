"""The pure enhancement core: tiled, batched, stateless super-resolution.

Full-resolution style transfer (`translate_full_resolution`) runs through the same tile engine
and lives in `tasks.inference.translate`.

Every function here is a plain function of its arguments: nothing about an image is stored on the
model or on any shared object, so one model can serve many threads at once (Prefect's thread-pool
task runner, Real-ESRGAN #658). The model is only *called*, never moved, converted or switched to
eval mode here: prepare it once (``model.eval().to(device)``, optionally
``.to(memory_format=torch.channels_last)``) before sharing it.

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

    Overlap needed (input pixels) for exact tiles: ESPCN, whose convolutions all run at LR
    (5x5, ``depth`` x 3x3, 3x3: radius 3 + depth; its internal bicubic reaches only 2 px), needs
    3 + depth = 4 by default; SRCNN needs 2 (bicubic taps, see `_Runner`) + ceil(r / scale) with r
    its HR receptive radius (6 for 9-1-5, 8 for 9-5-5), i.e. at most 6. The default 16 covers both
    with margin; the tests check exactness at the minimum.

Errors
    A failing batch is never swallowed (Real-ESRGAN #633): it raises `TileError` naming every tile of
    the batch (image index, rows, columns), chained to the original exception; so does a batch
    whose output has the wrong shape or non-finite values (e.g. an fp16 overflow under AMP).

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

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from catalog_enhance.tasks.imaging.resize import imresize, rgb_to_ycbcr, ycbcr_to_rgb

ImageLike = Image.Image | np.ndarray

__all__ = [
    "TileError",
    "choose_scale",
    "fit_size",
    "super_resolve",
    "super_resolve_many",
    "super_resolve_to_long_side",
]


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


def _tiled(
    inputs: Iterable[torch.Tensor],
    run: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: int,
    tile: int,
    overlap: int,
    batch_tiles: int,
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
        n, c, h, w = windows.shape
        expected = (n, c, h * scale, w * scale)
        where = "; ".join(t.describe() for t in tiles)
        try:
            result = run(windows)
        except Exception as exc:
            raise TileError(
                f"inference failed on tile(s) {where}: {type(exc).__name__}: {exc}",
                [(t.image, t.rows.c0, t.rows.c1, t.cols.c0, t.cols.c1) for t in tiles],
            ) from exc
        if tuple(result.shape) != expected:
            raise TileError(
                f"model returned shape {tuple(result.shape)}, expected {expected} "
                f"(is scale={scale} right for this model?) on tile(s) {where}",
                [(t.image, t.rows.c0, t.rows.c1, t.cols.c0, t.cols.c1) for t in tiles],
            )
        if not torch.isfinite(result).all():
            raise TileError(
                f"model returned non-finite values on tile(s) {where}",
                [(t.image, t.rows.c0, t.rows.c1, t.cols.c0, t.cols.c1) for t in tiles],
            )
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
        rows, cols = _spans(h, tile, overlap, align), _spans(w, tile, overlap, align)
        tiles = [_Tile(index, r, q) for r in rows for q in cols]
        remaining[index] = len(tiles)
        for t in tiles:
            shape = (t.rows.w1 - t.rows.w0, t.cols.w1 - t.cols.w0)
            queues.setdefault(shape, []).append(t)
            if len(queues[shape]) == batch_tiles:
                run_queue(shape)
        yield from finished()
        if len(outputs) > max_images_in_flight:
            for shape in list(queues):
                run_queue(shape)
            yield from finished()
    for shape in list(queues):
        run_queue(shape)
    yield from finished()


# -- pixels in, pixels out ----------------------------------------------------------------------


def _to_float_hwc(image: ImageLike) -> np.ndarray:
    """uint8 RGB/RGBA pixels as a float32 (H, W, 3|4) array in [0, 1]."""
    if isinstance(image, Image.Image):
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        target = "RGBA" if has_alpha else "RGB"
        array = np.asarray(image if image.mode == target else image.convert(target))
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array, got dtype {array.dtype}")
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W, 3) RGB or (H, W, 4) RGBA array, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"empty image of shape {array.shape}")
    return array.astype(np.float32) / 255.0


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


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_call(model: nn.Module, scale: int, channels: int, tile: int, overlap: int, batch_tiles: int):
    if model.training:
        raise ValueError(
            "model is in training mode; call model.eval() once before inference (this module never "
            "changes a shared model's state)"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (Y-channel model) or 3 (RGB model), got {channels}")
    model_channels = getattr(model, "channels", channels)
    if model_channels != channels:
        raise ValueError(f"model works on {model_channels} channel(s) but channels={channels} was given")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    model_scale = getattr(model, "scale", scale)
    if getattr(model, "upsamples_inside", True) and model_scale != scale:
        raise ValueError(f"model upscales x{model_scale} but scale={scale} was given")
    if tile < 1 or overlap < 0 or batch_tiles < 1:
        raise ValueError(f"need tile >= 1, overlap >= 0, batch_tiles >= 1; got {tile}, {overlap}, {batch_tiles}")


def _runner(model, scale, device, amp_dtype, channels_last) -> _Runner:
    model_device = _model_device(model)
    device = model_device if device is None else torch.device(device)
    if device != model_device and not (device.type == model_device.type and device.index is None):
        raise ValueError(
            f"model is on {model_device} but device={device}; move the model once before sharing it"
        )
    return _Runner(
        model=model,
        scale=scale,
        upsample_first=not getattr(model, "upsamples_inside", True) and scale > 1,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
    )


# -- public API ---------------------------------------------------------------------------------


def super_resolve_many(
    images: Iterable[ImageLike],
    model: nn.Module,
    *,
    scale: int,
    channels: int,
    tile: int = 256,
    overlap: int = 16,
    batch_tiles: int = 8,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    max_images_in_flight: int = 8,
    sizes: Iterable[tuple[int, int] | None] | None = None,
) -> Iterator[np.ndarray]:
    """Super-resolve several images, yielding uint8 results lazily and in input order.

    Same arguments and result per image as `super_resolve`; tiles of different images share
    batches (small same-sized images, or any image of at least ``tile + 2*overlap`` px a side).
    ``images`` is consumed lazily, so host memory holds at most ``max_images_in_flight``
    unfinished images plus one batch; device memory holds one batch. ``sizes`` (parallel to
    ``images``) optionally fits each result to an exact (height, width) with MATLAB bicubic
    before quantisation (used by `super_resolve_to_long_side`). A failed batch raises `TileError`
    naming its tiles and image indices; nothing after it is yielded.
    """
    _check_call(model, scale, channels, tile, overlap, batch_tiles)
    if max_images_in_flight < 1:
        raise ValueError(f"max_images_in_flight must be >= 1, got {max_images_in_flight}")
    run = _runner(model, scale, device, amp_dtype, channels_last)
    # Prepared images (and their fit sizes) whose network output has not come back yet, in order.
    pending: deque[tuple[_Prepared, tuple[int, int] | None]] = deque()
    size_iter = iter(sizes) if sizes is not None else None

    def network_inputs() -> Iterator[torch.Tensor]:
        for image in images:
            prepared = _prepare(image, channels)
            pending.append((prepared, next(size_iter) if size_iter is not None else None))
            yield prepared.net_input

    for hr in _tiled(
        network_inputs(),
        run,
        scale=scale,
        tile=tile,
        overlap=overlap,
        batch_tiles=batch_tiles,
        max_images_in_flight=max_images_in_flight,
    ):
        prepared, size = pending.popleft()
        yield _finish(prepared, hr, scale, size)


def super_resolve(
    image: ImageLike,
    model: nn.Module,
    *,
    scale: int,
    channels: int,
    tile: int = 256,
    overlap: int = 16,
    batch_tiles: int = 8,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Super-resolve one uint8 RGB/RGBA image by ``scale``: (H, W, C) -> (H*scale, W*scale, C) uint8.

    ``image``: PIL image (converted to RGB, or RGBA if it has transparency) or a uint8 (H, W, 3|4)
    RGB(A) array. ``model``: an SR network in eval mode, already on ``device`` (default: the
    model's own device); if it has ``upsamples_inside=False`` (SRCNN) each tile is MATLAB-bicubic
    upscaled first, otherwise (ESPCN) it maps LR -> HR itself. ``channels``: 1 for a Y-channel
    model (Cb/Cr are bicubic-upscaled), 3 for an RGB model. ``tile``/``overlap`` are in input
    pixels (overlap must cover the receptive field, see the module notes), ``batch_tiles`` tiles
    go to the device at a time. ``amp_dtype`` (e.g. ``torch.bfloat16``) runs the model under
    autocast; ``channels_last`` feeds it NHWC tensors (convert the model itself beforehand).
    Alpha is upscaled separately with MATLAB bicubic. Raises `TileError` if a tile fails.
    """
    return next(
        super_resolve_many(
            [image],
            model,
            scale=scale,
            channels=channels,
            tile=tile,
            overlap=overlap,
            batch_tiles=batch_tiles,
            device=device,
            amp_dtype=amp_dtype,
            channels_last=channels_last,
        )
    )


# -- target sizes -------------------------------------------------------------------------------


def fit_size(height: int, width: int, target_long_side: int) -> tuple[int, int]:
    """(height, width) scaled so the long side is exactly ``target_long_side``, aspect kept."""
    if target_long_side < 1:
        raise ValueError(f"target_long_side must be >= 1, got {target_long_side}")
    factor = target_long_side / max(height, width)
    if height >= width:
        return target_long_side, max(1, round(width * factor))
    return max(1, round(height * factor)), target_long_side


def choose_scale(height: int, width: int, target_long_side: int, available_scales: Iterable[int]) -> int | None:
    """The smallest available model scale reaching ``target_long_side``, else the largest one.

    ``None`` when the image's long side is already >= the target (no super-resolution needed).
    """
    scales = sorted(set(available_scales))
    if not scales:
        raise ValueError("no model scales available")
    long_side = max(height, width)
    if long_side >= target_long_side:
        return None
    for s in scales:
        if long_side * s >= target_long_side:
            return s
    return scales[-1]


def super_resolve_to_long_side(
    image: ImageLike,
    models: Mapping[int, nn.Module],
    target_long_side: int,
    *,
    channels: int,
    **tiling,
) -> np.ndarray:
    """Super-resolve with the model from ``models`` (scale -> model) that fits, then fit exactly.

    The smallest scale whose output reaches ``target_long_side`` is run (less work, and the fit is
    then a mild downscale); the result is fitted to exactly `fit_size(...)` with MATLAB bicubic
    (antialiased when shrinking), in float before the single final quantisation. MATLAB bicubic
    rather than PIL Lanczos because PIL resizes RGBA through 8-bit premultiplied alpha (rounding
    colour at low alpha, black under alpha=0) and would add a second uint8 rounding; Lanczos'
    extra sharpness is marginal for the <= 2x fits used here, and the resize stays the project's
    one, MATLAB-compatible, bicubic. Never overshoots: the output long side is the target. If no
    model reaches the target, the largest one runs and bicubic does the rest. An image already at
    least as large is only downscaled (bicubic, antialiased) to the target, never super-resolved,
    so every output has the requested long side. ``tiling``: `super_resolve`'s keyword arguments.
    """
    h, w = (image.height, image.width) if isinstance(image, Image.Image) else np.asarray(image).shape[:2]
    size = fit_size(h, w, target_long_side)
    scale = choose_scale(h, w, target_long_side, models)
    if scale is None:
        prepared = _prepare(image, 3)
        return _finish(prepared, prepared.net_input, 1, size)
    return next(super_resolve_many([image], models[scale], scale=scale, channels=channels, sizes=[size], **tiling))
