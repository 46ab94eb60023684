"""Catalog-image datasets for the generative models (GAN, CGAN, CycleGAN).

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

Only the ``train`` split is used for training, decided per ``product_id`` by the pairs module's
``assign_split``, so the products evaluation holds out are never trained on (and a studio and a
lifestyle shot of one product always fall in the same split).

Labels: ``LabelVocabulary`` maps condition columns (``category``, ``style``, ``label_<name>``) to
indices; it is built from the training manifest and stored with the checkpoint as lists of
strings. Domains for CycleGAN come from label filters such as ``"style=lifestyle"``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pydantic
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from catalog_enhance.data_contracts.contracts import CATALOG, LABEL_PREFIX
from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.ingest import current_catalog
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.base import table_fingerprint
from catalog_enhance.tasks.train.data import LakeImages

log = logging.getLogger(__name__)

FIT_MODES = ("pad", "crop")
# Index 0 of every vocabulary column: a missing (null/empty) label, and, on request, a label the
# vocabulary has never seen. Reserving it keeps `encode` total for rows with a missing label_*.
UNKNOWN_LABEL = "<unknown>"


class CatalogDataError(ValueError):
    """The catalog cannot provide what training asked for (no manifest, no rows, bad filter...)."""


class CatalogDataOptions(pydantic.BaseModel):
    """The ``TrainConfig.data`` keys every catalog-image trainer understands; trainers subclass it
    with their own keys. Unknown keys are refused, so a typo is an error, not a silent default."""

    model_config = pydantic.ConfigDict(extra="forbid")

    image_size: int = pydantic.Field(64, ge=8)
    fit: Literal["pad", "crop"] = "pad"
    split: Literal["train", "val", "test"] | None = "train"  # None: every split (never for real runs)
    filters: str | list[str] | None = None  # label filters ANDed, e.g. "style=studio"
    # Only if the pairs run used non-default ones: the split must be the one evaluation holds out.
    split_fractions: tuple[float, float, float] | None = None  # (train, val, test)
    split_salt: str | None = None

    def split_options(self) -> dict:
        options = {"fractions": self.split_fractions, "salt": self.split_salt}
        return {k: v for k, v in options.items() if v is not None}

    @classmethod
    def parse(cls, data: Mapping, model: str):
        try:
            return cls(**data)
        except pydantic.ValidationError as error:
            problems = "; ".join(f"data.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"invalid training data options for {model}: {problems}") from None


# -- manifest rows ---------------------------------------------------------------------------
def latest_catalog(lake: Lake) -> pa.Table:
    """The catalog manifest with only the latest version of each sku, sorted by sku."""
    key = manifest_key("catalog")
    if not lake.exists(key):
        raise CatalogDataError(f"no catalog manifest at {lake.uri(key)!r}: run ingestion first")
    return current_catalog(CATALOG.check(lake.read_table(key)))


def split_rows(table: pa.Table, split: str | None = "train", **split_options) -> pa.Table:
    """Rows whose product falls in ``split`` (None: all rows), by the pairs module's assignment.

    ``split_options`` (``fractions``, ``salt``) are passed to ``assign_split``; the defaults are
    the pairs module's, which is what evaluation holds out.
    """
    if split is None:
        return table
    from catalog_enhance.tasks.pairs import assign_split

    keep = [assign_split(pid, **split_options) == split for pid in table.column("product_id").to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))


def catalog_training_rows(
    lake: Lake, *, split: str | None = "train", filters: str | Sequence[str] | None = None, **split_options
) -> pa.Table:
    """The latest catalog rows of ``split`` matching ``filters``: what a generative model trains on."""
    table = latest_catalog(lake)
    rows = filter_rows(split_rows(table, split, **split_options), filters)
    if rows.num_rows == 0:
        raise CatalogDataError(
            f"no catalog rows for split={split!r}, filters={filters!r} (of {table.num_rows} latest rows)"
        )
    return rows


# -- label columns and filters ---------------------------------------------------------------
def resolve_label_column(table: pa.Table, name: str) -> str:
    """``category``/``style``/``label_x`` as given, or ``x`` meaning ``label_x``; clear error otherwise."""
    name = name.strip()
    for candidate in (name, LABEL_PREFIX + name):
        if candidate in table.column_names and (candidate in ("category", "style") or candidate.startswith(LABEL_PREFIX)):
            return candidate
    known = ["category", "style"] + sorted(n for n in table.column_names if n.startswith(LABEL_PREFIX))
    raise CatalogDataError(f"unknown label column {name!r}; the catalog has: {', '.join(known)}")


@dataclass(frozen=True)
class LabelFilter:
    """``column=value`` (or ``column=a|b`` for any of several values)."""

    column: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "LabelFilter":
        column, sep, values = text.partition("=")
        parsed = tuple(v.strip() for v in values.split("|") if v.strip())
        if not sep or not column.strip() or not parsed:
            raise CatalogDataError(f"bad label filter {text!r}: expected 'column=value' (e.g. 'style=lifestyle')")
        return cls(column.strip(), parsed)

    def __str__(self) -> str:
        return f"{self.column}={'|'.join(self.values)}"


def parse_filters(filters: str | Sequence[str] | None) -> list[LabelFilter]:
    """A filter string (several joined by ',') or a list of them; all are ANDed."""
    if filters is None:
        return []
    items = filters.split(",") if isinstance(filters, str) else [p for f in filters for p in f.split(",")]
    return [LabelFilter.parse(item) for item in items if item.strip()]


def filter_rows(table: pa.Table, filters: str | Sequence[str] | None) -> pa.Table:
    """Rows matching every filter, e.g. ``filter_rows(t, "style=lifestyle")`` or
    ``filter_rows(t, ["category=food|hats", "colour=red"])`` (``colour`` means ``label_colour``).
    A null label matches nothing; an unknown column is a ``CatalogDataError`` naming the known ones.
    """
    mask = pa.array([True] * table.num_rows, pa.bool_())
    for item in parse_filters(filters):
        column = table.column(resolve_label_column(table, item.column))
        matches = pc.is_in(column, value_set=pa.array(item.values, column.type))
        mask = pc.and_(mask, pc.fill_null(matches, False))
    return table.filter(mask)


# -- label vocabulary ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelVocabulary:
    """Condition columns and, per column, its labels; index 0 is ``UNKNOWN_LABEL``.

    Stored with checkpoints as plain lists of strings (``to_state``/``from_state``), so a model
    trained on one catalog generates with the same label indices later.
    """

    columns: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    _index: tuple[dict[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.labels):
            raise ValueError(f"{len(self.columns)} columns but {len(self.labels)} label lists")
        for column, labels in zip(self.columns, self.labels):
            if not labels or labels[0] != UNKNOWN_LABEL or len(set(labels)) != len(labels):
                raise ValueError(f"vocabulary column {column!r}: labels must start with {UNKNOWN_LABEL!r} and be unique")
        object.__setattr__(self, "_index", tuple({label: i for i, label in enumerate(ls)} for ls in self.labels))

    @classmethod
    def from_table(cls, table: pa.Table, columns: Sequence[str]) -> "LabelVocabulary":
        """The sorted labels of ``columns`` (names as in ``filter_rows``) found in ``table``."""
        if not columns:
            raise CatalogDataError("a label vocabulary needs at least one condition column")
        resolved = tuple(resolve_label_column(table, c) for c in columns)
        labels = []
        for column in resolved:
            seen = {v for v in table.column(column).to_pylist() if v is not None and v.strip()}
            labels.append((UNKNOWN_LABEL, *sorted(seen - {UNKNOWN_LABEL})))
        return cls(resolved, tuple(labels))

    @property
    def sizes(self) -> list[int]:
        """Number of classes per column (``<unknown>`` included): the models' ``num_classes``."""
        return [len(labels) for labels in self.labels]

    def encode(self, rows: pa.Table | Sequence[Mapping[str, object]], *, unknown: str = "raise") -> torch.Tensor:
        """LongTensor [N, n_conditions]. A missing label is index 0; a label not in the vocabulary
        raises (``unknown="raise"``) or maps to index 0 (``unknown="unknown"``, its embedding is
        not trained on real labels: for previews, never for training)."""
        if unknown not in ("raise", "unknown"):
            raise ValueError(f"unknown must be 'raise' or 'unknown', not {unknown!r}")
        if isinstance(rows, pa.Table):
            missing = [c for c in self.columns if c not in rows.column_names]
            if missing:
                raise CatalogDataError(f"rows lack the condition column(s) {missing}")
            values = [rows.column(c).to_pylist() for c in self.columns]
        else:
            values = [[row.get(c) for row in rows] for c in self.columns]
        n = len(values[0]) if values else 0
        codes = torch.zeros((n, len(self.columns)), dtype=torch.long)
        for j, (column, index, column_values) in enumerate(zip(self.columns, self._index, values)):
            for i, value in enumerate(column_values):
                if value is None or not str(value).strip():
                    continue
                code = index.get(value)
                if code is None:
                    if unknown == "raise":
                        known = ", ".join(self.labels[j][1:])
                        raise CatalogDataError(f"row {i}: {column}={value!r} is not in the vocabulary ({known})")
                    continue
                codes[i, j] = code
        return codes

    def decode(self, codes: torch.Tensor) -> list[dict[str, str]]:
        """Inverse of ``encode``: one {column: label} dict per row."""
        return [
            {column: self.labels[j][int(code)] for j, (column, code) in enumerate(zip(self.columns, row))}
            for row in codes.tolist()
        ]

    def to_state(self) -> dict[str, list]:
        return {"columns": list(self.columns), "labels": [list(ls) for ls in self.labels]}

    @classmethod
    def from_state(cls, state: Mapping[str, list]) -> "LabelVocabulary":
        return cls(tuple(state["columns"]), tuple(tuple(ls) for ls in state["labels"]))


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
    return tuple(int(v) for v in np.median(ring, axis=0))


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


