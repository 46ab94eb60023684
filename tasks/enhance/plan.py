"""Planning: which current catalog images to enhance, grouped into one job per input image and
params identity.

Incremental: a current catalog image is enhanced only if the manifest has no row for (model
version, params_hash, input sha256, sku). `params_hash` is the hash of the parameters that
shape the output pixels for that image (`EnhanceParams.identity`: scale or target long side,
tile, overlap, and the style model version when the transform applies to that image), and it
is a part of the output key. So a re-run writes nothing, a new champion version enhances
everything again under its own keys (the old version's outputs stay), and a label change that
moves an image into or out of the style domain re-enhances exactly that image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

from catalog_enhance.data_contracts.enhancements import ENHANCEMENT_KEY_COLUMNS
from catalog_enhance.data_contracts.layout import enhanced_image_key
from catalog_enhance.tasks.catalog.labels import filter_rows
from catalog_enhance.tasks.enhance.choice import ModelRef
from catalog_enhance.tasks.enhance.params import EnhanceParams


class SkuRef(NamedTuple):
    sku: str
    catalog_version: int
    source_uri: str


@dataclass(frozen=True)
class EnhanceJob:
    """One input image to enhance under one params identity, for every SKU that shows it."""

    input_sha256: str
    input_key: str
    width: int
    height: int
    style_transform: bool
    params_hash: str
    params_json: str
    output_key: str
    skus: tuple[SkuRef, ...]


def plan_enhancement(catalog_current: pa.Table, manifest: pa.Table, champion: ModelRef, params: EnhanceParams,
                     *, style: ModelRef | None = None, style_domain: str | list[str] | None = None
                     ) -> list[EnhanceJob]:
    """The jobs for every current catalog row (`current_catalog(...)`) without a manifest row for
    (champion version, its params_hash, input sha256, sku). Reads nothing but the tables."""
    if params.style_transform and style is None:
        raise ValueError("style_transform needs the style model")
    in_domain: set[str] = set()
    if params.style_transform:
        in_domain = set(filter_rows(catalog_current, style_domain or "style=lifestyle").column("sku").to_pylist())
    columns = [manifest.column(c).to_pylist() for c in ENHANCEMENT_KEY_COLUMNS]
    done = set(zip(*columns))
    groups: dict[tuple[str, str], list[dict]] = {}
    identities: dict[str, tuple[str, bool]] = {}
    for row in sorted(catalog_current.to_pylist(), key=lambda r: r["sku"]):
        styled = row["sku"] in in_domain
        image_params = params.for_image(styled)
        # `styled` only with a style model (checked above); `style is not None` says so to mypy.
        style_version = style.version if styled and style is not None else None
        params_hash = image_params.params_hash(style_version)
        identities[params_hash] = (image_params.params_json(style_version), styled)
        if (champion.version, params_hash, row["image_sha256"], row["sku"]) in done:
            continue
        groups.setdefault((row["image_sha256"], params_hash), []).append(row)
    jobs = []
    for (sha, params_hash), rows in sorted(groups.items()):
        first = rows[0]
        params_json, styled = identities[params_hash]
        jobs.append(EnhanceJob(
            input_sha256=sha,
            input_key=first["image_key"],
            width=first["width"],
            height=first["height"],
            style_transform=styled,
            params_hash=params_hash,
            params_json=params_json,
            output_key=enhanced_image_key(champion.name, champion.version, params_hash, sha),
            skus=tuple(SkuRef(r["sku"], int(r["version"]), r["source_uri"]) for r in rows),
        ))
    return jobs


def default_chunk_size(jobs: int, batch_size: int) -> int:
    """About 8 chunks (progress to watch, work to spread over workers), 8 to `batch_size` images each."""
    return max(1, min(batch_size, max(8, math.ceil(jobs / 8))))
