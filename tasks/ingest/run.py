"""One ingestion run end to end (the flow runs the same steps with batches as tasks), and what it
appends to the catalog: new SKUs and versions, and refreshed rows (a later row for the same
version); every earlier version kept, nothing rewritten."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from catalog_enhance.data_contracts.contracts import CATALOG, CONDITION_COLUMNS, LABEL_PREFIX
from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.batching import chunked
from catalog_enhance.tasks.ingest.batch import BatchResult, ingest_batch
from catalog_enhance.tasks.ingest.plan import Plan, plan_ingestion
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.sources.feeds import read_feed

@dataclass
class CatalogAppend:
    """What one ingestion appends to the catalog, planned against the catalog at commit time."""

    rows: pa.Table | None
    new_skus: int = 0  # version 1
    new_versions: int = 0  # version n+1
    refreshed: int = 0  # same version, new URI or fingerprint (an update: a later row wins)
    already_there: int = 0  # new rows dropped: another run committed the same image and labels first


def catalog_additions(current: pa.Table, new_rows: Sequence[pa.Table] | Sequence[dict] | None,
                      refreshed_rows: Sequence[dict] = ()) -> CatalogAppend:
    """The rows to append to the catalog as it is now (`current`) for an ingestion's new rows
    (numbered against the catalog it read at its start) and refreshed rows.

    When no other run committed to these SKUs meanwhile (the usual case) the rows go as they
    are, as Arrow tables. Otherwise each affected SKU is re-planned against `current`: a row
    whose image and labels another run already committed is dropped, any other becomes the
    next version after the current latest; a refresh of a version that is no longer the latest
    (or that the other run made identically) is dropped. Every earlier version is kept: rows are
    only ever appended (an update is a later row with the same (sku, version))."""
    listed = list(new_rows or ())
    tables = [t for t in listed if isinstance(t, pa.Table)]
    dicts = [r for r in listed if not isinstance(r, pa.Table)]
    if dicts:
        tables.append(CATALOG.table(dicts))
    fresh = [CATALOG.table(t) for t in tables if t.num_rows]
    refreshed = [CATALOG.table(list(refreshed_rows))] if refreshed_rows else []
    incoming = [*fresh, *refreshed]
    if not incoming:
        return CatalogAppend(None)
    skus = pc.unique(pa.chunked_array([chunk for t in incoming for chunk in t["sku"].chunks], pa.string()))
    mine = current.filter(pc.is_in(current["sku"], value_set=skus)) if current.num_rows else current
    latest = {row["sku"]: row for row in manifests.current_catalog(mine).to_pylist()} if mine.num_rows else {}

    def moved(table: pa.Table, offset: int) -> list[bool]:
        """Rows planned against a latest version that is no longer the latest."""
        return [(latest[s]["version"] if s in latest else 0) != v - offset
                for s, v in zip(table["sku"].to_pylist(), table["version"].to_pylist())]

    plan = CatalogAppend(None)
    out: list[pa.Table] = []
    for table in fresh:
        stale = moved(table, 1)
        if not any(stale):
            out.append(table)
            continue
        out.append(table.filter(pa.array([not s for s in stale], pa.bool_())))
        replanned = []
        for row in table.filter(pa.array(stale, pa.bool_())).to_pylist():
            now = latest.get(row["sku"])
            if now is not None and _same_product(now, row):
                plan.already_there += 1
                continue
            replanned.append({**row, "version": 1 if now is None else int(now["version"]) + 1})
        if replanned:
            out.append(CATALOG.table(replanned))
    for table in refreshed:
        stale = moved(table, 0)
        keep = []
        for row, is_stale in zip(table.to_pylist(), stale):
            now = latest.get(row["sku"])
            same = now is not None and (now["source_uri"], now["source_fingerprint"]) == (
                row["source_uri"], row["source_fingerprint"])
            keep.append(not is_stale and not same)
        plan.refreshed += sum(keep)
        out.append(table.filter(pa.array(keep, pa.bool_())))
    out = [t for t in out if t.num_rows]
    if not out:
        return plan
    plan.rows = CATALOG.table(pa.concat_tables(out, promote_options="default"))
    added = plan.rows.slice(0, plan.rows.num_rows - plan.refreshed)  # refreshed rows come last
    plan.new_versions = int(pc.sum(pc.greater(added["version"], 1)).as_py() or 0)
    plan.new_skus = added.num_rows - plan.new_versions
    return plan


def _same_product(committed: Mapping, row: Mapping) -> bool:
    """Same image and same labels: the row adds nothing to the committed version."""
    columns = {c for c in (*committed, *row)
               if c in CONDITION_COLUMNS or c == "product_id" or c.startswith(LABEL_PREFIX)}
    return committed["image_sha256"] == row["image_sha256"] and all(
        committed.get(c) == row.get(c) for c in columns)


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
    catalog = manifests.read(lake, "catalog")
    plan = plan_ingestion(rows, manifests.latest_by_sku(catalog))
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
    appended = CatalogAppend(None)
    if new_catalog or total.refreshed_rows:
        def change(current: pa.Table) -> pa.Table | None:
            nonlocal appended  # re-planned on every attempt: the last one is what was committed
            appended = catalog_additions(current, new_catalog, total.refreshed_rows)
            return appended.rows

        if manifests.commit(lake, "catalog", change) is not None:
            written.append(manifest_key("catalog"))
    if manifests.quarantine(lake, quarantine, run_id=prepared.run_id, now=now):
        written.append(manifest_key("quarantine"))
    return IngestSummary(
        feed=prepared.feed,
        run_id=prepared.run_id,
        rows=prepared.rows,
        ingested_new=appended.new_skus,
        new_versions=appended.new_versions,
        unchanged=total.unchanged + len(total.refreshed_rows) + appended.already_there,
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
