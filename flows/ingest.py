"""The ingestion flow: the pure core of `tasks/ingest.py`, with batches as Prefect tasks.

10,000 feed rows become ceil(10,000 / batch_size) task runs, not 10,000; the I/O concurrency
lives inside each batch (a thread pool). A batch that keeps failing after its retries fails the
flow: its exception propagates through `.result()`.
"""

from __future__ import annotations

import uuid

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from catalog_enhance.tasks.batching import chunked
from catalog_enhance.flows.limits import decorator_timeout, retry_unless_refused
from catalog_enhance.flows.rendering import counts_markdown
from catalog_enhance.tasks.ingest.batch import BatchResult, ingest_batch
from catalog_enhance.tasks.ingest.plan import WorkItem
from catalog_enhance.tasks.ingest.run import IngestSummary, finish_ingestion, prepare_ingestion
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.storage import Lake, open_lake

# Rows named one by one in the log and the table artifact; the quarantine manifest has them all.
MAX_LISTED = 500


@task(name="ingest-batch", retries=2, retry_delay_seconds=[2, 10], cache_policy=NONE,
      retry_condition_fn=retry_unless_refused, timeout_seconds=decorator_timeout("ingest-batch"))
def ingest_batch_task(items: list[WorkItem], settings: Settings, feed_dir: str, run_id: str) -> BatchResult:
    """One batch; a retry re-does it safely (content-addressed writes, manifests written after)."""
    result = ingest_batch(Lake.from_settings(settings), settings, items, feed_dir=feed_dir, run_id=run_id)
    get_run_logger().info(
        "batch of %d: %d new rows, %d unchanged, %d quarantined",
        len(items), result.new_rows, result.unchanged, len(result.quarantined),
    )
    return result


# Batches run two at a time; each already runs `io_concurrency` threads of I/O.
# The ignore: Prefect's stubs make TaskRunner invariant in its future type, so no concrete runner
# matches the decorator's TaskRunner[PrefectFuture[Any]]; any runner is valid at runtime.
@flow(name="ingest-catalog", task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
      timeout_seconds=decorator_timeout("ingest-catalog"))
def ingest_catalog(feed: str, lake_url: str | None = None, batch_size: int | None = None) -> IngestSummary:
    """Ingest a catalog feed (CSV, Parquet or JSON Lines) into the lake, incrementally."""
    logger = get_run_logger()
    settings, lake = open_lake(lake_url)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    prepared = prepare_ingestion(lake, settings, feed, run_id=run_id)
    chunks = chunked(prepared.plan.items, batch_size or settings.batch_size)
    logger.info("%s: %d rows, %d to check in %d batch(es), %d refused at planning",
                feed, prepared.rows, len(prepared.plan.items), len(chunks), len(prepared.plan.quarantined))

    futures = ingest_batch_task.map(
        chunks, settings=unmapped(settings), feed_dir=unmapped(prepared.feed_dir), run_id=unmapped(run_id)
    )
    results = [future.result() for future in futures]  # raises if a batch failed: the flow fails
    summary = finish_ingestion(lake, prepared, results)

    for record in summary.quarantine[:MAX_LISTED]:
        where = f"row {record['feed_row']}" if record["sku"] is None else f"{record['sku']} (row {record['feed_row']})"
        logger.warning("quarantined %s: %s: %s", where, record["reason"], record["detail"])
    if summary.quarantined > MAX_LISTED:
        logger.warning("... and %d more in %s", summary.quarantined - MAX_LISTED, summary.quarantine_key)
    logger.info("ingestion: %s", summary.counts())
    _artifacts(summary, lake)
    return summary


def _artifacts(summary: IngestSummary, lake: Lake) -> None:
    markdown = counts_markdown("# Catalog ingestion", summary.counts(),
                               intro=f"Feed `{summary.feed}` into `{lake.url or lake.root}`")
    create_markdown_artifact(key="ingest-summary", markdown=markdown, description="Ingestion counts")
    if summary.quarantine:
        rows = [
            {k: r[k] for k in ("sku", "feed_row", "image_uri", "reason", "detail")}
            for r in summary.quarantine[:MAX_LISTED]
        ]
        create_table_artifact(key="ingest-quarantine", table=rows,
                              description=f"Quarantined rows (all of them in {summary.quarantine_key})")
