"""Pairs from one catalog image: HR crops at fixed positions and their degraded LR inputs."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
from PIL import Image as PILImage

from catalog_enhance.data_contracts.contracts import LABEL_PREFIX
from catalog_enhance.data_contracts.layout import pair_key
from catalog_enhance.tasks.catalog.splits import assign_split
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.imaging.degrade import canonical_json, degrade
from catalog_enhance.tasks.imaging.resize import mod_crop
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.tasks.pairs.config import UnpairableImage


def decode_rgb(png_bytes: bytes, name: str) -> np.ndarray:
    """Decode a normalised PNG to (H, W, 3) uint8 RGB, transparency composited onto white."""
    try:
        return load_rgb(png_bytes)
    except Exception as exc:  # noqa: BLE001 - one decoder call on stored bytes: any failure means "corrupt"
        message = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))  # keep details stable between runs
        raise UnpairableImage("corrupt", f"cannot decode {name}: {type(exc).__name__}: {message}") from exc


def crop_origins(image_sha256: str, width: int, height: int, config: PairsConfig) -> list[tuple[int, int]]:
    """(x, y) of each HR crop: random but fixed by the image, seed and hr_size; shared by all
    scales and all degradations (so degradation variants are compared on the same HR crops).

    An image with a side below `hr_size` gives one crop, the whole image, at (0, 0).
    """
    if min(width, height) < config.hr_size:
        return [(0, 0)]
    rng = np.random.default_rng([config.seed, int(image_sha256[:16], 16), config.hr_size])
    return [
        (int(rng.integers(0, width - config.hr_size + 1)), int(rng.integers(0, height - config.hr_size + 1)))
        for _ in range(config.crops_per_image)
    ]


def hr_shape(width: int, height: int, scale: int, config: PairsConfig) -> tuple[int, int]:
    """(width, height) of the HR crops of an image at a scale."""
    if min(width, height) >= config.hr_size:
        return config.hr_size, config.hr_size
    return width - width % scale, height - height % scale


def too_small(width: int, height: int, scale: int, config: PairsConfig) -> str | None:
    """Why an image cannot give pairs at a scale, or None."""
    w, h = hr_shape(width, height, scale, config)
    if min(w, h) // scale < config.min_lr_side:
        return (
            f"{width}x{height} px is too small for x{scale}: the LR side would be "
            f"{min(w, h) // scale} px (< {config.min_lr_side})"
        )
    return None


def _to_uint8(img: np.ndarray) -> np.ndarray:
    # MATLAB's im2uint8: round half up, saturate.
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _labels(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(LABEL_PREFIX)}


def make_pairs_for_image(
    png_bytes: bytes, row: dict, config: PairsConfig, scales: Sequence[int] | None = None
) -> list[tuple[bytes, bytes, dict]]:
    """(hr_png, lr_png, pairs_row) for each scale and crop of one catalog image.

    `row` is a CATALOG row (dict). Raises `UnpairableImage` when the image cannot be decoded or
    is too small for a requested scale; nothing is written here.
    """
    sha = row["image_sha256"]
    name = f"{row['image_key']} (sku {row['sku']!r})"
    pixels = decode_rgb(png_bytes, name)
    height, width = pixels.shape[:2]
    scales = tuple(scales or config.scales)
    for scale in scales:
        problem = too_small(width, height, scale, config)
        if problem:
            raise UnpairableImage("unsupported_image", f"{name}: {problem}")
    cfg_hash = config.config_hash
    degradation = canonical_json(config.degradation)
    split = assign_split(row["product_id"], config.splits, config.split_salt)
    created_at = datetime.now(timezone.utc)
    origins = crop_origins(sha, width, height, config)
    out = []
    for scale in scales:
        for crop_index, (x, y) in enumerate(origins):
            if min(width, height) >= config.hr_size:
                hr = pixels[y : y + config.hr_size, x : x + config.hr_size]
            else:
                hr = mod_crop(pixels, scale)  # the whole image, divisible by the scale
            crop_h, crop_w = hr.shape[:2]
            rng = np.random.default_rng([config.seed, int(sha[:16], 16), int(cfg_hash, 16), crop_index, scale])
            # Degrade the quantised HR so the pair is consistent with the HR PNG a model sees.
            lr = _to_uint8(degrade(hr.astype(np.float64) / 255.0, scale, config.degradation, rng))
            assert lr.shape[0] * scale == crop_h and lr.shape[1] * scale == crop_w, (lr.shape, scale)
            hr_key = pair_key(cfg_hash, sha, scale, crop_index, "hr")
            lr_key = pair_key(cfg_hash, sha, scale, crop_index, "lr")
            pair_row = {
                "pair_id": f"{cfg_hash}-{sha[:16]}-x{scale}-c{crop_index}",
                "config_hash": cfg_hash,
                "sku": row["sku"],
                "product_id": row["product_id"],
                "catalog_version": row["version"],
                "image_sha256": sha,
                "split": split,
                "scale": scale,
                "crop_index": crop_index,
                "crop_x": x,
                "crop_y": y,
                "hr_key": hr_key,
                "lr_key": lr_key,
                "hr_width": crop_w,
                "hr_height": crop_h,
                "lr_width": lr.shape[1],
                "lr_height": lr.shape[0],
                "degradation": degradation,
                "category": row["category"],
                "style": row["style"],
                "created_at": created_at,
                **_labels(row),
            }
            out.append((_png(np.ascontiguousarray(hr)), _png(lr), pair_row))
    return out
