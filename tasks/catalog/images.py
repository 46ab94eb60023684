"""Catalog images as training data for the generative models (GAN, CGAN, CycleGAN).

The catalog manifest (contract CATALOG, latest version per sku) names a normalised PNG per row.
Each image is composited onto white (RGBA), brought to a square of the model's ``image_size`` and
kept in memory as uint8, so a cpu-preset run reads the lake once and then trains at tensor speed.
Batches come through ``data.StepLoader`` (a DataLoader over ``CatalogImages`` whose batch of step k
depends only on (seed, k)), so a resumed run sees the same images, crops and flips.

Square fitting: ``fit="pad"`` (the default) scales the long side to ``image_size`` with Lanczos and
pads the short side with the image's own border colour (the median of its outermost pixels: white
for a studio shot, so no seam at all). Nothing of the product is cut away: a centre crop would cut
the ends off long objects (a rake, a guitar, a shoe seen from the side) and a generator would learn
truncated products. ``fit="crop"`` (centre crop) stays available for full-bleed photo domains.

Which rows: ``catalog.rows`` (the ``train`` split only, so the products evaluation holds out are
never trained on); their labels: ``catalog.labels``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from catalog_enhance.tasks.catalog.labels import CatalogDataError, parse_filters
from catalog_enhance.tasks.catalog.rows import domain_rows, product_pairs
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.imaging.lake_images import LakeImages
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.lake.storage import Lake

log = logging.getLogger(__name__)

FIT_MODES = ("pad", "crop")


# -- images ----------------------------------------------------------------------------------
def prepare_image(data: bytes, size: int, fit: str = "pad") -> np.ndarray:
    """Normalised PNG bytes -> uint8 [3, size, size]: RGBA composited onto white at full
    resolution (before resampling, so no fringes from the colour under alpha = 0), then squared
    by ``fit`` with Lanczos (antialiased when downscaling)."""
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, not {fit!r}")
    image = Image.fromarray(load_rgb(data), "RGB")
    if fit == "crop":
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
    else:
        image = ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=border_colour(image))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def border_colour(image: Image.Image) -> tuple[int, int, int]:
    """Median colour of the outermost pixel ring: the background a pad should continue."""
    pixels = np.asarray(image)
    ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return cast("tuple[int, int, int]", tuple(int(v) for v in np.median(ring, axis=0)))  # one per RGB channel


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the generators' tanh range)."""
    return images.float().div_(127.5).sub_(1.0)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> float [0, 1] for saving and metrics."""
    return images.add(1.0).div_(2.0).clamp_(0.0, 1.0)


def crop_and_flip(image: torch.Tensor, crop: int | None, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """A random ``crop`` x ``crop`` window of a (C, H, W) image (None: whole image) and, if
    ``flip``, a coin-flip horizontal mirror; all randomness from ``generator``."""
    _, h, w = image.shape
    if crop is not None:
        if crop > min(h, w):
            raise ValueError(f"crop_size {crop} is larger than the image ({h}x{w})")
        top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        image = image[:, top:top + crop, left:left + crop]
    if flip and bool(torch.rand(1, generator=generator) < 0.5):
        image = image.flip(-1)
    return image


@dataclass
class CatalogImages(Dataset):
    """Manifest rows and their images, decoded once and kept in memory as uint8 [N, 3, S, S].

    A map-style dataset for ``data.StepLoader``: item ``(index, sample_seed)`` -> (float image in
    [-1, 1], index); with ``crop_size``/``flip`` set, the sample seed picks its crop and mirror.
    """

    rows: pa.Table
    images: torch.Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sku, reason) left out
    crop_size: int | None = None
    flip: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        index, sample_seed = item if isinstance(item, tuple) else (item, 0)
        image = self.images[index]
        if self.crop_size is not None or self.flip:
            image = crop_and_flip(image, self.crop_size, self.flip, torch.Generator().manual_seed(sample_seed))
        return to_model_range(image), index

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def batch(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Float [-1, 1] whole images at ``indices`` (no augmentation): for evaluation."""
        return to_model_range(self.images[torch.as_tensor(indices, dtype=torch.long)])

    def fingerprint(self) -> str:
        return table_fingerprint(self.rows)


def load_catalog_images(lake: Lake, rows: pa.Table, image_size: int, fit: str = "pad") -> CatalogImages:
    """Read and prepare the image of every row (only the small squared copy stays in memory). A row
    whose image is missing or unreadable is left out with a warning naming its sku and the
    reason; no usable image at all is an error."""
    keys = rows.column("image_key").to_pylist()
    skus = rows.column("sku").to_pylist()
    images = LakeImages(lake, keys, preload=True, decode=functools.partial(prepare_image, size=image_size, fit=fit))
    reasons = dict(images.skipped)
    keep = [i for i, key in enumerate(keys) if key in images]
    skipped = [(skus[i], reasons.get(key, "not loaded")) for i, key in enumerate(keys) if key not in images]
    for sku, reason in skipped:
        log.warning("catalog image of sku %r left out of training: %s", sku, reason)
    if not keep:
        raise CatalogDataError(f"none of the {len(keys)} catalog rows has a usable image")
    pixels = torch.from_numpy(np.stack([images[keys[i]] for i in keep]))
    return CatalogImages(rows=rows.take(keep), images=pixels, skipped=skipped)


# -- CycleGAN's two domains ------------------------------------------------------------------
@dataclass
class PairedDomains:
    """Images of domain X and domain Y. Training draws X and Y independently (CycleGAN is
    unpaired); ``pairs`` keeps, for evaluation only, the (x index, y index) of the two shots of
    one product (first image per product in each domain, by sku)."""

    x: CatalogImages
    y: CatalogImages
    pairs: list[tuple[int, int]]
    x_filter: str
    y_filter: str

    def pair_product_ids(self) -> list[str]:
        ids = self.x.rows.column("product_id").to_pylist()
        return [ids[i] for i, _ in self.pairs]


def load_paired_domains(
    lake: Lake,
    table: pa.Table,
    x_filter: str | Sequence[str],
    y_filter: str | Sequence[str],
    image_size: int,
    fit: str = "pad",
) -> PairedDomains:
    x_rows, y_rows = domain_rows(table, x_filter, y_filter)
    x = load_catalog_images(lake, x_rows, image_size, fit)
    y = load_catalog_images(lake, y_rows, image_size, fit)
    return PairedDomains(x, y, product_pairs(x.rows, y.rows), _filter_text(x_filter), _filter_text(y_filter))


def _filter_text(filters: str | Sequence[str]) -> str:
    return ",".join(str(f) for f in parse_filters(filters))
