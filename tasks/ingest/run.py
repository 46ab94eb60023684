"""One ingestion run end to end (the flow runs the same steps with batches as tasks), and the
catalog merge: every earlier version kept, refreshed rows updated in place, new rows appended."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from catalog_enhance.data_contracts.contracts import CATALOG
from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.batching import chunked
from catalog_enhance.tasks.ingest.batch import BatchResult, ingest_batch
from catalog_enhance.tasks.ingest.plan import Plan, plan_ingestion
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.sources.feeds import read_feed

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
    if new_catalog or total.refreshed_rows:
        manifests.commit(lake, "catalog", lambda current: merge_manifest(current, new_catalog, total.refreshed_rows))
        written.append(manifest_key("catalog"))
    if manifests.quarantine(lake, quarantine, run_id=prepared.run_id, now=now):
        written.append(manifest_key("quarantine"))
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
