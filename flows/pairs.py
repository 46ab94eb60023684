"""make-pairs: LR/HR training pairs from the catalog manifest (the work is in tasks.pairs)."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.flows.limits import decorator_timeout, retry_unless_refused
from catalog_enhance.flows.rendering import counts_markdown
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.tasks.imaging.degradation_config import degradation_name, named_degradation
from catalog_enhance.tasks.pairs.run import (
    ChunkResult,
    PairJob,
    PairsSummary,
    finish_pairs,
    make_pairs_for_jobs,
    plan_pairs,
    record_quarantine,
    summarize,
)
from catalog_enhance.tasks.lake.storage import Lake, open_lake


@task(name="make-pairs-chunk", cache_policy=NONE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_refused, timeout_seconds=decorator_timeout("make-pairs-chunk"))
def make_pairs_chunk(lake: Lake, jobs: list[PairJob], config: PairsConfig, io_workers: int) -> ChunkResult:
    # Safe to retry: pair objects are content-addressed and written only if absent.
    return make_pairs_for_jobs(lake, jobs, config, io_workers)


@flow(name="make-pairs", timeout_seconds=decorator_timeout("make-pairs"))
def make_pairs(
    lake_url: str | None = None,
    config: PairsConfig | None = None,
    chunk_size: int | None = None,
    degradation: str | None = None,
) -> PairsSummary:
    """Make the missing LR/HR pairs of the current catalog; one task per chunk of images.

    `degradation` names a config of `NAMED_DEGRADATIONS` (`bicubic`, `light`, `realistic`) and
    replaces `config`'s; the pairs manifest records the config itself (its canonical JSON).
    """
    started = time.perf_counter()
    logger = get_run_logger()
    settings, lake = open_lake(lake_url)
    config = config or PairsConfig()
    if degradation is not None:
        config = config.model_copy(update={"degradation": named_degradation(degradation)})
    if not manifests.exists(lake, "catalog"):
        raise FileNotFoundError(f"no catalog manifest at {lake.uri(manifest_key('catalog'))}: run ingestion first")
    catalog = manifests.read(lake, "catalog")
    existing = manifests.read(lake, "pairs")

    plan = plan_pairs(catalog, config, existing)
    size = chunk_size or settings.batch_size
    chunks = [plan.jobs[i : i + size] for i in range(0, len(plan.jobs), size)]
    logger.info(
        "config %s (degradation %s): %d images, %d to pair in %d chunk(s), %d (image, scale) already paired",
        plan.config_hash, degradation_name(config.degradation) or "custom", plan.images_considered, len(plan.jobs), len(chunks), plan.skipped_existing,
    )
    results: list[ChunkResult] = []
    if chunks:
        futures = make_pairs_chunk.map(unmapped(lake), chunks, unmapped(config), unmapped(settings.io_concurrency))
        # .result() re-raises a chunk's final failure, so a broken run never ends green.
        results = [f.result() for f in futures]

    result = finish_pairs(lake, plan, results)
    appended = record_quarantine(lake, result.quarantine, run_id=str(flow_run.id))
    summary = summarize(result, appended, time.perf_counter() - started)
    logger.info(
        "pairs written %d %s, skipped %d, quarantined %d (%d new), manifest %s",
        summary.pairs_written, summary.pairs_by_split_scale, summary.skipped_existing,
        summary.quarantined, summary.quarantine_appended,
        "appended to" if summary.manifest_written else "unchanged",
    )
    create_markdown_artifact(key="make-pairs-summary", markdown=counts_markdown("## make-pairs", summary.counts()), description="make-pairs counts")
    return summary
