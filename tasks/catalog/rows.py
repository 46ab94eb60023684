"""The catalog rows a model trains and is evaluated on: the latest version of each SKU, one
split of products, label filters; and the options that choose them (``TrainConfig.data``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import pyarrow as pa
import pydantic

from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.catalog.labels import CatalogDataError, filter_rows
from catalog_enhance.tasks.catalog.splits import assign_split
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake

log = logging.getLogger(__name__)

# The fewest images a generative model (GAN, CycleGAN domain) is trained on.
MIN_TRAIN_IMAGES = 2

class CatalogDataOptions(pydantic.BaseModel):
    """The ``TrainConfig.data`` keys every catalog-image trainer understands; trainers subclass it
    with their own keys. Unknown keys are refused, so a typo is an error, not a silent default."""

    model_config = pydantic.ConfigDict(extra="forbid")
    # Options the catalog's label configuration fills in (`tasks.train.config.label_overrides`):
    # "filters" (the GAN's images, where the preset filters) or "domains" (domain_x, domain_y).
    label_configured: ClassVar[tuple[str, ...]] = ()

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
    if not manifests.exists(lake, "catalog"):
        raise CatalogDataError(f"no catalog manifest at {lake.uri(manifest_key('catalog'))!r}: run ingestion first")
    return manifests.current_catalog(manifests.read(lake, "catalog"))


def split_rows(table: pa.Table, split: str | None = "train", **split_options) -> pa.Table:
    """Rows whose product falls in ``split`` (None: all rows), by `splits.assign_split`.

    ``split_options`` (``fractions``, ``salt``) are passed to ``assign_split``; the defaults are
    what the pairs stage and evaluation use.
    """
    if split is None:
        return table
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


def require_images(count: int, what: str, minimum: int = MIN_TRAIN_IMAGES) -> None:
    """A generative model learns nothing from fewer than `minimum` images: say so before training."""
    if count < minimum:
        raise CatalogDataError(f"only {count} usable image(s) for {what}; at least {minimum} are needed")


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
