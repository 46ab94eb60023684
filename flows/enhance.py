"""enhance-catalog: every catalog image without an output for (champion version, params) is enhanced.

The work is in `tasks.enhance`; here it gets a Prefect shape: the models are chosen,
loaded and checked once in the flow, the jobs are cut into chunks and one `enhance-chunk` task
runs per chunk, a progress artifact follows the chunks as they finish, and a markdown summary
and a table of quarantined images are left on the run.

Models reach the tasks as `ModelChoice` (registry rows: names, versions, checkpoint keys), not
as modules: each task loads them through `load_model`, a per-process cache. On the default
thread pool that cache was filled by the flow itself, so no task loads anything; on a Dask
cluster (`CE_DASK_ADDRESS`, see flows/runners.py) each worker process loads each model once,
instead of receiving a pickled module with every chunk. One design serves both.

Caching and retries: `enhance-chunk` writes to the lake, so its cache policy is NONE. INPUTS
caching would not add resumability: outputs are content-addressed and written only if absent,
and a chunk that finds its outputs already in the lake records them without recomputing, so
re-running a crashed run (or a retried chunk) only enhances the unfinished images, with the lake
as the one source of truth; a Prefect cache would instead need result persistence shared by
every worker, and could return rows for outputs that were since deleted. A chunk is retried
(after 2, 10, 30 s) only when it failed on a transient storage error (`retry_condition_fn`); a
corrupt image or a failed tile never reaches the task boundary (it is quarantined inside the
chunk), and other deterministic errors are not retried. A chunk that still fails fails the run,
after the other chunks' rows are saved.
"""

from __future__ import annotations

import time
import uuid
from typing import cast

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError

from catalog_enhance.flows.limits import decorator_timeout, timeout
from catalog_enhance.flows.ingest import ingest_catalog
from catalog_enhance.flows.rendering import enhance_summary_markdown
from catalog_enhance.flows.runners import task_runner_for
from catalog_enhance.tasks.enhance import (
    ChunkResult,
    EnhanceJob,
    EnhanceParams,
    EnhanceSummary,
    ModelChoice,
    default_chunk_size,
    enhance_jobs,
    finish_enhancement,
    is_transient_storage_error,
    load_models,
    prepare_enhancement,
    summarize,
)
from catalog_enhance.tasks.enhance.params import EnhancementMode
from catalog_enhance.tasks.batching import chunked
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.lake.storage import Lake, open_lake
from catalog_enhance.tasks.runtime import select_runtime

# Quarantined images named one by one in the log and the table artifact; the manifest has them all.
MAX_LISTED = 500
# Chunks at once on local threads: each already keeps torch's intra-op threads busy, the second
# overlaps its PNG decoding/encoding and lake I/O with the first one's inference.
LOCAL_CHUNKS_AT_ONCE = 2