def domain_rows(table: pa.Table, x_filter: str | Sequence[str], y_filter: str | Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """The rows of X and Y; each domain must be non-empty."""
    x_rows, y_rows = filter_rows(table, x_filter), filter_rows(table, y_filter)
    for name, spec, rows in (("X", x_filter, x_rows), ("Y", y_filter, y_rows)):
        if rows.num_rows == 0:
            raise CatalogDataError(f"domain {name} ({spec!r}) matches no row of the {table.num_rows} catalog rows")
    overlap = set(x_rows.column("sku").to_pylist()) & set(y_rows.column("sku").to_pylist())
    if overlap:
        log.warning("%d sku(s) are in both domains (X=%r, Y=%r), e.g. %s", len(overlap), x_filter, y_filter, sorted(overlap)[:3])
    return x_rows, y_rows


def product_pairs(x_rows: pa.Table, y_rows: pa.Table) -> list[tuple[int, int]]:
    """(x index, y index) for every product_id present in both tables, in X's row order."""
    first_y: dict[str, int] = {}
    for i, pid in enumerate(y_rows.column("product_id").to_pylist()):
        first_y.setdefault(pid, i)
    pairs, seen = [], set()
    for i, pid in enumerate(x_rows.column("product_id").to_pylist()):
        if pid in first_y and pid not in seen:
            seen.add(pid)
            pairs.append((i, first_y[pid]))
    return pairs


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

