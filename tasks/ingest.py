"""Catalog ingestion, the pure core: feed rows in, images and manifests in the lake out.

    read_feed -> plan_ingestion -> ingest_batch (per chunk, threads for I/O) -> finish_ingestion

Incremental by design. Each catalog row remembers a cheap `source_fingerprint` (size + mtime,
ETag, ...). On the next run a row whose fingerprint, URI and labels are unchanged is neither
read nor written. A row whose bytes changed, or whose labels changed, gets `version + 1`; every
version stays in the catalog manifest, and `current_catalog` picks the latest per SKU. A file
that was only touched (new fingerprint, same bytes) keeps its version; its fingerprint is
updated in place. Manifests are written only when something changed, so a second run over the
same feed writes nothing at all.

A bad row never stops the run: it becomes a quarantine record naming the SKU, the feed row, the
URI, the reason (one of `QUARANTINE_REASONS`) and a detail. Only a bad feed (unreadable, a
required column missing) or a failing lake stops it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog_enhance.data_contracts.contracts import (
    CATALOG,
    CONDITION_COLUMNS,
    FEED,
    FEED_KNOWN_COLUMNS,
    LABEL_PREFIX,
    QUARANTINE,
)
from catalog_enhance.data_contracts.layout import manifest_key, normalized_image_key, original_image_key
from catalog_enhance.tasks.sources import uris as sources
from catalog_enhance.tasks.imaging.codec import ImageRejected, decode_untrusted
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.storage import Lake

STAGE = "ingest"
FEED_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Catalog columns that describe the image itself: reused as they are when only labels change.
IMAGE_COLUMNS = (
    "source_sha256", "source_format", "source_bytes", "original_key", "image_key", "image_sha256",
    "width", "height", "mode", "has_alpha", "exif_orientation", "icc_profile", "sharpness",
)


class FeedError(ValueError):
    """The feed as a whole cannot be used (unreadable, unknown format, a required column missing)."""


# -- reading the feed ------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedRow:
    feed_row: int  # 1-based data row number (the first row after a CSV header is 1)
    sku: str | None
    image_uri: str | None
    category: str | None
    style: str | None
    product_id: str | None  # defaults to the SKU
    labels: tuple[tuple[str, str | None], ...] = ()  # (label_<name>, value), sorted by name
    problem: str | None = None  # the row could not be parsed at all (e.g. a bad JSON line)

    def conditions(self) -> dict[str, str | None]:
        """Everything that conditions the image: category, style, product and free labels."""
        return {"category": self.category, "style": self.style, "product_id": self.product_id, **dict(self.labels)}


def read_feed(feed: str, settings: Settings | None = None) -> tuple[list[FeedRow], str]:
    """Read a CSV, Parquet or JSON Lines feed (chosen by extension) from a path or URL.

    Returns the rows and the folder relative image paths are resolved against. A missing
    required column refuses the whole feed with one line naming the file and the column; a
    row-level problem is left for `plan_ingestion` to quarantine.
    """
    fmt = FEED_FORMATS.get(_extension(feed))
    if fmt is None:
        raise FeedError(f"{feed}: unknown feed format (use {', '.join(sorted(FEED_FORMATS))})")
    options = settings.s3_options() if settings is not None and urlsplit(feed).scheme == "s3" else {}
    try:
        with fsspec.open(feed, "rb", **options) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise FeedError(f"{feed}: feed not found") from None
    except Exception as exc:
        raise FeedError(f"{feed}: cannot read the feed: {type(exc).__name__}: {exc}") from None
    try:
        columns, records = {"csv": _parse_csv, "parquet": _parse_parquet, "jsonl": _parse_jsonl}[fmt](data)
    except FeedError as exc:
        raise FeedError(f"{feed}: {exc}") from None
    except Exception as exc:
        raise FeedError(f"{feed}: not a valid {fmt} feed: {type(exc).__name__}: {exc}") from None

    labels = _label_names(feed, [c for c in columns if c not in FEED_KNOWN_COLUMNS])
    # The FEED contract judges the columns (an empty table of them), before any row is looked at.
    names = [c for c in columns if c in FEED_KNOWN_COLUMNS] + list(labels.values())
    header = pa.table({name: pa.array([], pa.string()) for name in names})
    missing = [v.column for v in FEED.validate(header) if v.row is None and v.column in FEED.required]
    if missing:
        raise FeedError(
            f"{feed}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (found: {', '.join(columns) or 'none'})"
        )
    rows = []
    for number, record in enumerate(records, start=1):
        if isinstance(record, str):  # a line that could not be parsed; the text is the detail
            rows.append(FeedRow(number, None, None, None, None, None, problem=record))
            continue
        sku = record.get("sku")
        rows.append(
            FeedRow(
                feed_row=number,
                sku=sku,
                image_uri=record.get("image_uri"),
                category=record.get("category"),
                style=record.get("style"),
                product_id=record.get("product_id") or sku,
                labels=tuple(sorted((labels[c], record.get(c)) for c in labels)),
            )
        )
    return rows, sources.feed_folder(feed)


def _extension(feed: str) -> str:
    path = urlsplit(feed).path if "://" in feed else feed
    name = path.rsplit("/", 1)[-1].lower()
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _clean(value: object) -> str | None:
    """Feed cells as stripped strings; empty means missing."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    value = value.strip()
    return value or None


