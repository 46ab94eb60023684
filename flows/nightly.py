"""nightly-enhancement: the unattended chain, incremental at every stage.

ingest (only new/changed images are read) -> pairs (only images without pairs) -> training
(only models with no registered version, or all when `retrain`) -> evaluation and the gate ->
enhancement with the SR champion -> housekeeping. Each stage is a subflow, so the Prefect UI shows
one run with the stages nested under it.

Stages are isolated: what the catalog needs (ingestion, pairs, the super-resolution model and the
enhancement) fails the night, but only after the rest has run; an optional model (GAN, CGAN,
CycleGAN) that this catalog cannot train or evaluate (`NotTrainableHere`: no images with its
labels, too few images; no paired shots) is skipped with its reason, and one that fails
unexpectedly is recorded: neither stops the enhancement. The night then ends Completed, with what
was skipped or failed and why in its state message, its summary and the `nightly-summary`
artifact. No champion yet (the gate refused every SR version) skips the enhancement, said the
same way. Time limits and retries: flows/limits.py (a failed stage is run again once when its
error can pass, never for a refused checkpoint or a timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.states import Completed

from catalog_enhance.flows.enhance import enhance as enhance_catalog
from catalog_enhance.flows.evaluate import evaluate_models
from catalog_enhance.flows.ingest import ingest_catalog
from catalog_enhance.flows.limits import (
    NIGHTLY_STAGE_RETRIES,
    RETRY_DELAY_SECONDS,
    decorator_timeout,
    describe_failure,
    retry_unless_refused,
    retryable,
    timeout,
)
from catalog_enhance.flows.pairs import make_pairs
from catalog_enhance.flows.runners import task_runner_for
from catalog_enhance.flows.train import TrainingSummary, train_models
from catalog_enhance.models import get_spec
from catalog_enhance.tasks.enhance.choice import NoChampion, choose_models
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.tasks.enhance.params import ENHANCEMENT_MODES, EnhancementMode, EnhanceParams
from catalog_enhance.tasks.enhance.run import EnhanceSummary
from catalog_enhance.tasks.evaluate.pipeline import EvaluationSummary
from catalog_enhance.tasks.ingest.run import IngestSummary
from catalog_enhance.tasks.kinds import default_models, get_kind, kind_for_role
from catalog_enhance.tasks.lake.housekeeping import Housekeeping, housekeep
from catalog_enhance.tasks.lake.model_registry import latest_version
from catalog_enhance.tasks.pairs.run import PairsSummary
from catalog_enhance.tasks.lake.storage import Lake, open_lake


@dataclass
class NightlySummary:
    lake_uri: str
    ingest: IngestSummary
    pairs: PairsSummary
    training: list[dict] = field(default_factory=list)
    # Pairs of the other degradations the trained kinds need ("realistic" -> its summary).
    degraded_pairs: dict[str, PairsSummary] = field(default_factory=dict)
    evaluation: EvaluationSummary | None = None
    enhancement: EnhanceSummary | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # What did not run, and why: "gan" -> "cannot train on this catalog: ...", "enhancement" -> ...
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # "training espcn" -> "RuntimeError: ..."
    required_failed: list[str] = field(default_factory=list)  # keys of `failed` that fail the night
    housekeeping: Housekeeping | None = None

    @property
    def succeeded(self) -> bool:
        """Everything the catalog needs ran; skipped or failed optional models do not count."""
        return not self.required_failed

    def state_message(self) -> str:
        """The final state's message: what went wrong or was left out, in one line."""
        parts = [f"FAILED {key}: {self.failed[key]}" for key in self.required_failed]
        parts += [f"skipped {key}: {reason}" for key, reason in self.skipped.items()]
        parts += [f"failed {key}: {error}" for key, error in self.failed.items() if key not in self.required_failed]
        head = "night failed" if self.required_failed else "night completed"
        return f"{head}; " + "; ".join(parts) if parts else f"{head}: every stage ran"

    def sections(self) -> list[tuple[str, dict]]:
        return [
            ("ingestion", self.ingest.counts()),
            ("pairs", self.pairs.counts()),
            *[(f"pairs ({name} degradation)", summary.counts()) for name, summary in self.degraded_pairs.items()],
            ("training", {r["name"]: f"{r['version']} ({r['train_seconds']:.0f} s)" for r in self.training}
             or {"models trained": 0}),
            *([("champions", self._champions(self.evaluation))] if self.evaluation else []),
            *([("enhancement", self.enhancement.counts())] if self.enhancement else []),
            *([("skipped", dict(self.skipped))] if self.skipped else []),
            *([("failed", {(f"{k} (required)" if k in self.required_failed else k): v
                           for k, v in self.failed.items()})] if self.failed else []),
            *([("housekeeping", self.housekeeping.counts())] if self.housekeeping else []),
            ("stage seconds", {k: round(v, 1) for k, v in self.seconds.items()}),
        ]

    def verdicts(self) -> list[str]:
        """One line per stage saying plainly whether it found anything new."""
        ingest, pairs = self.ingest, self.pairs
        changed = ingest.ingested_new + ingest.new_versions
        return [
            f"ingestion: {changed} new or changed image(s), {ingest.unchanged} unchanged (not re-read), "
            f"{ingest.quarantined} quarantined" if changed else
            f"ingestion: nothing new: all {ingest.unchanged} image(s) unchanged, nothing re-read or re-written"
            f" ({ingest.quarantined} row(s) quarantined)",
            f"pairs: {pairs.pairs_written} new pair(s)" if pairs.pairs_written else
            "pairs: nothing new: every current image already has its pairs",
            f"training: {len(self.training)} model(s) trained" if self.training else
            "training: nothing trained" if self.skipped or self.failed else
            "training: nothing to train: every model has a registered version (use --retrain to retrain)",
            *([self._evaluation_verdict(self.evaluation)] if self.evaluation else []),
            *([self.enhancement.verdict()] if self.enhancement else []),
            *[f"skipped {key}: {reason}" for key, reason in self.skipped.items()],
            *[f"{'FAILED' if key in self.required_failed else 'failed'} {key}: {error}"
              for key, error in self.failed.items()],
        ]

    @staticmethod
    def _champions(evaluation: EvaluationSummary) -> dict[str, str]:
        return {
            kind: f"{c.model_name} {c.version} ({c.value:.4g})" if c is not None else "none yet"
            for kind, c in evaluation.champions.items()
        }

    def quarantined(self) -> list[dict]:
        """Everything this night quarantined, with its stage and reason."""
        records = [dict(r, stage="ingest") for r in self.ingest.quarantine]
        if self.enhancement is not None:
            records += [dict(r, stage="enhance") for r in self.enhancement.quarantine]
        return records

    @staticmethod
    def _evaluation_verdict(ev: EvaluationSummary) -> str:
        if ev.deferred and not ev.results:
            return f"evaluation: {len(ev.deferred)} version(s) deferred: {'; '.join(ev.deferred)}"
        if ev.nothing_new:
            return "evaluation: nothing new to evaluate"
        promoted = sum(r.promoted for r in ev.results)
        return f"evaluation: {len(ev.results)} version(s) evaluated, {promoted} promoted; report {ev.report_uri}"

    def to_markdown(self) -> str:
        lines = ["# Nightly run", "", f"Lake: `{self.lake_uri}`", ""]
        for title, counts in self.sections():
            lines += [f"## {title}", "", "| what | value |", "|---|---|"]
            lines += [f"| {_cell(k.strip())} | {_cell(v)} |" for k, v in counts.items()]
            lines.append("")
        quarantined = self.quarantined()
        if quarantined:
            lines += [f"## quarantined ({len(quarantined)}, first {min(len(quarantined), 50)})", "",
                      "| stage | sku | reason | detail |", "|---|---|---|---|"]
            lines += [f"| {r['stage']} | {r.get('sku')} | {r.get('reason')} | {r.get('detail')} |"
                      for r in quarantined[:50]]
        lines += ["", *self.verdicts()]
        return "\n".join(lines)


