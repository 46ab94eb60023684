"""The pure enhancement core: tiled, batched, stateless super-resolution.

Full-resolution style transfer (`translate_full_resolution`) runs through the same tile engine
and lives in `tasks.inference.translate`.

Every function here is a plain function of its arguments: nothing about an image is stored on the
model or on any shared object, so one model can serve many threads at once (Prefect's thread-pool
task runner, Real-ESRGAN #658). The model is only *called*, never moved, converted or switched to
eval mode here: prepare it once (``model.eval().to(device)``, optionally
``.to(memory_format=torch.channels_last)``) before sharing it.

Tiled inference, memory and errors: see `tile_engine`. Colour and alpha: see `pixels`.

Overlap
    Overlap needed (input pixels) for exact tiles: ESPCN, whose convolutions all run at LR
    (5x5, ``depth`` x 3x3, 3x3: radius 3 + depth; its internal bicubic reaches only 2 px), needs
    3 + depth = 4 by default; SRCNN needs 2 (bicubic taps, see `tile_engine._Runner`) +
    ceil(r / scale) with r its HR receptive radius (6 for 9-1-5, 8 for 9-5-5), i.e. at most 6.
    The default 16 covers both with margin; the tests check exactness at the minimum.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn

from catalog_enhance.models.protocols import sr_attribute
from catalog_enhance.tasks.inference.pixels import ImageLike, _finish, _prepare, _Prepared
from catalog_enhance.tasks.inference.tile_engine import TileError, Tiling, _Runner, _tiled
from catalog_enhance.tasks.runtime import Runtime

__all__ = [
    "ImageLike",
    "TileError",
    "Tiling",
    "choose_scale",
    "fit_size",
    "super_resolve",
    "super_resolve_many",
    "super_resolve_to_long_side",
]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _check_call(model: nn.Module, scale: int, channels: int, tiling: Tiling):
    if model.training:
        raise ValueError(
            "model is in training mode; call model.eval() once before inference (this module never "
            "changes a shared model's state)"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (Y-channel model) or 3 (RGB model), got {channels}")
    model_channels = sr_attribute(model, "channels")
    if model_channels is not None and model_channels != channels:
        raise ValueError(f"model works on {model_channels} channel(s) but channels={channels} was given")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    model_scale = sr_attribute(model, "scale")
    if sr_attribute(model, "upsamples_inside") and model_scale is not None and model_scale != scale:
        raise ValueError(f"model upscales x{model_scale} but scale={scale} was given")
    if tiling.tile < 1 or tiling.overlap < 0 or tiling.batch_tiles < 1:
        raise ValueError(f"need tile >= 1, overlap >= 0, batch_tiles >= 1; "
                         f"got {tiling.tile}, {tiling.overlap}, {tiling.batch_tiles}")


def _runner(model, scale, runtime: Runtime | None) -> _Runner:
    """``runtime`` None: the model's own device, fp32, NCHW."""
    device, amp_dtype, channels_last = (
        (None, None, False) if runtime is None else (runtime.device, runtime.amp_dtype, runtime.channels_last)
    )
    model_device = _model_device(model)
    device = model_device if device is None else torch.device(device)
    if device != model_device and not (device.type == model_device.type and device.index is None):
        raise ValueError(
            f"model is on {model_device} but device={device}; move the model once before sharing it"
        )
    return _Runner(
        model=model,
        scale=scale,
        upsample_first=not sr_attribute(model, "upsamples_inside") and scale > 1,
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
    tiling: Tiling = Tiling(),
    runtime: Runtime | None = None,
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
    _check_call(model, scale, channels, tiling)
    if max_images_in_flight < 1:
        raise ValueError(f"max_images_in_flight must be >= 1, got {max_images_in_flight}")
    run = _runner(model, scale, runtime)
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
        tiling=tiling,
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
    tiling: Tiling = Tiling(),
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Super-resolve one uint8 RGB/RGBA image by ``scale``: (H, W, C) -> (H*scale, W*scale, C) uint8.

    ``image``: PIL image (converted to RGB, or RGBA if it has transparency) or a uint8 (H, W, 3|4)
    RGB(A) array. ``model``: an SR network in eval mode, already on ``runtime.device`` (default:
    the model's own device); if it has ``upsamples_inside=False`` (SRCNN) each tile is
    MATLAB-bicubic upscaled first, otherwise (ESPCN) it maps LR -> HR itself. ``channels``: 1 for a
    Y-channel model (Cb/Cr are bicubic-upscaled), 3 for an RGB model. ``tiling``: ``tile`` and
    ``overlap`` are in input pixels (overlap must cover the receptive field, see the module notes),
    ``batch_tiles`` tiles go to the device at a time. ``runtime`` (default: the model's device,
    fp32, NCHW): its ``amp_dtype`` (e.g. ``torch.bfloat16``) runs the model under autocast; its
    ``channels_last`` feeds it NHWC tensors (convert the model itself beforehand).
    Alpha is upscaled separately with MATLAB bicubic. Raises `TileError` if a tile fails.
    """
    return next(
        super_resolve_many(
            [image],
            model,
            scale=scale,
            channels=channels,
            tiling=tiling,
            runtime=runtime,
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
    tiling: Tiling = Tiling(),
    runtime: Runtime | None = None,
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
    so every output has the requested long side. ``tiling``, ``runtime``: as for `super_resolve`.
    """
    h, w = (image.height, image.width) if isinstance(image, Image.Image) else np.asarray(image).shape[:2]
    size = fit_size(h, w, target_long_side)
    scale = choose_scale(h, w, target_long_side, models)
    if scale is None:
        prepared = _prepare(image, 3)
        return _finish(prepared, prepared.net_input, 1, size)
    return next(super_resolve_many([image], models[scale], scale=scale, channels=channels, sizes=[size],
                                   tiling=tiling, runtime=runtime))
