"""A tiny hand-made catalog (contract CATALOG) for the generative-training tests.

Each product is a coloured shape: category "red" is a red disc, "blue" a blue square. Its studio
shot is the shape on white; its lifestyle shot the same shape on a dark, noisy green "scene".
Images are small and of varied aspect ratios (the loader squares them); some studio shots are
RGBA cutouts (the loader composites them onto white).
"""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone

import numpy as np
from PIL import Image, ImageDraw

from catalog_enhance.data_contracts.contracts import CATALOG
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.data_contracts.layout import normalized_image_key

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


def product_image(category: str, style: str, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    if style == "lifestyle":
        scene = np.clip(rng.normal((40, 110, 50), 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(scene, "RGB").convert("RGBA")
    else:
        image = Image.new("RGBA", (w, h), (255, 255, 255, 0 if style == "cutout" else 255))
    draw = ImageDraw.Draw(image)
    side = int(min(w, h) * rng.uniform(0.5, 0.7))
    x0 = (w - side) // 2 + int(rng.integers(-2, 3))
    y0 = (h - side) // 2 + int(rng.integers(-2, 3))
    shade = np.clip(np.array(COLOURS[category]) + rng.integers(-20, 21, 3), 0, 255)
    fill = (*(int(c) for c in shade), 255)
    if category == "red":
        draw.ellipse((x0, y0, x0 + side, y0 + side), fill=fill)
    else:
        draw.rectangle((x0, y0, x0 + side, y0 + side), fill=fill)
    return image if style == "cutout" else image.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def catalog_row(lake, sku: str, product_id: str, category: str, style: str, image: Image.Image, version: int = 1, **labels) -> dict:
    data = png_bytes(image)
    sha = hashlib.sha256(data).hexdigest()
    key = normalized_image_key(sha)
    lake.write_bytes_if_absent(key, data)
    return {
        "sku": sku, "version": version, "product_id": product_id, "category": category, "style": style,
        "source_uri": f"file:///feed/{sku}.png", "source_fingerprint": None, "source_sha256": sha,
        "source_format": "PNG", "source_bytes": len(data), "original_key": key, "image_key": key,
        "image_sha256": sha, "width": image.width, "height": image.height, "mode": image.mode,
        "has_alpha": image.mode == "RGBA", "exif_orientation": None, "icc_profile": None,
        "sharpness": 1.0, "ingested_at": datetime(2026, 11, 1, tzinfo=timezone.utc), "run_id": "test",
        **{f"label_{k}": v for k, v in labels.items()},
    }


def build_catalog(lake, products_per_category: int = 8, seed: int = 0, styles=("studio", "lifestyle")) -> list[dict]:
    """Write a studio and a lifestyle shot of each product, and the catalog manifest; return rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for category in COLOURS:
        for i in range(products_per_category):
            product = f"{category}-{i:02d}"
            size = (int(rng.integers(20, 40)), int(rng.integers(20, 40)))
            for style in styles:
                # Every 4th red studio shot is stored as a transparent cutout (still style=studio).
                kind = "cutout" if style == "studio" and category == "red" and i % 4 == 0 else style
                image = product_image(category, kind, rng, size)
                finish = "matte" if i % 2 else "gloss"
                rows.append(catalog_row(lake, f"{product}-{style}", product, category, style, image, finish=finish))
    write_manifest(lake, rows)
    return rows


def write_manifest(lake, rows: list[dict]) -> None:
    manifests.remove(lake, "catalog")
    manifests.append(lake, "catalog", CATALOG.table(rows))