def _cell(value: object) -> str:
    """A markdown table cell: a reason may hold '|' (a label filter such as style=a|b)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


class NightFailed(RuntimeError):
    """A stage the catalog needs failed (the others ran; the summary artifact says what happened)."""


T = TypeVar("T")


@task(name="lake-housekeeping", cache_policy=NONE, retries=1, retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_refused, timeout_seconds=decorator_timeout("lake-housekeeping"))
def housekeeping_task(lake_url: str | None) -> Housekeeping:
    """What killed runs left in the lake (`_tmp/` objects older than CE_TMP_MAX_AGE_HOURS), then
    the manifests' compaction and vacuum."""
    settings, lake = open_lake(lake_url)
    cleanup = housekeep(lake, timedelta(hours=settings.tmp_max_age_hours))
    get_run_logger().info("housekeeping: %s", cleanup.counts())
    return cleanup


def _is_required_model(model: str, mode: EnhancementMode = "fidelity") -> bool:
    """Models of the kind the night's enhancement mode runs: the catalog needs them; the others
    are optional."""
    return get_spec(model).kind == kind_for_role(ENHANCEMENT_MODES[mode]).name


def _degradations_needed(models: list[str]) -> list[str]:
    """The named degradations, beyond the pairs stage's default (bicubic), whose pairs the kinds
    of `models` train and are judged on, in the kinds' order."""
    needed: list[str] = []
    for model in models:
        for name in get_kind(get_spec(model).kind).pairs_degradations:
            if name != "bicubic" and name not in needed:
                needed.append(name)
    return needed


