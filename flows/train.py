"""train-models: one Prefect task per model (the work is in tasks.train and tasks.model_registry).

Each `train-model` task is tagged `gpu`, so a tag concurrency limit (`prefect concurrency-limit
create gpu 1`) or a GPU work pool can target it; it picks its device itself (cuda, then mps, then
cpu). A retry resumes from the run's last checkpoint, because the run is named by its config hash.

Sequential by default on CPU: every task already uses all cores through torch's intra-op threads,
so two trainings at once on 2 cores only split the same FLOPs, thrash the caches (OpenMP threads
spin-waiting on each other make it far worse than 2x) and hold two datasets in memory, while the
per-model times stop meaning anything. On a GPU the small SR models leave the device mostly idle,
so there the tasks are submitted together and the `gpu` tag limit decides how many share it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import cast
from uuid import UUID

import pandas as pd

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.states import Completed

from catalog_enhance.data_contracts.layout import report_key
from catalog_enhance.flows.limits import TASK_RETRIES, RETRY_DELAY_SECONDS, decorator_timeout, retry_unless_refused, timeout
from catalog_enhance.tasks.catalog.labels import NotTrainableHere
from catalog_enhance.tasks.lake.model_registry import register_version
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import open_lake
from catalog_enhance.tasks.kinds import default_models
from catalog_enhance.tasks.report.plots import figure_png, plot_training_curves
from catalog_enhance.tasks.runtime import select_runtime
from catalog_enhance.tasks.train.config import label_overrides, make_config, overrides_for, validate_training
from catalog_enhance.tasks.train.loop import LogEvent, LossCurve, train_model

CURVE_TABLE_ROWS = 50
# The state name of a `train-model` run this catalog cannot train (a completed run: nothing failed).
SKIPPED = "Skipped"


@dataclass
class TrainingSummary:
    """What one training run did, model by model."""

    trained: list[dict] = field(default_factory=list)  # registry rows of the versions registered
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why this catalog cannot train it
    failed: dict[str, str] = field(default_factory=dict)  # model -> the error (unexpected)

    def problems(self) -> list[str]:
        return ([f"{model} skipped: {reason}" for model, reason in self.skipped.items()]
                + [f"{model} failed: {error}" for model, error in self.failed.items()])


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys hold lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def curve_table(curve: LossCurve, max_rows: int = CURVE_TABLE_ROWS) -> list[dict]:
    """The curve in at most `max_rows` rows: each row the mean of every loss over a bucket of steps."""
    if not curve.steps:
        return []
    last = max(curve.steps) + 1
    bucket = max(1, -(-last // max_rows))
    sums: dict[int, dict[str, list[float]]] = {}
    for step, name, value in zip(curve.steps, curve.names, curve.values):
        sums.setdefault(step // bucket, {}).setdefault(name, []).append(value)
    rows = []
    for index in sorted(sums):
        row: dict[str, float] = {"step": min((index + 1) * bucket, last)}
        row.update({name: round(sum(v) / len(v), 6) for name, v in sorted(sums[index].items())})
        rows.append(row)
    return rows


def curve_frame(curve: LossCurve, model: str, version: str) -> pd.DataFrame:
    """One run's curve as `training_curves` manifest rows (what the report's plotter draws)."""
    return pd.DataFrame({"model": model, "version": version, "step": curve.steps, "loss": curve.names,
                         "value": curve.values})


def summary_markdown(row: dict, plot_uri: str) -> str:
    losses = json.loads(row["final_losses"])
    metrics = json.loads(row["metrics"])
    lines = [
        f"# {row['name']} {row['version']}",
        "",
        f"Preset `{row['preset']}`, {row['steps']} steps in {row['train_seconds']:.1f} s on {row['device']}; "
        f"config `{row['config_hash']}`, data `{row['data_manifest_hash']}`, code `{row['code_version']}`.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| final {name} | {value:.6g} |" for name, value in sorted(losses.items())]
    lines += [f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())]
    lines += ["", f"Checkpoint: `{row['checkpoint_key']}`", "", f"Loss curve plot: [{plot_uri}]({plot_uri})"]
    return "\n".join(lines)


@task(name="train-model", tags=["gpu"], retries=TASK_RETRIES["train-model"], retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_refused, timeout_seconds=decorator_timeout("train-model"),
      cache_policy=NONE, task_run_name="train-{model}-{preset}")
def train_model_task(
    model: str,
    preset: str = "cpu",
    overrides: dict | None = None,
    lake_url: str | None = None,
    device: str | None = None,
) -> dict:
    """Train one model (resuming its run if interrupted), register the version; returns its row."""
    logger = get_run_logger()
    lake = open_lake(lake_url)[1]
    config = make_config(model, preset, **(overrides or {}))
    runtime = select_runtime(device)
    logger.info("training %s (%s preset, %d steps, run %s) on %s",
                model, preset, config.steps, config.config_hash(), runtime.describe())
    # Called from sync code, so the id itself (never the coroutine of an async caller).
    progress = cast(UUID, create_progress_artifact(0.0, key=artifact_key("train", model, "progress"),
                                                   description=f"training {model}"))

    def on_log(event: LogEvent) -> None:
        losses = " ".join(f"{k}={v:.5g}" for k, v in sorted(event.losses.items()))
        logger.info("%s step %d/%d %s (%.1f steps/s)", event.model, event.step, event.total_steps, losses,
                    event.steps_per_second)
        update_progress_artifact(progress, 100.0 * event.step / event.total_steps)

    try:
        result = train_model(config, lake, runtime=runtime, on_log=on_log)
    except NotTrainableHere as error:  # the catalog's data, not a fault: a Skipped (completed) run
        logger.warning("%s", error)
        return Completed(name=SKIPPED, message=error.reason)  # type: ignore[return-value]
    if result.resumed_from_step:
        logger.info("%s resumed from step %d", model, result.resumed_from_step)
    row = register_version(lake, result)

    plot_key = lake.write_bytes(report_key(row["version"], "loss_curve.png"),
                                figure_png(plot_training_curves(curve_frame(result.curve, model, row["version"]))))
    create_table_artifact(key=artifact_key("train", model, "loss-curve"), table=curve_table(result.curve),
                          description=f"{model} {row['version']}: losses, mean per bucket of steps")
    create_markdown_artifact(key=artifact_key("train", model, "summary"),
                             markdown=summary_markdown(row, lake.uri(plot_key)),
                             description=f"{model} {row['version']}")
    logger.info("%s registered as %s (%.1f s, %s)", model, row["version"], row["train_seconds"],
                ", ".join(f"{k}={v:.4g}" for k, v in json.loads(row["metrics"]).items()) or "no metrics")
    return row


@flow(name="train-models", timeout_seconds=decorator_timeout("train-models"))
def train_models(
    models: list[str] | None = None,
    preset: str = "cpu",
    steps: int | None = None,
    lake_url: str | None = None,
    overrides: dict | None = None,
    device: str | None = None,
    concurrent: bool | None = None,
    fail_on_error: bool = True,
) -> TrainingSummary:
    """Train the chosen models (default: `default_models()`, every model with presets but the opt-in
    ones) and register a version of each.

    `overrides`: {"lr": 1e-3, "data.scale": 3} for every model, {"srcnn": {...}} for one; below
    them, the catalog's label settings (CE_DOMAINS, CE_GAN_FILTERS: `label_overrides`).
    `concurrent`: default sequential on CPU, together elsewhere (see the module docstring).
    A model this catalog cannot train (`NotTrainableHere`: its labels, too few images) is skipped
    with the reason; with `fail_on_error` (the default) the run fails, after the others have
    finished, if any model was skipped or failed, else (the nightly) they are only reported.
    """
    logger = get_run_logger()
    settings = load_settings(**({"lake_url": lake_url} if lake_url else {}))
    models = list(models or default_models())
    validate_training(models, preset, steps, overrides)  # a bad model, preset or option fails now
    if concurrent is None:
        concurrent = select_runtime(device).device.type != "cpu"
    logger.info("training %s on the %s preset, %s", models, preset, "concurrently" if concurrent else "one at a time")

    train_one = train_model_task.with_options(timeout_seconds=timeout("train-model", settings))
    futures = {}
    for model in models:
        model_overrides = {**label_overrides(model, preset, settings.domains, settings.gan_filters),
                           **overrides_for(model, models, steps, overrides)}
        futures[model] = train_one.submit(model, preset, model_overrides, lake_url, device)
        if not concurrent:
            futures[model].wait()
    summary = TrainingSummary()
    for model, future in futures.items():
        future.wait()
        if future.state.is_completed() and future.state.name == SKIPPED:
            summary.skipped[model] = str(future.state.message)
            logger.warning("%s skipped: %s", model, future.state.message)
        elif future.state.is_completed():
            summary.trained.append(future.result())
        else:
            error = future.state.result(raise_on_failure=False)
            summary.failed[model] = (f"{type(error).__name__}: {error}" if isinstance(error, BaseException)
                                     else str(future.state.message or future.state.name))
    rows = summary.trained
    if rows:
        table = [
            {"model": r["name"], "version": r["version"], "seconds": round(r["train_seconds"], 1),
             "final losses": r["final_losses"], "val metric": r["val_metric_name"] or "",
             "value": None if r["val_metric"] is None else round(r["val_metric"], 4)}
            for r in rows
        ]
        create_table_artifact(key="train-models-summary", table=table, description=f"{preset} preset")
    if summary.skipped or summary.failed:
        create_markdown_artifact(key="train-models-problems", description="Models not trained, and why",
                                 markdown="\n".join(["# Models not trained", ""] + [f"- {p}" for p in summary.problems()]))
    if fail_on_error and (summary.skipped or summary.failed):
        # A failed task does not fail its flow by itself: raise, so the run is not green.
        problems = len(summary.skipped) + len(summary.failed)
        raise RuntimeError(f"training failed for {problems} of {len(models)} model(s): " + "; ".join(summary.problems()))
    return summary
