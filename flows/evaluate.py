"""evaluate-models: evaluate every new version, gate it, write the report (work in tasks.evaluate).

The flow is a thin shell over `tasks.evaluate.pipeline` (the same functions tests call directly):
one task per batch of versions each kind's plugin asks for (super-resolution: all its versions
together, they share each scale's test images; GAN / CGAN / CycleGAN: one a version), one for the
HTML report, then Prefect artifacts (a markdown summary
with the report's lake URI, a table of every metric). Every task writes to the lake, so none is
cached (`cache_policy=NONE`). A version whose evaluation fails is listed and the others go on;
the flow then fails (after the report and artifacts are written), so a broken run never shows green.

`evaluate_sr_command` is what `catalog-enhance evaluate-sr` runs: any folder of HR photos, degraded
like the training pairs, or the user's own HR/LR folder pairs, scored like the test split, a CSV written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from catalog_enhance.flows.limits import TASK_RETRIES, RETRY_DELAY_SECONDS, decorator_timeout, retry_unless_refused, timeout
from catalog_enhance.tasks.inference.enhancers import classical_enhancers
from catalog_enhance.tasks.evaluate.report import latest_report_key, write_evaluation_report
from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings
from catalog_enhance.flows.rendering import evaluation_markdown
from catalog_enhance.tasks.evaluate.pipeline import current_champions, pending_versions
from catalog_enhance.tasks.evaluate.results import EvaluationSummary
from catalog_enhance.tasks.enhance.params import ENHANCEMENT_MODES, EnhancementMode
from catalog_enhance.tasks.imaging.degradation_config import named_degradation
from catalog_enhance.tasks.kinds import EvaluationContext, KindEvaluation, get_kind, kind_for_role, list_kinds
from catalog_enhance.tasks.evaluate.sr_eval import PAIRED, SYNTHETIC, evaluate_sr_folder, write_sr_report_csv
from catalog_enhance.tasks.evaluate.sr_paired import DEFAULT_LR_TEMPLATE, PairedFolderError, pair_folders, score_paired
from catalog_enhance.tasks.evaluate.sr_test import SCALES, choose_sr_model, pairs_degradation, sr_enhancer
from catalog_enhance.tasks.lake.storage import Lake, open_lake
from catalog_enhance.tasks.inference.trained import load_trained


def _lake(lake_url: str | None) -> Lake:
    return open_lake(lake_url)[1]


@task(name="evaluate-kind", cache_policy=NONE, task_run_name="evaluate-{kind}",
      retries=TASK_RETRIES["evaluate-kind"], retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_refused, timeout_seconds=decorator_timeout("evaluate-kind"))
def evaluate_kind_task(lake_url: str | None, kind: str, rows: list[dict], context: EvaluationContext) -> KindEvaluation:
    """Evaluate, record and gate one batch of versions of one kind (its plugin's `evaluate`)."""
    return get_kind(kind).evaluate(_lake(lake_url), rows, context)


@task(name="write-evaluation-report", cache_policy=NONE, retries=TASK_RETRIES["write-evaluation-report"],
      retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=retry_unless_refused,
      timeout_seconds=decorator_timeout("write-evaluation-report"))
def write_report_task(lake_url: str | None, summary: EvaluationSummary) -> str:
    return write_evaluation_report(_lake(lake_url), summary)


@flow(name="evaluate-models", timeout_seconds=decorator_timeout("evaluate-models"))
def evaluate_models(
    lake_url: str | None = None,
    models: list[str] | None = None,
    classifier: dict | None = None,
    fail_on_error: bool = True,
) -> EvaluationSummary:
    """Evaluate every registered version not evaluated yet (of `models`: names or versions; default
    all), record every figure and gate decision, and write one HTML report to the lake. With
    nothing new, nothing is evaluated or written; `report_uri` is then the latest report's.

    `classifier`: overrides of the FID feature extractor's `ClassifierSettings` (steps, width, ...).
    `fail_on_error`: fail the run when a version's evaluation failed (after the others and the
    report); the nightly passes False and reports the failures itself.
    """
    logger = get_run_logger()
    settings, lake = open_lake(lake_url)
    evaluate_kind = evaluate_kind_task.with_options(timeout_seconds=timeout("evaluate-kind", settings))
    write_report = write_report_task.with_options(timeout_seconds=timeout("write-evaluation-report", settings))
    run_id = str(flow_run.id) if flow_run.id else None
    pending = pending_versions(lake, models)
    logger.info("%d version(s) to evaluate: %s", len(pending), ", ".join(r["version"] for r in pending) or "none")

    # Baselines at every scale on a full run; with a model selection, only where its versions are.
    context = EvaluationContext(run_id=run_id, full_run=not models, classifier=ClassifierSettings(**(classifier or {})))
    summary = EvaluationSummary()
    for kind in list_kinds():
        rows = [r for r in pending if r["kind"] == kind.name]
        for batch in kind.evaluation_batches(rows):
            state = evaluate_kind(lake_url, kind.name, batch, context, return_state=True)
            if state.is_completed():
                summary.add(state.result())
            else:  # the kind's task itself failed (or timed out): its versions are listed, the others go on
                failed = [f"{r['name']} {r['version']}" for r in batch] or [f"{kind.name} baselines"]
                summary.failures += [f"{item}: {state.message or state.name}" for item in failed]
    for item in summary.deferred:
        logger.warning("not evaluated yet (stays pending): %s", item)
    summary.champions, summary.champion_baselines = current_champions(lake)

    if summary.nothing_new:
        key = latest_report_key(lake)
        summary.report_key, summary.report_uri = key, lake.uri(key) if key else None
        logger.info("nothing new to evaluate; latest report: %s", summary.report_uri or "none")
    else:
        key = write_report(lake_url, summary)
        summary.report_key, summary.report_uri = key, lake.uri(key)
        create_table_artifact(key="evaluation-metrics", table=summary.metric_rows() or [{"metric": "none"}],
                              description="Every headline figure of the versions evaluated in this run")
        logger.info("report: %s", summary.report_uri)
    create_markdown_artifact(key="evaluation-summary", markdown=evaluation_markdown(summary),
                             description="Model evaluation and gate decisions")
    for row in summary.champion_rows():
        logger.info("%s %s (%s): %s", row["model"], row["version"], row["kind"], row["reason"])
    if summary.failures and fail_on_error:
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
    mode: str = SYNTHETIC  # SYNTHETIC (LR degraded here) or PAIRED (the user's --lr captures)
    scale: int = 2


def evaluate_sr_command(
    images: str | Path | None = None,
    scale: int | None = None,
    model: str | None = None,
    lake_url: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    *,
    hr: str | Path | None = None,
    lr: str | Path | None = None,
    lr_template: str | None = None,
    degradation: str | None = None,
    mode: EnhancementMode = "fidelity",
) -> FolderEvaluation:
    """Score the classical baselines and an SR model on a folder of HR photos (`images`), or on
    the user's own HR/LR pairs (`hr` and `lr`; exclusive with `images`).

    Synthetic (`images`): each photo is degraded by the current pairs config's degradation (the
    lake's pairs manifest; the default if there is none) and scored exactly like the test split;
    `scale` defaults to 2. Paired (`hr`, `lr`, `lr_template`: `sr_paired`): the LR images are the
    user's, paired by sub-folder and stem; the scale is inferred from the sizes, or checked
    against `scale` if given; x1 pairs score the identity and classical restorations.
    `degradation` (synthetic): a named degradation (`bicubic`, `light`, `realistic`) instead of
    the pairs config's. `mode`: whose model is scored (`fidelity`: super-resolution; `restore`:
    restoration). `model`: a model name (its newest version) or an exact version; default: the
    mode's champion if it is trained for the scale, else the newest version of its kind for it,
    else only the baselines.
    Writes the per-image CSV to `out` (default `./sr_evaluation_x{scale}.csv`, paired:
    `./sr_evaluation_paired_x{scale}.csv`) and the summary beside it (`.summary.csv`).
    """
    paired = hr is not None or lr is not None
    if paired and images is not None:
        raise PairedFolderError("--images (photos degraded here) and --hr/--lr (your own pairs) are exclusive; pass one")
    if paired and (hr is None or lr is None):
        raise PairedFolderError(f"{'--lr' if lr is None else '--hr'} is missing: --hr and --lr go together")
    if not paired and images is None:
        raise PairedFolderError("pass --images DIR (photos degraded here) or --hr DIR --lr DIR (your own pairs)")
    if not paired and lr_template is not None:
        raise PairedFolderError("--lr-template goes with --hr/--lr")
    if paired and degradation is not None:
        raise PairedFolderError("--degradation makes LR images from --images; with --hr/--lr the LR images are yours")
    lake = _lake(lake_url)
    folders = None
    if paired:
        assert hr is not None and lr is not None  # checked above
        folders = pair_folders(hr, lr, scale=scale, lr_template=lr_template or DEFAULT_LR_TEMPLATE)
        scale = folders.scale
    else:
        scale = 2 if scale is None else scale
        if scale not in SCALES:
            raise ValueError(f"--scale must be one of {SCALES}, got {scale}")
    named = named_degradation(degradation) if degradation is not None else None  # unknown: one line, first
    enhancers = classical_enhancers()
    kind = kind_for_role(ENHANCEMENT_MODES[mode]).name
    row = choose_sr_model(lake, scale, model, scale_from="the pairs in --hr/--lr" if paired else None, kind=kind)
    label = None
    if row is not None:
        label = f"{row['name']} {row['version']}"
        enhancers[label] = sr_enhancer(load_trained(lake, row))
        notes = [f"model: {label}"]
    else:
        restorations = "identity and classical restorations" if scale == 1 else "classical baselines"
        what = "SR" if mode == "fidelity" else "restoration"
        notes = [f"no {what} model trained for x{scale} in {lake.root_uri}: {restorations} only"]
    if folders is not None:
        evaluation = score_paired(folders, enhancers)
        per_image, summary = evaluation.per_image, evaluation.summary
        notes.append(f"paired: the LR images are your captures from --lr {lr}, not a degradation made here; "
                     f"x{scale} {'inferred from the sizes' if folders.inferred else 'as given'}; "
                     f"{len(folders.pairs)} pair(s), {len(per_image[per_image['enhancer'] == ''])} file(s) skipped")
        if folders.cropped:
            notes.append(f"{len(folders.cropped)} HR image(s) cropped bottom/right to {scale} x LR: "
                         + ", ".join(folders.cropped[:5]) + (", ..." if len(folders.cropped) > 5 else ""))
        if scale == 1:
            notes.append("x1: 'bicubic' is the LR image itself (identity); gains are over the unrestored capture")
        default_out = Path(f"sr_evaluation_paired_x{scale}.csv")
    else:
        assert images is not None  # checked above
        per_image, summary = evaluate_sr_folder(images, scale, named or pairs_degradation(lake), enhancers, seed=seed)
        notes.append(f"synthetic: the LR images are your photos degraded by the {degradation} degradation (seed {seed})"
                     if degradation else "synthetic: the LR images are your photos degraded like the training pairs")
        default_out = Path(f"sr_evaluation_x{scale}.csv")
    csv_path = write_sr_report_csv(per_image, Path(out) if out else default_out)
    summary_path = write_sr_report_csv(summary, csv_path.with_suffix(".summary.csv"))
    return FolderEvaluation(per_image, summary, csv_path, summary_path, label, "\n".join(notes),
                            PAIRED if paired else SYNTHETIC, scale)


__all__ = ["FolderEvaluation", "evaluate_models", "evaluate_sr_command"]