def _version_model(item: str) -> str:
    """The model name of a "model version: reason" item of an evaluation summary."""
    return item.split(" ", 1)[0].split(":", 1)[0]


@flow(name="nightly-enhancement", timeout_seconds=decorator_timeout("nightly-enhancement"))
def nightly(
    feed: str,
    lake_url: str | None = None,
    retrain: bool = False,
    models: list[str] | None = None,
    preset: str = "cpu",
    enhance_scale: int | None = 2,
    target_long_side: int | None = None,
    style_transform: bool = False,
    enhance_model: str | None = None,
    enhance_mode: EnhancementMode = "fidelity",
) -> NightlySummary:
    """Run the whole chain on a catalog feed; a second run over an unchanged feed does nothing.

    `enhance_mode`: `fidelity` (the SR champion) or `restore` (the restoration champion); the
    models of that mode's kind are the ones the night needs, every other model is optional.
    `enhance_model`: the model (name or version) to enhance with instead of the mode's champion.

    Training runs for models without a registered version, or for all of `models` when `retrain`
    (the retrain deployment and a schedule set it); otherwise the registered versions are reused.
    """
    logger = get_run_logger()
    settings, lake = open_lake(lake_url)
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    required_failed: list[str] = []

    def stage(name: str, call: Callable[[], T]) -> T:
        """Run one stage, timed; once more if it failed on an error that can pass (flows/limits.py)."""
        started = time.perf_counter()
        try:
            for attempt in range(NIGHTLY_STAGE_RETRIES + 1):
                try:
                    return call()
                except Exception as error:
                    if attempt == NIGHTLY_STAGE_RETRIES or not retryable(error):
                        raise
                    logger.warning("%s failed (%s: %s); running it again in %d s (finished work is kept)",
                                   name, type(error).__name__, error, RETRY_DELAY_SECONDS)
                    time.sleep(RETRY_DELAY_SECONDS)
            raise AssertionError("unreachable")
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    def record_failure(key: str, error: BaseException | str, required: bool) -> None:
        failed[key] = error if isinstance(error, str) else describe_failure(error)
        if required:
            required_failed.append(key)
        (logger.error if required else logger.warning)("%s failed: %s", key, failed[key])

    # Without a catalog and its pairs nothing else can run: these fail the night at once. (Raised as
    # NightFailed: a stage's TimeoutError leaving this flow would read as the night's own timeout.)
    current = "ingestion"
    try:
        ingest = stage("ingest", lambda: ingest_catalog.with_options(
            timeout_seconds=timeout("ingest-catalog", settings))(feed=feed, lake_url=settings.lake_url))
        current = "pairs"
        pairs = stage("pairs", lambda: make_pairs.with_options(timeout_seconds=timeout("make-pairs", settings))(
            lake_url=settings.lake_url))
    except Exception as error:
        raise NightFailed(f"night failed: {current} failed: {describe_failure(error)}") from error

    def required(model: str) -> bool:
        return _is_required_model(model, enhance_mode)

    wanted = list(models or default_models())
    # Pairs of the other degradations the models' kinds need (restoration: realistic), at the
    # enhancement scale: without them those models are skipped, not the night.
    degraded_pairs: dict[str, PairsSummary] = {}
    for degradation in _degradations_needed(wanted):
        try:
            degraded_pairs[degradation] = stage(f"pairs ({degradation})", lambda: make_pairs.with_options(
                timeout_seconds=timeout("make-pairs", settings))(
                lake_url=settings.lake_url, degradation=degradation,
                config=PairsConfig(scales=tuple(sorted({2, enhance_scale or 2})))))
        except Exception as error:
            record_failure(f"pairs ({degradation})", error, any(
                required(m) and degradation in get_kind(get_spec(m).kind).pairs_degradations for m in wanted))
    to_train = wanted if retrain else [m for m in wanted if latest_version(lake, m) is None]
    training = TrainingSummary()
    if to_train:
        try:
            training = stage("train", lambda: train_models.with_options(timeout_seconds=timeout("train-models", settings))(
                models=to_train, preset=preset, lake_url=settings.lake_url, fail_on_error=False))
        except Exception as error:  # the stage itself (a timeout, ...): every model of it is affected
            record_failure("training", error, any(required(m) for m in to_train))
        for model, reason in training.skipped.items():
            if required(model):  # the catalog cannot have the model it needs: that is a failure
                record_failure(f"training {model}", f"cannot train on this catalog: {reason}", True)
            else:
                skipped[model] = f"cannot train on this catalog: {reason}"
        for model, problem in training.failed.items():
            record_failure(f"training {model}", problem, required(model))
    else:
        logger.info("every model has a registered version; not retraining (retrain=False)")

    # Always: it evaluates only versions without a gate decision, so an unchanged night does nothing.
    evaluation: EvaluationSummary | None = None
    try:
        evaluation = stage("evaluate", lambda: evaluate_models.with_options(
            timeout_seconds=timeout("evaluate-models", settings))(lake_url=settings.lake_url, fail_on_error=False))
    except Exception as error:
        record_failure("evaluation", error, True)  # the SR gate is part of it
    if evaluation is not None:
        for item in evaluation.deferred:  # "model version: reason": stays pending, judged on a later night
            version, _, reason = item.partition(": ")
            skipped[f"evaluation of {version}"] = reason or item
        for item in evaluation.failures:
            version, _, reason = item.partition(": ")
            record_failure(f"evaluation of {version}", reason or item, _is_evaluated_required(version, enhance_mode))

    # No feed: ingestion already ran above. Scale-out follows CE_DASK_ADDRESS when it is set.
    # The ignore: Prefect's stubs make TaskRunner invariant in its future type, so no concrete runner
    # matches `with_options`' TaskRunner[PrefectFuture[Any]]; any runner is valid at runtime.
    enhance_flow = enhance_catalog.with_options(task_runner=task_runner_for(settings, max_workers=2),  # type: ignore[arg-type]
                                                timeout_seconds=timeout("enhance-catalog", settings))
    enhancement: EnhanceSummary | None = None
    with_style: bool | None = None
    try:
        with_style = _models_to_enhance_with(lake, skipped, enhance_model, style_transform, mode=enhance_mode,
                                             scale=enhance_scale, target_long_side=target_long_side)
    except Exception as error:  # bad parameters, an unknown named model: the enhancement cannot run
        record_failure("enhancement", error, True)
    if with_style is not None:
        try:
            enhancement = stage("enhance", lambda: enhance_flow(
                lake_url=settings.lake_url, scale=enhance_scale, target_long_side=target_long_side,
                style_transform=with_style, model=enhance_model, mode=enhance_mode,
            ))
        except Exception as error:
            record_failure("enhancement", error, True)
    for key in ("studio transform", "enhancement"):
        if key in skipped:
            logger.warning("%s skipped: %s", key, skipped[key])

    housekeeping: Housekeeping | None = None
    try:
        housekeeping = stage("housekeeping", lambda: housekeeping_task.with_options(
            timeout_seconds=timeout("lake-housekeeping", settings))(settings.lake_url))
    except Exception as error:
        record_failure("housekeeping", error, False)

    summary = NightlySummary(
        lake_uri=lake.root_uri, ingest=ingest, pairs=pairs, degraded_pairs=degraded_pairs,
        training=training.trained, evaluation=evaluation,
        enhancement=enhancement, seconds=seconds, skipped=skipped, failed=failed,
        required_failed=required_failed, housekeeping=housekeeping,
    )
    create_markdown_artifact(key="nightly-summary", markdown=summary.to_markdown(), description="Nightly run")
    logger.info("nightly done: %s", {k: round(v, 1) for k, v in seconds.items()})
    for line in summary.verdicts():
        logger.info("%s", line)
    if not summary.succeeded:
        raise NightFailed(summary.state_message())
    if skipped or failed:  # Completed, and the state says what was left out
        return Completed(message=summary.state_message(), data=summary)  # type: ignore[return-value]
    return summary