def _parse_csv(data: bytes) -> tuple[list[str], list[dict | str]]:
    text = data.decode("utf-8-sig")  # a spreadsheet's BOM is not part of the first column name
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return [], []
    columns = [c.strip() for c in header]
    records: list[dict | str] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            records.append(f"{len(cells)} fields for {len(columns)} columns (unquoted comma?)")
            continue
        records.append({c: _clean(v) for c, v in zip(columns, cells) if c})
    return [c for c in columns if c], records


def _parse_parquet(data: bytes) -> tuple[list[str], list[dict | str]]:
    table = pq.read_table(io.BytesIO(data))
    records = [{k.strip(): _clean(v) for k, v in row.items()} for row in table.to_pylist()]
    return [c.strip() for c in table.column_names], records


def _parse_jsonl(data: bytes) -> tuple[list[str], list[dict | str]]:
    columns: dict[str, None] = {}
    records: list[dict | str] = []
    for line_number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append(f"line {line_number} is not valid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            records.append(f"line {line_number} is a JSON {type(obj).__name__}, not an object")
            continue
        record = {str(k).strip(): _clean(v) for k, v in obj.items()}
        columns.update(dict.fromkeys(record))
        records.append(record)
    return list(columns), records


def _label_names(feed: str, extra: Sequence[str]) -> dict[str, str]:
    """Map extra feed columns to `label_<name>` columns (lower case, [a-z0-9_])."""
    names: dict[str, str] = {}
    for column in extra:
        base = column.removeprefix(LABEL_PREFIX) if column.lower().startswith(LABEL_PREFIX) else column
        slug = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_")
        if not slug:
            raise FeedError(f"{feed}: column {column!r} cannot be used as a label name")
        label = LABEL_PREFIX + slug
        if label in names.values():
            other = next(c for c, n in names.items() if n == label)
            raise FeedError(f"{feed}: columns {other!r} and {column!r} both become label {label!r}")
        names[column] = label
    return names


# -- planning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkItem:
    row: FeedRow
    previous: dict | None  # the latest catalog row of this SKU, None for a new SKU


@dataclass
class Plan:
    items: list[WorkItem]
    quarantined: list[dict]  # quarantine records (without run_id / time yet)
    duplicates_dropped: int = 0  # identical repeated rows, silently merged


def quarantine_record(row: FeedRow, reason: str, detail: str) -> dict:
    return {
        "stage": STAGE,
        "sku": row.sku,
        "feed_row": row.feed_row,
        "image_uri": row.image_uri,
        "reason": reason,
        "detail": detail,
    }


def plan_ingestion(rows: Iterable[FeedRow], current: Mapping[str, dict]) -> Plan:
    """Quarantine rows that cannot be ingested, merge identical duplicates, attach each SKU's
    latest catalog row (`current`, from `latest_by_sku`) for the incremental check."""
    quarantined: list[dict] = []
    valid: dict[str, list[FeedRow]] = defaultdict(list)
    for row in rows:
        where = f"row {row.feed_row}"
        if row.problem:
            quarantined.append(quarantine_record(row, "missing_field", f"{where}: {row.problem}"))
            continue
        missing = [c for c in FEED.required if getattr(row, c) is None]
        fields = [c for c in missing if c not in CONDITION_COLUMNS]
        if fields:
            quarantined.append(quarantine_record(row, "missing_field", f"{where}: missing {', '.join(fields)}"))
        elif missing:
            quarantined.append(
                quarantine_record(row, "missing_label", f"{where} (SKU {row.sku}): missing {', '.join(missing)}")
            )
        else:
            valid[row.sku].append(row)

    items: list[WorkItem] = []
    dropped = 0
    for sku, group in valid.items():
        distinct = {(r.image_uri, tuple(sorted(r.conditions().items()))) for r in group}
        if len(distinct) > 1:
            differ = [
                name for name in ("image_uri", *group[0].conditions())
                if len({r.image_uri if name == "image_uri" else r.conditions().get(name) for r in group}) > 1
            ]
            numbers = ", ".join(str(r.feed_row) for r in group)
            for r in group:
                quarantined.append(quarantine_record(
                    r, "duplicate_conflict", f"SKU {sku} is in rows {numbers} with different {', '.join(differ)}"
                ))
            continue
        dropped += len(group) - 1
        items.append(WorkItem(group[0], current.get(sku)))
    return Plan(items=items, quarantined=quarantined, duplicates_dropped=dropped)


def chunked(items: Sequence, size: int) -> list[list]:
    """Split work into batches: one task run per batch, not per row."""
    size = max(1, int(size))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


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
    try:
        source = sources.resolve(row.image_uri, feed_dir=feed_dir, settings=settings)
        fingerprint = sources.fingerprint(source, settings)
        same_labels = previous is not None and _same_conditions(row, previous)
        same_uri = previous is not None and previous["source_uri"] == row.image_uri
        if same_labels and same_uri and fingerprint is not None and fingerprint == previous["source_fingerprint"]:
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


# -- manifests -------------------------------------------------------------------------------
def load_catalog(lake: Lake) -> pa.Table:
    key = manifest_key("catalog")
    return CATALOG.table(lake.read_table(key)) if lake.exists(key) else CATALOG.empty()


def load_quarantine(lake: Lake) -> pa.Table:
    key = manifest_key("quarantine")
    return QUARANTINE.table(lake.read_table(key)) if lake.exists(key) else QUARANTINE.empty()


def current_catalog(table: pa.Table) -> pa.Table:
    """The latest version of every SKU (the catalog keeps all versions)."""
    if table.num_rows == 0:
        return table
    latest = table.group_by("sku").aggregate([("version", "max")])
    keys = pc.binary_join_element_wise(table["sku"], pc.cast(table["version"], pa.string()), "\x00")
    wanted = pc.binary_join_element_wise(latest["sku"], pc.cast(latest["version_max"], pa.string()), "\x00")
    current = table.filter(pc.is_in(keys, value_set=wanted))
    return current.sort_by("sku")


def latest_by_sku(table: pa.Table) -> dict[str, dict]:
    return {row["sku"]: row for row in current_catalog(table).to_pylist()}


def _sku_version_keys(table: pa.Table) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(table["sku"], pc.cast(table["version"], pa.string()), "\x00")


def merge_manifest(existing: pa.Table, new_rows: Sequence[dict] | Sequence[pa.Table] | None,
                   refreshed_rows: Sequence[dict] = ()) -> pa.Table:
    """The new catalog: every earlier version kept, refreshed rows updated in place, new rows
    appended; sorted by (sku, version) so the same content always gives the same table.

    Merged as Arrow tables, never as one Python dict per row (a 10k-row catalog would cost
    ~30 MB of dicts at the moment of the merge)."""
    parts = [existing]
    if refreshed_rows:
        patched = CATALOG.table(list(refreshed_rows))
        keep = pc.invert(pc.is_in(_sku_version_keys(existing), value_set=_sku_version_keys(patched).combine_chunks()))
        parts = [existing.filter(keep), patched]
    new_rows = list(new_rows or ())
    if all(isinstance(part, pa.Table) for part in new_rows):
        parts += new_rows
    else:
        parts.append(CATALOG.table(new_rows))
    parts = [CATALOG.table(part) for part in parts if part.num_rows]  # each in its own label columns
    if not parts:
        return CATALOG.empty()
    table = pa.concat_tables(parts, promote_options="default")
    return CATALOG.table(table.sort_by([("sku", "ascending"), ("version", "ascending")]))


def append_quarantine(existing: pa.Table, records: Sequence[dict], *, run_id: str, now: datetime) -> pa.Table | None:
    """Append-only quarantine log. A problem already recorded (same row, URI, reason, detail) is
    not recorded again, so re-running a feed with the same bad rows writes nothing. None when
    there is nothing new."""
    def key(r: Mapping) -> tuple:
        return (r["stage"], r["sku"], r["feed_row"], r["image_uri"], r["reason"], r["detail"])

    seen = {key(r) for r in existing.to_pylist()}
    fresh = []
    for record in records:
        if key(record) not in seen:
            seen.add(key(record))
            fresh.append({**record, "run_id": run_id, "quarantined_at": now})
    if not fresh:
        return None
    return QUARANTINE.table(existing.to_pylist() + fresh)


# -- one run, end to end (the flow runs the same steps with batches as tasks) -----------------
@dataclass
class IngestSummary:
    feed: str
    run_id: str
    rows: int = 0  # rows in the feed
    ingested_new: int = 0  # new SKUs (version 1)
    new_versions: int = 0  # SKUs whose image or labels changed (version n+1)
    unchanged: int = 0  # neither read nor written (fingerprint unchanged), or same bytes
    quarantined: int = 0
    duplicates_dropped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    objects_written: int = 0
    manifests_written: list[str] = field(default_factory=list)
    catalog_key: str = manifest_key("catalog")
    quarantine_key: str = manifest_key("quarantine")
    seconds: float = 0.0
    quarantine: list[dict] = field(default_factory=list, repr=False)  # this run's records

    def counts(self) -> dict[str, object]:
        return {
            "feed rows": self.rows,
            "ingested (new SKUs)": self.ingested_new,
            "new versions": self.new_versions,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            **{f"  quarantined: {reason}": n for reason, n in sorted(self.by_reason.items())},
            "images written": self.objects_written,
            "manifests written": ", ".join(self.manifests_written) or "none (nothing changed)",
            "seconds": round(self.seconds, 2),
        }


@dataclass
class PreparedIngestion:
    feed: str
    feed_dir: str
    rows: int
    plan: Plan
    catalog: pa.Table
    run_id: str
    started: float


def prepare_ingestion(lake: Lake, settings: Settings, feed: str, *, run_id: str | None = None) -> PreparedIngestion:
    started = time.perf_counter()
    rows, feed_dir = read_feed(feed, settings)
    catalog = load_catalog(lake)
    plan = plan_ingestion(rows, latest_by_sku(catalog))
    return PreparedIngestion(feed, feed_dir, len(rows), plan, catalog, run_id or uuid.uuid4().hex, started)


def finish_ingestion(lake: Lake, prepared: PreparedIngestion, results: Iterable[BatchResult]) -> IngestSummary:
    """Merge the batches into the manifests and write them, only when something changed."""
    total = BatchResult()
    for result in results:
        total.extend(result)
    quarantine = prepared.plan.quarantined + total.quarantined
    now = datetime.now(timezone.utc)
    written: list[str] = []
    new_catalog = total.new_catalog()
    if new_catalog or total.refreshed_rows:
        catalog = merge_manifest(prepared.catalog, new_catalog, total.refreshed_rows)
        written.append(lake.write_table(manifest_key("catalog"), catalog))
    if quarantine:
        log = append_quarantine(load_quarantine(lake), quarantine, run_id=prepared.run_id, now=now)
        if log is not None:
            written.append(lake.write_table(manifest_key("quarantine"), log))
    new_versions = sum(int(pc.sum(pc.greater(t["version"], 1)).as_py() or 0) for t in new_catalog)
    return IngestSummary(
        feed=prepared.feed,
        run_id=prepared.run_id,
        rows=prepared.rows,
        ingested_new=total.new_rows - new_versions,
        new_versions=new_versions,
        unchanged=total.unchanged + len(total.refreshed_rows),
        quarantined=len(quarantine),
        duplicates_dropped=prepared.plan.duplicates_dropped,
        by_reason=dict(Counter(r["reason"] for r in quarantine)),
        objects_written=total.objects_written,
        manifests_written=written,
        seconds=time.perf_counter() - prepared.started,
        quarantine=quarantine,
    )


def ingest_feed(lake: Lake, settings: Settings, feed: str, *, run_id: str | None = None) -> IngestSummary:
    """The whole ingestion without Prefect: batches of `settings.batch_size`, one after another."""
    prepared = prepare_ingestion(lake, settings, feed, run_id=run_id)
    results = [
        ingest_batch(lake, settings, chunk, feed_dir=prepared.feed_dir, run_id=prepared.run_id)
        for chunk in chunked(prepared.plan.items, settings.batch_size)
    ]
    return finish_ingestion(lake, prepared, results)
