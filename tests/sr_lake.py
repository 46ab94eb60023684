"""Test helper: a pairs manifest built by hand from real photo crops (scikit-image's bundled data),
LR made with MATLAB-compatible bicubic, written to a lake like the pairs stage would."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone

import numpy as np
from PIL import Image
from skimage import data as skdata

from catalog_enhance.data_contracts.contracts import PAIRS
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.data_contracts.layout import pair_key
from catalog_enhance.tasks.imaging.degradation_config import degradation_json
from catalog_enhance.tasks.imaging.resize import imresize

# Detailed photos (textures give bicubic something to miss); greyscale ones are made RGB.
PHOTOS = ("astronaut", "brick", "coffee", "gravel", "chelsea", "camera", "rocket", "grass")


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photo_crops(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """`count` size x size uint8 RGB crops taken at random from the bundled photos."""
    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        photo = getattr(skdata, name)()
        photos.append(np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3])
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - size + 1))
        x = int(rng.integers(0, photo.shape[1] - size + 1))
        crops.append(np.ascontiguousarray(photo[y : y + size, x : x + size]))
    return crops


def write_sr_pairs(lake, images: list[np.ndarray], splits: list[str], scale: int = 2, *,
                   degradation: str = "bicubic", lr_images: list[np.ndarray] | None = None,
                   replace: bool = True) -> list[dict]:
    """One pair per HR image (its sides a multiple of `scale`); writes PNGs + the pairs manifest.
    LR: MATLAB bicubic, or `lr_images` as given (recorded as the named `degradation`); `replace`
    False appends to the manifest instead of replacing it."""
    rows = []
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i, (hr, split) in enumerate(zip(images, splits, strict=True)):
        if lr_images is None:
            lr = imresize(hr.astype(np.float64) / 255.0, 1 / scale)
            lr = np.clip(np.round(lr * 255.0), 0, 255).astype(np.uint8)
        else:
            lr = lr_images[i]
        sha = hashlib.sha256(hr.tobytes()).hexdigest()
        config = f"testpairs-{degradation}"
        hr_key, lr_key = (pair_key(config, sha, scale, 0, role) for role in ("hr", "lr"))
        lake.write_bytes(hr_key, png_bytes(hr))
        lake.write_bytes(lr_key, png_bytes(lr))
        rows.append({
            "pair_id": f"{degradation[0]}{i:04d}", "config_hash": config, "sku": f"sku{i}", "product_id": f"prod{i}",
            "catalog_version": 1, "image_sha256": sha, "split": split, "scale": scale, "crop_index": 0,
            "crop_x": 0, "crop_y": 0, "hr_key": hr_key, "lr_key": lr_key,
            "hr_width": hr.shape[1], "hr_height": hr.shape[0], "lr_width": lr.shape[1], "lr_height": lr.shape[0],
            "degradation": degradation_json(degradation), "category": "photo", "style": "studio", "created_at": created,
        })
    if replace:
        manifests.remove(lake, "pairs")
    manifests.append(lake, "pairs", PAIRS.table(rows))
    return rows


def build_sr_lake(lake, *, train: int = 8, val: int = 2, size: int = 48, scale: int = 2, seed: int = 0) -> list[dict]:
    images = photo_crops(train + val, size, seed)
    return write_sr_pairs(lake, images, ["train"] * train + ["val"] * val, scale)
