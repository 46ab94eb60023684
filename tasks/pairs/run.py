"""Planning, making and recording the pairs of the current catalog (the flow maps the middle step)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
from pydantic import BaseModel

from catalog_enhance.data_contracts.contracts import CATALOG
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.tasks.pairs.config import QUARANTINE_STAGE, UnpairableImage
from catalog_enhance.tasks.pairs.image import make_pairs_for_image, too_small


@dataclass(frozen=True)
class PairJob:
    """One catalog image and the scales still to make for it."""

    row: dict
    scales: tuple[int, ...]


@dataclass
class PairsPlan:
    config_hash: str
    jobs: list[PairJob]
    images_considered: int
    skipped_existing: int  # (image, scale) combinations already in the manifest
    duplicate_images: int  # current SKUs whose image is another SKU's (paired once)
    quarantine: list[dict]


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)


@dataclass
class PairsResult:
    config_hash: str
    rows: list[dict]  # new PAIRS rows made by this run
    quarantine: list[dict]  # QUARANTINE rows (stage "pairs") found by this run
    images_considered: int
    skipped_existing: int
    duplicate_images: int
    manifest_written: bool

    def by_split_scale(self) -> dict[str, int]:
        """New pairs per split and scale, keyed 'train/x2'."""
        counter = Counter(f"{r['split']}/x{r['scale']}" for r in self.rows)
        return dict(sorted(counter.items()))


class PairsSummary(BaseModel):
    config_hash: str
    images_considered: int
    pairs_written: int
    pairs_by_split_scale: dict[str, int]
    skipped_existing: int
    duplicate_images: int
    quarantined: int  # problems found by this run
    quarantine_appended: int  # of which new to the quarantine manifest
    manifest_written: bool
    seconds: float

    def counts(self) -> dict[str, object]:
        """What a person wants to see, in the order to show it (CLI, nightly summary)."""
        return {
            "config": self.config_hash,
            "images considered": self.images_considered,
            "pairs written": self.pairs_written,
            **{f"  {key}": n for key, n in self.pairs_by_split_scale.items()},
            "already paired (skipped)": self.skipped_existing,
            "duplicate images (paired once)": self.duplicate_images,
            "quarantined": self.quarantined,
            "  new in the quarantine manifest": self.quarantine_appended,
            "manifest written": "yes" if self.manifest_written else "no (nothing new)",
            "seconds": self.seconds,
        }


def summarize(result: PairsResult, quarantine_appended: int, seconds: float) -> PairsSummary:
    return PairsSummary(
        config_hash=result.config_hash,
        images_considered=result.images_considered,
        pairs_written=len(result.rows),
        pairs_by_split_scale=result.by_split_scale(),
        skipped_existing=result.skipped_existing,
        duplicate_images=result.duplicate_images,
        quarantined=len(result.quarantine),
        quarantine_appended=quarantine_appended,
        manifest_written=result.manifest_written,
        seconds=round(seconds, 3),
    )


# -- the catalog --------------------------------------------------------------------------------


def _quarantine(row: dict, reason: str, detail: str) -> dict:
    """A QUARANTINE record for a catalog row (run_id and time are set when it is recorded)."""
    return {
        "stage": QUARANTINE_STAGE,
        "sku": row.get("sku"),
        "feed_row": None,
        "image_uri": row.get("source_uri"),
        "reason": reason,
        "detail": detail,
        "run_id": None,
        "quarantined_at": datetime.now(timezone.utc),
    }


def plan_pairs(catalog_table: pa.Table, config: PairsConfig, existing_pairs: pa.Table | None = None) -> PairsPlan:
    """Which (image, scales) still need pairs; too-small ones become quarantine records.

    Reads nothing but the tables. An image shared by several SKUs is paired once, for the
    first (product_id, sku), so identical pixels never sit in two splits.
    """
    CATALOG.check(catalog_table)
    cfg_hash = config.config_hash
    done: set[tuple[str, int]] = set()
    if existing_pairs is not None and existing_pairs.num_rows:
        for sha, scale, h in zip(
            existing_pairs.column("image_sha256").to_pylist(),
            existing_pairs.column("scale").to_pylist(),
            existing_pairs.column("config_hash").to_pylist(),
        ):
            if h == cfg_hash:
                done.add((sha, int(scale)))
    current = manifests.current_catalog(catalog_table).to_pylist()
    by_image: dict[str, dict] = {}
    for row in sorted(current, key=lambda r: (r["product_id"], r["sku"])):
        by_image.setdefault(row["image_sha256"], row)
    jobs, quarantine, skipped = [], [], 0
    for sha, row in sorted(by_image.items()):
        todo = []
        for scale in config.scales:
            if (sha, scale) in done:
                skipped += 1
                continue
            problem = too_small(row["width"], row["height"], scale, config)
            if problem:
                name = f"{row['image_key']} (sku {row['sku']!r})"
                quarantine.append(_quarantine(row, "unsupported_image", f"{name}: {problem}"))
                continue
            todo.append(scale)
        if todo:
            jobs.append(PairJob(row=row, scales=tuple(todo)))
    return PairsPlan(
        config_hash=cfg_hash,
        jobs=jobs,
        images_considered=len(by_image),
        skipped_existing=skipped,
        duplicate_images=len(current) - len(by_image),
        quarantine=quarantine,
    )


def make_pairs_for_jobs(lake: Lake, jobs: Sequence[PairJob], config: PairsConfig, io_workers: int = 8) -> ChunkResult:
    """Read, pair and write the images of `jobs` with a thread pool; bad images are quarantined.

    Lake errors other than a missing image propagate (the caller retries the whole chunk; the
    content-addressed writes make that safe).
    """

    def one(job: PairJob) -> ChunkResult:
        try:
            data = lake.read_bytes(job.row["image_key"])
        except FileNotFoundError:
            detail = f"normalised image {job.row['image_key']} (sku {job.row['sku']!r}) is missing from the lake"
            return ChunkResult(quarantine=[_quarantine(job.row, "not_found", detail)])
        try:
            made = make_pairs_for_image(data, job.row, config, job.scales)
        except UnpairableImage as exc:
            return ChunkResult(quarantine=[_quarantine(job.row, exc.reason, exc.detail)])
        for hr_png, lr_png, row in made:
            lake.write_bytes_if_absent(row["hr_key"], hr_png)
            lake.write_bytes_if_absent(row["lr_key"], lr_png)
        return ChunkResult(rows=[row for _, _, row in made])

    result = ChunkResult()
    if not jobs:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(io_workers, len(jobs)))) as pool:
        for part in pool.map(one, jobs):  # map keeps job order: deterministic manifests
            result.rows += part.rows
            result.quarantine += part.quarantine
    return result


def finish_pairs(lake: Lake, plan: PairsPlan, chunks: Sequence[ChunkResult]) -> PairsResult:
    """Gather the chunks' rows and problems and append the rows to the pairs manifest (written
    only when there are new rows; label columns missing on either side are filled with nulls)."""
    rows = [row for chunk in chunks for row in chunk.rows]
    quarantine = plan.quarantine + [q for chunk in chunks for q in chunk.quarantine]
    return PairsResult(
        config_hash=plan.config_hash,
        rows=rows,
        quarantine=quarantine,
        images_considered=plan.images_considered,
        skipped_existing=plan.skipped_existing,
        duplicate_images=plan.duplicate_images,
        manifest_written=bool(rows) and manifests.append(lake, "pairs", rows) > 0,
    )


def build_pairs(
    lake: Lake,
    catalog_table: pa.Table,
    config: PairsConfig | None = None,
    existing_pairs: pa.Table | None = None,
    *,
    io_workers: int = 8,
) -> PairsResult:
    """Make the missing pairs of the current catalog in one go (the flow maps the middle step)."""
    config = config or PairsConfig()
    plan = plan_pairs(catalog_table, config, existing_pairs)
    chunk = make_pairs_for_jobs(lake, plan.jobs, config, io_workers)
    return finish_pairs(lake, plan, [chunk])


# -- quarantine manifest ------------------------------------------------------------------------


def record_quarantine(lake: Lake, records: Sequence[dict], run_id: str) -> int:
    """Append this run's problems to the quarantine manifest with ingestion's append-only rule
    (a problem already recorded is not recorded again; nothing is written when none is new).
    Returns how many records were new."""
    return manifests.quarantine(lake, records, run_id=run_id, now=datetime.now(timezone.utc))