def retry_on_transient_storage_error(task, task_run, state) -> bool:
    """Retry a failed chunk only for connection/timeout/throttling/server errors."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the failure being judged
        return is_transient_storage_error(exc)
    return False


@task(name="enhance-chunk", cache_policy=NONE, retries=3, retry_delay_seconds=[2, 10, 30],
      retry_condition_fn=retry_on_transient_storage_error, task_run_name="enhance-chunk-{index}",
      timeout_seconds=decorator_timeout("enhance-chunk"))
def enhance_chunk(index: int, jobs: list[EnhanceJob], settings: Settings, choice: ModelChoice,
                  params: EnhanceParams, device: str | None, run_id: str) -> ChunkResult:
    """One chunk; safe to re-run (content-addressed outputs written if absent, found ones reused)."""
    lake = Lake.from_settings(settings)
    runtime = select_runtime(device)
    models = load_models(lake, choice, runtime)  # per-process cache: loaded at most once per process
    result = enhance_jobs(lake, jobs, models, params, runtime, run_id=run_id,
                          io_workers=min(4, settings.io_concurrency))
    get_run_logger().info(
        "chunk %d: %d image(s) enhanced, %d resumed, %d quarantined in %.1f s",
        index, result.images_enhanced, result.resumed, len(result.quarantine), result.seconds,
    )
    return result


def _default_task_runner():
    """The runner when the caller sets none (a deployment run): decided when this module is
    imported, which for a deployment is a fresh process with the worker's environment, so
    CE_DASK_ADDRESS is honoured there; other callers pass `task_runner_for(settings)` through
    `enhance.with_options(task_runner=...)`, as for every flow (flows/runners.py)."""
    try:
        return task_runner_for(Settings(), max_workers=LOCAL_CHUNKS_AT_ONCE)
    except (ValidationError, ValueError):  # bad configuration (also non-JSON: SettingsError): the flow reports it
        return ThreadPoolTaskRunner(max_workers=LOCAL_CHUNKS_AT_ONCE)


@flow(name="enhance-catalog", task_runner=_default_task_runner(), timeout_seconds=decorator_timeout("enhance-catalog"))
def enhance(
    feed: str | None = None,
    lake_url: str | None = None,
    scale: int | None = 2,
    target_long_side: int | None = None,
    style_transform: bool = False,
    model: str | None = None,
    chunk_size: int | None = None,
    device: str | None = None,
    style_model: str | None = None,
    mode: EnhancementMode = "fidelity",
) -> EnhanceSummary:
    """Enhance every current catalog image that has no output for (model version, params).

    `feed`: ingest it first (incrementally). `scale`, or `target_long_side` (exact long side,
    wins over scale). `style_transform`: the CycleGAN studio transform after SR for images in the
    style model's domain (lifestyle). `model`: a name or version; default the SR champion the
    gate promoted (`NoChampion` when there is none: name a model). `device`: cpu, cuda, ...
    `style_model`: the studio transform's model (name or version); default the CycleGAN champion.
    `mode`: `fidelity` (the SR champion) or `restore` (the restoration champion: also undoes JPEG,
    noise and blur); recorded in each output's lineage row (`params_json`).
    """
    logger = get_run_logger()
    settings, lake = open_lake(lake_url)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    if feed:
        ingest_catalog(feed=feed, lake_url=settings.lake_url)

    params = EnhanceParams(mode=mode, scale=scale, target_long_side=target_long_side, style_transform=style_transform)
    prepared = prepare_enhancement(lake, params, model=model, style_model=style_model,
                                   runtime=select_runtime(device), run_id=run_id)
    for role, chosen in (("SR", prepared.choice.sr), ("style", prepared.choice.style)):
        if chosen is not None:
            logger.info("%s model %s %s (champion source: %s): %s", role, chosen.ref.name, chosen.ref.version,
                chosen.source, chosen.reason)
    size = chunk_size or default_chunk_size(len(prepared.jobs), settings.batch_size)
    chunks = chunked(prepared.jobs, size)
    total_images = len(prepared.jobs)
    logger.info("%d current catalog image(s); %d to enhance (%s) in %d chunk(s)",
                prepared.images_considered, total_images, params.describe(), len(chunks))

    # Called from sync code, so the id itself (never the coroutine of an async caller).
    progress = cast(uuid.UUID, create_progress_artifact(
        0.0 if chunks else 100.0, key="enhance-progress",
        description=f"{total_images} image(s) to enhance with {prepared.choice.sr.ref.version}",
    ))
    results: list[ChunkResult] = []
    failures: list[str] = []
    started = time.perf_counter()
    if chunks:
        futures = enhance_chunk.with_options(timeout_seconds=timeout("enhance-chunk", settings)).map(
            list(range(len(chunks))), chunks, settings=unmapped(settings), choice=unmapped(prepared.choice),
            params=unmapped(params), device=unmapped(device), run_id=unmapped(run_id),
        )
        sizes = {future: len(chunk) for future, chunk in zip(futures, chunks)}
        done = 0
        for future in as_completed(list(futures)):
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - saved and re-raised after the others' rows are kept
                failures.append(f"{type(exc).__name__}: {exc}")
            done += sizes[future]
            update_progress_artifact(progress, 100.0 * done / total_images,
                                     description=f"{done}/{total_images} image(s) processed")
    enhance_seconds = time.perf_counter() - started

    finished = finish_enhancement(lake, results, run_id=run_id)
    summary = summarize(lake, prepared, finished, enhance_seconds=enhance_seconds)
    for record in summary.quarantine[:MAX_LISTED]:
        logger.warning("quarantined %s: %s", record["sku"], record["detail"])
    if summary.quarantined > MAX_LISTED:
        logger.warning("... and %d more in the quarantine manifest", summary.quarantined - MAX_LISTED)
    logger.info("%s", summary.verdict())
    logger.info("enhancement: %s", summary.counts())
    _artifacts(summary)
    if failures:
        # A failed task does not fail its flow by itself: raise, so the run is not green.
        raise RuntimeError(f"{len(failures)} of {len(chunks)} enhancement chunk(s) failed: " + "; ".join(failures))
    return summary


def _artifacts(summary: EnhanceSummary) -> None:
    create_markdown_artifact(key="enhance-summary", markdown=enhance_summary_markdown(summary),
                             description="Catalog enhancement counts and throughput")
    if summary.quarantine:
        rows = [{k: r[k] for k in ("sku", "image_uri", "reason", "detail")} for r in summary.quarantine[:MAX_LISTED]]
        create_table_artifact(key="enhance-quarantine", table=rows,
                              description="Images that could not be enhanced (all of them in the quarantine manifest)")
