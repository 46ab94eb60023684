"""The benchmark's feeds, all made from the sample catalog (`catalog-enhance sample-catalog`).

- `held_out_feed`: the sample feed WITHOUT the lifestyle images whose background is one of the
  evaluation photos. The sample catalog composes its lifestyle shots onto crops of
  scikit-image's bundled photos, the very photos SR quality is measured on; training on them
  would make "photos it never trained on" untrue. Which photo a lifestyle image shows is
  recomputed from the catalog's seeded draw (`sample_catalog.background_crop`) and checked
  against the image's own corners, which are background; an image that does not match is
  dropped too (held out), never kept on a guess.
- `generated_feed`: N rows with distinct SKUs that reuse the sample images, for ingestion at
  1k and 10k rows.

Image URIs are absolute paths into the sample catalog, so the feeds can live in a scratch folder;
the runs allow that folder with `CE_LOCAL_ROOTS` (`local_roots_env`).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# The photos SR quality is measured on (names as `sample_catalog.SKIMAGE_PHOTOS`).
EVAL_PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket", "stereo_motorcycle")
SAMPLE_SEED, SAMPLE_CANVAS = 0, 256  # `catalog-enhance sample-catalog` defaults
# Mean absolute difference (0-255) between an image's corner and the recomputed background's:
# JPEG q95 keeps a matching corner within ~1-2 levels; another photo differs by tens.
_CORNER_TOLERANCE = 6.0
_CORNER = 12


def sample_catalog(out_dir: Path, cache_dir: Path) -> Path:
    """The sample feed: `out_dir/feed.csv` if the sample catalog was built, else build it."""
    feed = Path(out_dir) / "feed.csv"
    if not feed.exists():
        from catalog_enhance.demo_data.sample_catalog import build_sample_catalog

        build_sample_catalog(Path(out_dir), Path(cache_dir), seed=SAMPLE_SEED, canvas=SAMPLE_CANVAS)
    return feed


def read_feed_rows(feed: Path) -> list[dict[str, str]]:
    with open(feed, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_feed(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def local_roots_env(sample_feed: Path) -> dict[str, str]:
    """Environment letting feeds in another folder point at the sample catalog's images."""
    return {"CE_LOCAL_ROOTS": json.dumps([str(Path(sample_feed).resolve().parent)])}


def lifestyle_background(row: dict[str, str], images_dir: Path) -> str | None:
    """The scikit-image photo behind a lifestyle image, or None when it cannot be confirmed."""
    from catalog_enhance.demo_data.sample_catalog import _object_rng, background_crop

    name, background = background_crop(_object_rng(SAMPLE_SEED, row["product_id"]), SAMPLE_CANVAS)
    with Image.open(images_dir.parent / row["image_uri"]) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    expected = np.asarray(background, dtype=np.float64)
    if pixels.shape != expected.shape:
        return None
    c = _CORNER
    corners = [(slice(0, c), slice(0, c)), (slice(-c, None), slice(-c, None))]
    if max(np.abs(pixels[r, k] - expected[r, k]).mean() for r, k in corners) > _CORNER_TOLERANCE:
        return None
    return name


@dataclass
class HeldOutFeed:
    path: Path
    rows: int
    dropped: int
    dropped_by_photo: dict[str, int] = field(default_factory=dict)  # "unconfirmed" for no match
    kept_lifestyle_backgrounds: dict[str, int] = field(default_factory=dict)


def held_out_feed(sample_feed: Path, out: Path, photos: tuple[str, ...] = EVAL_PHOTOS) -> HeldOutFeed:
    """The sample feed minus every lifestyle image drawn on one of `photos` (or unconfirmed), and
    minus objects cut out of those photos (the scikit-image fallback catalog's)."""
    from catalog_enhance.demo_data.sample_catalog import SKIMAGE_PHOTOS

    sample_feed = Path(sample_feed).resolve()
    rows = read_feed_rows(sample_feed)
    images_dir = sample_feed.parent / "images"
    photo_files = {SKIMAGE_PHOTOS[name][0]: name for name in photos}
    kept, dropped, kept_backgrounds = [], Counter(), Counter()
    for row in rows:
        if row.get("source_name") in photo_files:
            dropped[photo_files[row["source_name"]]] += 1
            continue
        if row["style"] == "lifestyle":
            photo = lifestyle_background(row, images_dir)
            if photo is None or photo in photos:
                dropped[photo or "unconfirmed"] += 1
                continue
            kept_backgrounds[photo] += 1
        kept.append({**row, "image_uri": str(sample_feed.parent / row["image_uri"])})
    path = _write_feed(Path(out), kept, list(rows[0]))
    return HeldOutFeed(path, len(kept), sum(dropped.values()), dict(sorted(dropped.items())),
                       dict(sorted(kept_backgrounds.items())))


def generated_feed(sample_feed: Path, out: Path, rows: int) -> Path:
    """`rows` feed rows with distinct SKUs (and products) cycling through the sample images."""
    sample_feed = Path(sample_feed).resolve()
    source = read_feed_rows(sample_feed)
    generated = []
    for i in range(rows):
        row = source[i % len(source)]
        sku = f"GEN-{i:06d}"
        generated.append({**row, "sku": sku, "product_id": sku,
                          "image_uri": str(sample_feed.parent / row["image_uri"])})
    return _write_feed(Path(out), generated, list(source[0]))