def _models_to_enhance_with(lake: Lake, skipped: dict[str, str], model: str | None, style_transform: bool,
                            mode: EnhancementMode = "fidelity", **params: int | None) -> bool | None:
    """Whether to enhance with the studio transform (False: without it), or None not to enhance:
    the gate promoted no SR version and none was named; the reasons go into `skipped`. Checked
    before the enhancement flow starts, so a night without a champion logs a line, not a traceback.
    Nothing the gate refused is ever published."""
    try:
        choose_models(lake, EnhanceParams(mode=mode, style_transform=style_transform, **params), model=model)
        return style_transform
    except NoChampion as error:
        if not (style_transform and error.kind == kind_for_role("style").name):
            skipped["enhancement"] = str(error)
            return None
        skipped["studio transform"] = str(error)
    return _models_to_enhance_with(lake, skipped, model, False, mode, **params)


def _is_evaluated_required(version_label: str, mode: EnhancementMode) -> bool:
    """Whether an evaluation item ("name version" or "sr baselines") concerns the kind the
    night's enhancement mode runs."""
    name = _version_model(version_label)
    try:
        return _is_required_model(name, mode)
    except KeyError:  # not a registered model name (e.g. a kind's baselines)
        return name == kind_for_role(ENHANCEMENT_MODES[mode]).name
