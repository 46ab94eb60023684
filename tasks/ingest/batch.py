"""Ingesting a batch of planned rows: fetch, decode untrusted bytes, write content-addressed objects."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from catalog_enhance.data_contracts.contracts import CATALOG, CONDITION_COLUMNS, LABEL_PREFIX
from catalog_enhance.data_contracts.layout import normalized_image_key, original_image_key
from catalog_enhance.tasks.imaging.codec import ImageRejected, decode_untrusted
from catalog_enhance.tasks.ingest.plan import WorkItem, quarantine_record
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.sources import uris as sources
from catalog_enhance.tasks.sources.feeds import FeedRow

# Catalog columns that describe the image itself: reused as they are when only labels change.
IMAGE_COLUMNS = (
    "source_sha256", "source_format", "source_bytes", "original_key", "image_key", "image_sha256",
    "width", "height", "mode", "has_alpha", "exif_orientation", "icc_profile", "sharpness",
)



# -- ingesting -------------------------------------------------------------------------------
# Decoding is CPU and memory work (pixels, colour conversion, PNG encoding, sharpness: ~10x the
# file's size, hundreds of MB for a large photo); fetching is waiting. So `io_concurrency` threads
# fetch, and hand the decoding to a few long-lived threads, one per core, process-wide: more
# cannot decode faster, each decode in flight holds one more working set, and each thread that
# ever decoded keeps a malloc arena grown to a working set. With every fetch thread decoding, the
# ingesting process's peak grew with the feed until all 16 arenas had (bench/NOTES.md).
_DECODERS: tuple[int, ThreadPoolExecutor] | None = None
_DECODERS_LOCK = threading.Lock()


def _decoders() -> ThreadPoolExecutor:
    """This process's decoding threads (made on first use; a forked child makes its own)."""
    global _DECODERS
    with _DECODERS_LOCK:
        if _DECODERS is None or _DECODERS[0] != os.getpid():
            _DECODERS = (os.getpid(), ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                                         thread_name_prefix="ingest-decode"))
        return _DECODERS[1]


@dataclass
class BatchResult:
    catalog_rows: list[dict] = field(default_factory=list)  # new SKUs and new versions, not yet compacted
    refreshed_rows: list[dict] = field(default_factory=list)  # same version, new fingerprint/URI
    unchanged: int = 0  # skipped by fingerprint: not read, not written
    quarantined: list[dict] = field(default_factory=list)
    objects_written: int = 0
    # New catalog rows of finished batches as CATALOG tables (see `compact`).
    catalog_tables: list[pa.Table] = field(default_factory=list)

    def extend(self, other: "BatchResult") -> None:
        self.catalog_rows += other.catalog_rows
        self.refreshed_rows += other.refreshed_rows
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        self.objects_written += other.objects_written
        self.catalog_tables += other.catalog_tables

    def compact(self) -> "BatchResult":
        """Move `catalog_rows` into a validated CATALOG table (done at the end of every batch).

        Why: a row dict with its strings takes ~3 KB of Python objects, made in the I/O threads
        between the image buffers, so holding every row until the manifest is written made peak
        memory grow with the feed (1k -> 10k rows: +94 MiB, measured in bench/NOTES.md). As
        Arrow columns a row takes a few hundred bytes, allocated apart from the image buffers.
        """
        if self.catalog_rows:
            self.catalog_tables.append(CATALOG.table(self.catalog_rows))
            self.catalog_rows = []
        return self

    def new_catalog(self) -> list[pa.Table]:
        """Every new catalog row (compacted or not), as CATALOG tables (not concatenated: the
        merge concatenates them with the manifest once, instead of copying them twice)."""
        tables = [t for t in self.catalog_tables if t.num_rows]
        if self.catalog_rows:
            tables.append(CATALOG.table(self.catalog_rows))
        return tables

    @property
    def new_rows(self) -> int:
        return len(self.catalog_rows) + sum(t.num_rows for t in self.catalog_tables)


