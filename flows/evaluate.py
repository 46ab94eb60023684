"""evaluate-models: evaluate every new version, gate it, write the report (work in tasks.evaluate).

The flow is a thin shell over `tasks.evaluate.pipeline` (the same functions tests call directly):
one task per batch of versions each kind's plugin asks for (super-resolution: all its versions
together, they share each scale's test images; GAN / CGAN / CycleGAN: one a version), one for the
HTML report, then Prefect artifacts (a markdown summary
with the report's lake URI, a table of every metric). Every task writes to the lake, so none is
cached (`cache_policy=NONE`). A version whose evaluation fails is listed and the others go on;
the flow then fails (after the report and artifacts are written), so a broken run never shows green.

`evaluate_sr_command` is what `catalog-enhance evaluate-sr` runs: any folder of HR photos, degraded
like the training pairs, scored like the test split, a CSV written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from catalog_enhance.tasks.inference.enhancers import classical_enhancers
from catalog_enhance.tasks.evaluate.report import latest_report_key, write_evaluation_report
from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings
from catalog_enhance.flows.rendering import evaluation_markdown
from catalog_enhance.tasks.evaluate.pipeline import current_champions, pending_versions
from catalog_enhance.tasks.evaluate.results import EvaluationSummary
from catalog_enhance.tasks.kinds import EvaluationContext, KindEvaluation, get_kind, list_kinds
from catalog_enhance.tasks.evaluate.sr_eval import evaluate_sr_folder, write_sr_report_csv
from catalog_enhance.tasks.evaluate.sr_test import SCALES, choose_sr_model, pairs_degradation, sr_enhancer
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.inference.trained import load_trained


def _lake(lake_url: str | None) -> Lake:
    return Lake.from_settings(load_settings(**({"lake_url": lake_url} if lake_url else {})))


@task(name="evaluate-kind", cache_policy=NONE, task_run_name="evaluate-{kind}")
def evaluate_kind_task(lake_url: str | None, kind: str, rows: list[dict], context: EvaluationContext) -> KindEvaluation:
    """Evaluate, record and gate one batch of versions of one kind (its plugin's `evaluate`)."""
    return get_kind(kind).evaluate(_lake(lake_url), rows, context)


@task(name="write-evaluation-report", cache_policy=NONE)
def write_report_task(lake_url: str | None, summary: EvaluationSummary) -> str:
    return write_evaluation_report(_lake(lake_url), summary)


@flow(name="evaluate-models")
def evaluate_models(
    lake_url: str | None = None,
    models: list[str] | None = None,
    classifier: dict | None = None,
) -> EvaluationSummary:
    """Evaluate every registered version not evaluated yet (of `models`: names or versions; default
    all), record every figure and gate decision, and write one HTML report to the lake. With
    nothing new, nothing is evaluated or written; `report_uri` is then the latest report's.

    `classifier`: overrides of the FID feature extractor's `ClassifierSettings` (steps, width, ...).
    """
    logger = get_run_logger()
    lake = _lake(lake_url)
    run_id = str(flow_run.id) if flow_run.id else None
    pending = pending_versions(lake, models)
    logger.info("%d version(s) to evaluate: %s", len(pending), ", ".join(r["version"] for r in pending) or "none")

    # Baselines at every scale on a full run; with a model selection, only where its versions are.
    context = EvaluationContext(run_id=run_id, full_run=not models, classifier=ClassifierSettings(**(classifier or {})))
    summary = EvaluationSummary()
    for kind in list_kinds():
        rows = [r for r in pending if r["kind"] == kind.name]
        for batch in kind.evaluation_batches(rows):
            summary.add(evaluate_kind_task(lake_url, kind.name, batch, context))
    for item in summary.deferred:
        logger.warning("not evaluated yet (stays pending): %s", item)
    summary.champions, summary.champion_baselines = current_champions(lake)

    if summary.nothing_new:
        key = latest_report_key(lake)
        summary.report_key, summary.report_uri = key, lake.uri(key) if key else None
        logger.info("nothing new to evaluate; latest report: %s", summary.report_uri or "none")
    else:
        key = write_report_task(lake_url, summary)
        summary.report_key, summary.report_uri = key, lake.uri(key)
        create_table_artifact(key="evaluation-metrics", table=summary.metric_rows() or [{"metric": "none"}],
                              description="Every headline figure of the versions evaluated in this run")
        logger.info("report: %s", summary.report_uri)
    create_markdown_artifact(key="evaluation-summary", markdown=evaluation_markdown(summary),
                             description="Model evaluation and gate decisions")
    for row in summary.champion_rows():
        logger.info("%s %s (%s): %s", row["model"], row["version"], row["kind"], row["reason"])
    if summary.failures:
        raise RuntimeError(f"evaluation failed for {len(summary.failures)} version(s): " + "; ".join(summary.failures))
    return summary


# -- catalog-enhance evaluate-sr --------------------------------------------------------------------


@dataclass
class FolderEvaluation:
    per_image: pd.DataFrame
    summary: pd.DataFrame
    csv_path: Path  # per image
    summary_csv_path: Path
    model: str | None  # "name version" scored beside the baselines, None if none was available
    note: str


def evaluate_sr_command(
    images: str | Path,
    scale: int,
    model: str | None = None,
    lake_url: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
) -> FolderEvaluation:
    """Score the classical baselines and an SR model on a folder of HR photos.

    Each photo is degraded by the current pairs config's degradation (the lake's pairs manifest;
    the default if there is none) and scored exactly like the test split. `model`: a model name
    (its newest version) or an exact version; default: the SR champion if it is trained for
    `scale`, else the newest SR version for `scale`, else only the baselines. Writes the per-image
    CSV to `out` (default `./sr_evaluation_x{scale}.csv`) and the summary beside it (`.summary.csv`).
    """
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {SCALES}, got {scale}")
    lake = _lake(lake_url)
    enhancers = classical_enhancers()
    row = choose_sr_model(lake, scale, model)
    label = None
    if row is not None:
        label = f"{row['name']} {row['version']}"
        enhancers[label] = sr_enhancer(load_trained(lake, row))
        note = f"model: {label}"
    else:
        note = f"no SR model trained for x{scale} in {lake.root_uri}: classical baselines only"
    per_image, summary = evaluate_sr_folder(images, scale, pairs_degradation(lake), enhancers, seed=seed)
    csv_path = write_sr_report_csv(per_image, Path(out) if out else Path(f"sr_evaluation_x{scale}.csv"))
    summary_path = write_sr_report_csv(summary, csv_path.with_suffix(".summary.csv"))
    return FolderEvaluation(per_image, summary, csv_path, summary_path, label, note)


__all__ = ["FolderEvaluation", "evaluate_models", "evaluate_sr_command"]
