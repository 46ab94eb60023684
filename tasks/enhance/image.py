"""One image: super-resolution by the parameters, the optional studio transform, the PNG.

Stateless per image (Real-ESRGAN #658): `enhance_image` is a function of its arguments; the
loaded models are per-process, read-only state shared by every thread (`load_model` caches
them by checkpoint, so a thread pool or a Dask worker loads each model once, not per image).
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass, replace
from typing import TypedDict

import numpy as np
import torch

from catalog_enhance.tasks.enhance.loaded import EnhancementModels
from catalog_enhance.tasks.enhance.params import EnhanceParams, inference_runtime
from catalog_enhance.tasks.imaging.codec import encode_png
from catalog_enhance.tasks.imaging.png_writer import encode_png_rows
from catalog_enhance.tasks.inference.streaming import (
    RowBands,
    super_resolve_bands,
    super_resolve_bands_to_long_side,
)
from catalog_enhance.tasks.inference.tiling import TileError, super_resolve, super_resolve_to_long_side
from catalog_enhance.tasks.inference.translate import TRANSLATION_TILING, translate_full_resolution
from catalog_enhance.tasks.runtime import Runtime


class _PngCompression(TypedDict):  # encode_png's keyword arguments
    compress_level: int
    strategy: int


# Enhanced images are PNGs encoded with zlib's run-length strategy instead of PIL's default
# (level 6, default strategy): measured on 512 px catalog outputs, 7.7 ms an image against 30 ms
# (level 3 alone: 11.6 ms), for 14% more bytes than level 6 (bench/NOTES.md). Same pixels.
OUTPUT_PNG_COMPRESSION: _PngCompression = {"compress_level": 3, "strategy": zlib.Z_RLE}


class EnhancementFailed(ValueError):
    """One image could not be enhanced; `detail` says why (stable between runs)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class EnhancedImage:
    png: bytes
    width: int
    height: int
    mode: str
    seconds: float


def enhance_image(pixels: np.ndarray, models: EnhancementModels, params: EnhanceParams, runtime: Runtime,
                  *, style: bool = False) -> np.ndarray:
    """Super-resolve one uint8 (H, W, 3|4) RGB(A) image by the parameters, then (``style``) run
    the studio transform on its RGB; alpha is upscaled beside the colour, never flattened."""
    runtime = inference_runtime(runtime)  # the layout `load_model` gave the modules
    if params.target_long_side is not None:
        out = super_resolve_to_long_side(pixels, {models.scale: models.sr.module}, params.target_long_side,
                                         channels=models.channels, tiling=params.tiling, runtime=runtime)
    else:
        assert params.scale is not None  # EnhanceParams has a scale or a target_long_side (`_one_size`)
        out = super_resolve(pixels, models.sr.module, scale=params.scale, channels=models.channels,
                            tiling=params.tiling, runtime=runtime)
    if style:
        # Only the tile side comes from the parameters: overlap and batch size are translation's own.
        tiling = replace(TRANSLATION_TILING, tile=params.tile)
        out = translate_full_resolution(out, models.generator, tiling=tiling, runtime=runtime)
    return out


def enhance_image_bands(pixels: np.ndarray, models: EnhancementModels, params: EnhanceParams,
                        runtime: Runtime) -> RowBands:
    """`enhance_image` without the studio transform, produced lazily in row bands: only one
    band of tiles is ever float (`tasks.inference.streaming`); the same pixels."""
    runtime = inference_runtime(runtime)
    if params.target_long_side is not None:
        return super_resolve_bands_to_long_side(pixels, {models.scale: models.sr.module}, params.target_long_side,
                                                channels=models.channels, tiling=params.tiling, runtime=runtime)
    assert params.scale is not None  # EnhanceParams has a scale or a target_long_side (`_one_size`)
    return super_resolve_bands(pixels, models.sr.module, scale=params.scale, channels=models.channels,
                               tiling=params.tiling, runtime=runtime)


def _encode(pixels: np.ndarray, models: EnhancementModels, params: EnhanceParams, runtime: Runtime,
            style: bool) -> tuple[bytes, int, int, int]:
    """PNG bytes, width, height, channels. Without the studio transform the image is encoded
    as its bands come, so neither it nor a float copy of it is ever held whole (a 12 MP photo
    at x2 peaked at 3.2 GB that way; bench/enhance_memory.py). The transform needs the whole
    super-resolved image (its thumbnail statistics), so that path builds it."""
    if style:
        out = enhance_image(pixels, models, params, runtime, style=True)
        height, width, channels = out.shape
        return encode_png(out, **OUTPUT_PNG_COMPRESSION), width, height, channels
    bands = enhance_image_bands(pixels, models, params, runtime)
    png = encode_png_rows(bands.bands, bands.width, bands.height, bands.channels, **OUTPUT_PNG_COMPRESSION)
    return png, bands.width, bands.height, bands.channels


def _message(exc: BaseException) -> str:
    # No memory addresses: the same failure must give the same detail (quarantine de-duplication).
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")


def enhance_to_png(pixels: np.ndarray, models: EnhancementModels, params: EnhanceParams, runtime: Runtime,
                   *, style: bool = False) -> EnhancedImage:
    """`enhance_image` then `encode_png`, streamed in row bands (`_encode`): the one per-image
    step of catalog and folder runs. The PNG bytes are the one output-sized buffer it holds.

    Raises `EnhancementFailed` for a failure of this image (a tile, memory, an unusable size);
    anything else (a bug) propagates.
    """
    started = time.perf_counter()
    try:
        png, width, height, channels = _encode(pixels, models, params, runtime, style)
    except (TileError, torch.OutOfMemoryError, MemoryError) as exc:
        if isinstance(exc, torch.OutOfMemoryError) or isinstance(exc.__cause__, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise EnhancementFailed(f"out of memory: {_message(exc)}") from exc
        raise EnhancementFailed(f"inference failed: {_message(exc)}") from exc
    except (ValueError, RuntimeError) as exc:
        raise EnhancementFailed(f"cannot enhance: {_message(exc)}") from exc
    return EnhancedImage(png, width, height, "RGBA" if channels == 4 else "RGB", time.perf_counter() - started)