def ingest_batch(
    lake: Lake,
    settings: Settings,
    items: Sequence[WorkItem],
    *,
    feed_dir: str,
    run_id: str | None = None,
) -> BatchResult:
    """Ingest one batch with `settings.io_concurrency` threads; a bad row is quarantined and the
    batch goes on. Lake errors propagate (the caller retries the batch; writes are idempotent)."""
    now = datetime.now(timezone.utc)
    result = BatchResult()
    if not items:
        return result
    workers = max(1, min(settings.io_concurrency, len(items)))

    def one(item: WorkItem) -> BatchResult:
        return _ingest_one(lake, settings, item, feed_dir=feed_dir, now=now, run_id=run_id)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        for outcome in pool.map(one, items):
            result.extend(outcome)
    return result.compact()


def _ingest_one(lake: Lake, settings: Settings, item: WorkItem, *, feed_dir: str, now: datetime,
                run_id: str | None) -> BatchResult:
    row, previous = item.row, item.previous
    if row.image_uri is None:  # plan_ingestion quarantines such rows: a WorkItem always has one
        raise ValueError(f"feed row {row.feed_row} (SKU {row.sku}): a work item without an image_uri")
    try:
        source = sources.resolve(row.image_uri, feed_dir=feed_dir, settings=settings)
        fingerprint = sources.fingerprint(source, settings)
        same_labels = previous is not None and _same_conditions(row, previous)
        same_uri = previous is not None and previous["source_uri"] == row.image_uri
        if (previous is not None and same_labels and same_uri and fingerprint is not None
                and fingerprint == previous["source_fingerprint"]):
            return BatchResult(unchanged=1)

        data = sources.fetch(source, settings)
        source_sha = hashlib.sha256(data).hexdigest()
        if previous is not None and source_sha == previous["source_sha256"]:
            if same_labels:
                if same_uri and fingerprint == previous["source_fingerprint"]:
                    return BatchResult(unchanged=1)  # no fingerprint available: re-read, same bytes
                # Touched or moved, same bytes: same version, remember the new fingerprint.
                refreshed = {**previous, "source_uri": row.image_uri, "source_fingerprint": fingerprint}
                return BatchResult(refreshed_rows=[refreshed])
            # Only the labels changed: a new version of the same pixels, nothing to decode.
            image = {c: previous[c] for c in IMAGE_COLUMNS}
            catalog_row = _catalog_row(row, image, previous, fingerprint, now, run_id)
            return BatchResult(catalog_rows=[catalog_row])

        normal = _decoders().submit(decode_untrusted, data, max_pixels=settings.max_image_pixels,
                                    name=_name(row)).result()
    except ImageRejected as exc:
        return BatchResult(quarantined=[quarantine_record(row, exc.reason, f"SKU {row.sku}: {exc.detail}")])

    original_key = original_image_key(source_sha, normal.source_extension)
    image_key = normalized_image_key(normal.sha256)
    written = int(lake.write_bytes_if_absent(original_key, data))
    written += int(lake.write_bytes_if_absent(image_key, normal.png))
    image = {
        "source_sha256": source_sha,
        "source_format": normal.source_format,
        "source_bytes": len(data),
        "original_key": original_key,
        "image_key": image_key,
        "image_sha256": normal.sha256,
        "width": normal.width,
        "height": normal.height,
        "mode": normal.mode,
        "has_alpha": normal.has_alpha,
        "exif_orientation": normal.exif_orientation,
        "icc_profile": normal.icc_profile,
        "sharpness": normal.sharpness,
    }
    return BatchResult(catalog_rows=[_catalog_row(row, image, previous, fingerprint, now, run_id)],
                       objects_written=written)


def _name(row: FeedRow) -> str:
    return f"row {row.feed_row}"


def _same_conditions(row: FeedRow, previous: Mapping) -> bool:
    mine = row.conditions()
    theirs = {k: v for k, v in previous.items()
              if k in CONDITION_COLUMNS or k == "product_id" or k.startswith(LABEL_PREFIX)}
    return all(mine.get(k) == theirs.get(k) for k in set(mine) | set(theirs))


def _catalog_row(row: FeedRow, image: dict, previous: Mapping | None, fingerprint: str | None,
                 now: datetime, run_id: str | None) -> dict:
    return {
        "sku": row.sku,
        "version": 1 if previous is None else int(previous["version"]) + 1,
        "source_uri": row.image_uri,
        "source_fingerprint": fingerprint,
        **row.conditions(),
        **image,
        "ingested_at": now,
        "run_id": run_id,
    }
