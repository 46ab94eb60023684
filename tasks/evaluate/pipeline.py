"""Evaluate every registered version not evaluated yet, record it, gate it: pure functions.

A version counts as evaluated once the evaluations manifest holds its gate DECISION row (written
last, after its evaluation rows): a run that died half-way evaluates that version again, and a
re-run with nothing new does nothing at all.

Per kind (primary metric and baseline: `gate.PRIMARY_METRIC`):
- sr: every new SR version at the scale it was trained for (`metadata["scale"]`) on the test pairs
  of the current pairs config, together with the classical baselines; the baselines' own rows are
  recorded once per scale and test set (model_name = the enhancer, version "classical"). Only x2
  versions can be gated (the primary metric is the x2 gain); others get a refusal saying so.
- gan / cgan: FID/KID (+ conditional accuracy, per-category FID) against the untrained twin.
- cyclegan: PSNR of G(lifestyle) vs the true studio shot against doing nothing (identity).
Versions of one kind are gated oldest first, so each meets the champion its predecessors left.
The champion is compared on the candidate's data: if it was measured on another test set (the
catalog grew), it is measured again on this one before the comparison.

The Prefect flow (`flows/evaluate.py`) calls these same functions as tasks; tests call them directly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from catalog_enhance.tasks.evaluate.cyclegan_eval import evaluate_cyclegan
from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings, FeatureExtractor, feature_extractor
from catalog_enhance.tasks.evaluate.gan_eval import data_options, evaluate_gan
from catalog_enhance.tasks.evaluate.gate import (
    PRIMARY_METRIC,
    Decision,
    primary_metric,
    primary_value,
    promote_if_better,
    record_evaluation,
    record_promotion,
)
from catalog_enhance.tasks.lake.champions import Champion, current_champion, read_evaluations
from catalog_enhance.tasks.evaluate.sr_test import (
    BASELINE_VERSION,
    SCALES,
    SRScaleResult,
    dataset_hash as sr_dataset_hash,
    evaluate_sr_scale,
    sr_enhancer,
)
from catalog_enhance.tasks.evaluate.sr_eval import REFERENCE
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained

log = logging.getLogger(__name__)

GENERATIVE_KINDS = ("gan", "cgan", "cyclegan")


@dataclass
class VersionResult:
    """One version's evaluation and the gate's verdict on it."""

    model_name: str
    version: str
    kind: str
    dataset_hash: str
    rows: list[dict]  # the evaluation rows recorded
    decision: Decision
    details: Any = None  # SRScaleResult | GANEvaluation | CycleGANEvaluation (for the report)

    @property
    def promoted(self) -> bool:
        return self.decision.promote


@dataclass
class EvaluationSummary:
    """What one evaluation run did: its results, failures, the champions after it, the report."""

    results: list[VersionResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "model version: reason"
    # Versions that cannot be judged yet (no held-out data): they stay pending, nothing is recorded,
    # and the run does not fail: a catalog too small for a test split is not a broken model.
    deferred: list[str] = field(default_factory=list)
    champions: dict[str, Champion | None] = field(default_factory=dict)
    champion_baselines: dict[str, float] = field(default_factory=dict)  # kind -> baseline value at promotion
    extractors: dict[int, dict] = field(default_factory=dict)  # image size -> FeatureExtractor.describe()
    baselines_recorded: list[int] = field(default_factory=list)  # SR scales whose baselines were recorded
    report_key: str | None = None
    report_uri: str | None = None  # this run's report, or the latest earlier one if nothing was new

    @property
    def nothing_new(self) -> bool:
        return not self.results and not self.failures and not self.baselines_recorded

    def champion_rows(self) -> list[dict]:
        """One row per version gated in this run, then each kind's champion that was not:
        model, version, kind, primary metric, value, baseline, promoted?, reason (+ champion now?)."""
        rows = []
        for r in self.results:
            champion = self.champions.get(r.kind)
            is_champion = champion is not None and (champion.model_name, champion.version) == (r.model_name, r.version)
            rows.append({
                "model": r.model_name, "version": r.version, "kind": r.kind,
                "primary_metric": r.decision.metric, "value": r.decision.candidate,
                "baseline": primary_metric(r.kind).baseline, "baseline_value": r.decision.baseline,
                "promoted": r.promoted, "reason": r.decision.reason,
                "champion": is_champion,
            })
        gated = {(r["model"], r["version"]) for r in rows}
        for kind, champion in self.champions.items():
            if champion is not None and (champion.model_name, champion.version) not in gated:
                rows.append({
                    "model": champion.model_name, "version": champion.version, "kind": kind,
                    "primary_metric": champion.metric, "value": champion.value,
                    "baseline": primary_metric(kind).baseline, "baseline_value": self.champion_baselines.get(kind),
                    "promoted": True,
                    "reason": f"champion since {champion.promoted_at:%Y-%m-%d %H:%M} UTC: {champion.reason}",
                    "champion": True,
                })
        return rows

    def metric_rows(self) -> list[dict]:
        """Every headline figure (overall and per scale, not per category) of this run's versions."""
        return [
            {"model": r.model_name, "version": r.version, "kind": r.kind, "metric": row["metric"],
             "scope": row["scope"], "value": row["value"], "baseline": row["baseline"],
             "baseline_value": row["baseline_value"]}
            for r in self.results for row in r.rows if _headline(row["scope"])
        ]

    def to_markdown(self) -> str:
        lines = ["# Model evaluation", ""]
        if self.report_uri:
            lines += [f"Report: [{self.report_uri}]({self.report_uri})", ""]
        if self.nothing_new:
            lines += ["Nothing new to evaluate: every registered version has been evaluated and gated.", ""]
        lines += ["| model | version | kind | primary metric | value | baseline | promoted | reason |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in self.champion_rows():
            lines.append(
                f"| {row['model']} | {row['version']} | {row['kind']} | {row['primary_metric']} | "
                f"{_fmt(row['value'])} | {row['baseline']} {_fmt(row['baseline_value'])} | "
                f"{'yes' if row['promoted'] else 'no'} | {row['reason']} |"
            )
        for size, info in sorted(self.extractors.items()):
            lines += ["", f"Feature extractor ({size} px): held-out accuracy {_fmt(info['test_accuracy'])} "
                          f"on {info['test_images']} test images (majority class {_fmt(info['chance_accuracy'])})."]
        if self.failures:
            lines += ["", "## Failures", ""] + [f"- {f}" for f in self.failures]
        if self.deferred:
            lines += ["", "## Deferred (not enough held-out data yet)", ""] + [f"- {d}" for d in self.deferred]
        return "\n".join(lines)


def _fmt(value) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4g}"


def _headline(scope: str) -> bool:
    return scope in ("overall", "feature_extractor") or (scope.startswith("scale=") and "," not in scope)


# -- what to evaluate ----------------------------------------------------------------------------


def gated_versions(lake: Lake) -> set[tuple[str, str]]:
    """(model_name, version) of every version with a gate decision recorded."""
    table = read_evaluations(lake)
    return {(r["model_name"], r["version"]) for r in table.to_pylist() if r["record"] == "decision"}


def pending_versions(lake: Lake, models: Sequence[str] | None = None) -> list[dict]:
    """Registry rows (oldest first) of gated kinds not yet decided; `models`: names or versions."""
    done = gated_versions(lake)
    rows = [r for r in list_versions(lake) if r["kind"] in PRIMARY_METRIC and (r["name"], r["version"]) not in done]
    if models:
        wanted = set(models)
        rows = [r for r in rows if r["name"] in wanted or r["version"] in wanted]
    return rows


def _metadata(row: dict) -> dict:
    return json.loads(row["metadata_json"])


def sr_scale_of(row: dict) -> int:
    return int(_metadata(row)["scale"])


def baselines_recorded(lake: Lake, scale: int, dataset_hash: str) -> bool:
    scope = f"scale={scale}"
    return any(
        r["record"] == "evaluation" and r["model_name"] == REFERENCE and r["version"] == BASELINE_VERSION
        and r["scope"] == scope and r["dataset_hash"] == dataset_hash
        for r in read_evaluations(lake).to_pylist()
    )


def _registry_row(lake: Lake, model_name: str, version: str) -> dict | None:
    return next((r for r in list_versions(lake, model_name) if r["version"] == version), None)


# -- gating --------------------------------------------------------------------------------------


def _champion_value(lake: Lake, kind: str, dataset_hash: str,
                    remeasure: Callable[[TrainedModel], float]) -> float | None:
    """The champion's primary figure on the candidate's data: None (use the recorded value) when it
    was measured on the same data or cannot be loaded again."""
    champion = current_champion(lake, kind)
    if champion is None or champion.dataset_hash == dataset_hash:
        return None
    row = _registry_row(lake, champion.model_name, champion.version)
    if row is None:
        log.warning("champion %s %s is not in the registry; comparing with its recorded value",
                    champion.model_name, champion.version)
        return None
    try:
        value = remeasure(load_trained(lake, row))
    except Exception as error:  # noqa: BLE001 - the recorded value is the fallback, said in the log
        log.warning("could not measure champion %s again (%s); comparing with its recorded value",
                    champion.version, error)
        return None
    log.info("champion %s measured again on the current test data: %.4f (recorded %.4f)",
             champion.version, value, champion.value)
    return value


def _gate(lake: Lake, *, model_name: str, kind: str, version: str, rows: list[dict], dataset_hash: str,
          candidate: float, baseline: float, champion_value: float | None, run_id: str | None) -> Decision:
    record_evaluation(lake, [{**row, "run_id": run_id} for row in rows])
    return promote_if_better(lake, model_name=model_name, kind=kind, version=version, candidate=candidate,
                             baseline=baseline, dataset_hash=dataset_hash, champion_value=champion_value, run_id=run_id)


def _refuse_sr(lake: Lake, *, model_name: str, kind: str, version: str, rows: list[dict], dataset_hash: str,
               reason: str, run_id: str | None) -> Decision:
    """Record an SR version's rows and a refusal where no x2 comparison can be made (the reason
    says why); the recorded baseline is bicubic's own gain, 0 by definition."""
    record_evaluation(lake, [{**row, "run_id": run_id} for row in rows])
    spec = primary_metric(kind)
    champion = current_champion(lake, kind)
    decision = Decision(False, f"refused: {reason}", kind, spec.metric, math.nan, 0.0,
                        None if champion is None else champion.value)
    record_promotion(lake, decision, model_name=model_name, version=version, dataset_hash=dataset_hash,
                     champion_version=None if champion is None else f"{champion.model_name}:{champion.version}",
                     run_id=run_id)
    return decision


# -- super-resolution ----------------------------------------------------------------------------


@dataclass
class SRRun:
    results: list[VersionResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    baselines_recorded: list[int] = field(default_factory=list)
    scale_results: dict[int, SRScaleResult] = field(default_factory=dict)


def evaluate_sr_versions(lake: Lake, rows: Iterable[dict], *, scales: Sequence[int] = SCALES,
                         run_id: str | None = None, max_images: int | None = None) -> SRRun:
    """Evaluate SR registry `rows` (each at its scale) and, at every scale in `scales` whose test
    set has no baseline rows yet, the classical baselines; record, gate (x2), return results."""
    rows = [r for r in rows if r["kind"] == "sr"]
    run = SRRun()
    by_scale: dict[int, list[dict]] = {}
    for row in rows:
        try:
            by_scale.setdefault(sr_scale_of(row), []).append(row)
        except (KeyError, ValueError, TypeError) as error:
            run.failures.append(f"{row['name']} {row['version']}: no usable scale in its metadata ({error})")
    for scale in sorted(set(scales) | set(by_scale)):
        versions = by_scale.get(scale, [])
        try:
            data_hash = sr_dataset_hash(lake, scale)
        except FileNotFoundError as error:
            run.failures += [f"{r['name']} {r['version']}: {error}" for r in versions]
            continue
        need_baselines = not baselines_recorded(lake, scale, data_hash)
        if not versions and not need_baselines:
            continue
        models, loaded = {}, {}
        for row in versions:
            try:
                loaded[row["version"]] = trained = load_trained(lake, row)
                models[row["version"]] = sr_enhancer(trained)
            except Exception as error:  # noqa: BLE001 - one unloadable version must not stop the others
                run.failures.append(f"{row['name']} {row['version']}: cannot load ({type(error).__name__}: {error})")
        champion = current_champion(lake, "sr")
        remeasure_champion = (scale == 2 and models and champion is not None and champion.dataset_hash != data_hash
                              and champion.version not in models)
        if remeasure_champion:
            row = _registry_row(lake, champion.model_name, champion.version)
            try:
                models[champion.version] = sr_enhancer(load_trained(lake, row)) if row else None
            except Exception as error:  # noqa: BLE001
                log.warning("cannot load SR champion %s (%s); its recorded value is used", champion.version, error)
            models = {k: v for k, v in models.items() if v is not None}
        result = evaluate_sr_scale(lake, scale, models, max_images=max_images)
        run.scale_results[scale] = result
        if result.n_images == 0:
            run.deferred += [f"{r['name']} {r['version']}: no test pairs at x{scale}" for r in versions]
            continue
        if need_baselines:
            record_evaluation(lake, [{**row, "run_id": run_id} for row in result.baseline_rows()])
            run.baselines_recorded.append(scale)
        champion_value = None
        if remeasure_champion and champion.version in set(result.summary["enhancer"]):
            champion_value = primary_value(result.rows_for(champion.version, model_name=champion.model_name,
                                                           version=champion.version), "sr")
        for row in versions:
            if row["version"] not in loaded:
                continue
            version_rows = result.rows_for(row["version"], model_name=row["name"], version=row["version"])
            common = dict(model_name=row["name"], kind="sr", version=row["version"], rows=version_rows,
                          dataset_hash=result.dataset_hash, run_id=run_id)
            if scale != 2:
                decision = _refuse_sr(lake, **common, reason=(
                    f"{row['name']} is trained for x{scale}; the SR champion is chosen on psnr_y_gain at x2 "
                    f"(its x{scale} figures are recorded)"))
            else:
                try:
                    candidate = primary_value(version_rows, "sr")
                except (KeyError, TypeError) as error:
                    run.failures.append(f"{row['name']} {row['version']}: no x2 gain ({error})")
                    continue
                if candidate is None or not math.isfinite(candidate):
                    decision = _refuse_sr(lake, **common,
                                          reason=f"{row['name']} could not be scored at x2 (see the errors)")
                else:
                    # The re-measured value belongs to the champion met at the start of this scale;
                    # once a version of this run is promoted, its own (same-data) value is used.
                    same_champion = current_champion(lake, "sr") == champion
                    decision = _gate(lake, **common, candidate=candidate, baseline=0.0,
                                     champion_value=champion_value if same_champion else None)
            run.results.append(VersionResult(row["name"], row["version"], "sr", result.dataset_hash,
                                             version_rows, decision, result))
    return run


# -- generative models -----------------------------------------------------------------------------


class ExtractorCache:
    """One feature extractor per image size for the run (each cached in the lake by `feature_extractor`)."""

    def __init__(self, lake: Lake, settings: ClassifierSettings | None = None):
        self.lake = lake
        self.settings = settings or ClassifierSettings()
        self._by_size: dict[int, FeatureExtractor] = {}

    def for_size(self, image_size: int, split_options: dict | None = None) -> FeatureExtractor:
        if image_size not in self._by_size:
            settings = ClassifierSettings(**{**self.settings.as_dict(), "image_size": int(image_size)})
            self._by_size[image_size] = feature_extractor(self.lake, settings, split_options=split_options)
        return self._by_size[image_size]

    def described(self) -> dict[int, dict]:
        return {size: fe.describe() for size, fe in self._by_size.items()}


def _extractor_for(trained: TrainedModel, extractors: ExtractorCache) -> FeatureExtractor:
    """A GAN is measured with the classifier at its own image size; a CycleGAN (its images are of
    any size) at the extractor settings' size, the GAN presets' 32 px by default."""
    options = data_options(trained)
    size = extractors.settings.image_size if trained.kind == "cyclegan" else int(trained.metadata["image_size"])
    return extractors.for_size(size, options.split_options())


def evaluate_generative_version(lake: Lake, row: dict, extractors: ExtractorCache, *,
                                run_id: str | None = None) -> VersionResult:
    """Evaluate, record and gate one GAN / CGAN / CycleGAN version."""
    kind = row["kind"]
    if kind not in GENERATIVE_KINDS:
        raise ValueError(f"{row['version']}: kind {kind!r} is not generative")
    trained = load_trained(lake, row)
    extractor = _extractor_for(trained, extractors)
    measure = evaluate_cyclegan if kind == "cyclegan" else evaluate_gan
    evaluation = measure(lake, trained, extractor)
    rows = evaluation.rows()
    champion_value = _champion_value(lake, kind, evaluation.dataset_hash,
                                     lambda champion: measure(lake, champion, extractor).primary)
    if not math.isfinite(evaluation.primary_baseline):
        # Nothing recorded: the version stays pending until the test split can measure it.
        raise ValueError(f"the baseline's {primary_metric(kind).metric} could not be computed "
                         "(fewer than 2 test images?); nothing recorded")
    decision = _gate(lake, model_name=row["name"], kind=kind, version=row["version"], rows=rows,
                     dataset_hash=evaluation.dataset_hash, candidate=evaluation.primary,
                     baseline=evaluation.primary_baseline, champion_value=champion_value, run_id=run_id)
    return VersionResult(row["name"], row["version"], kind, evaluation.dataset_hash, rows, decision, evaluation)


# -- everything ------------------------------------------------------------------------------------


def evaluate_generative_versions(lake: Lake, rows: Iterable[dict], extractors: ExtractorCache, *,
                                 run_id: str | None = None) -> tuple[list[VersionResult], list[str]]:
    """`evaluate_generative_version` for each generative row, oldest first; a failure is logged and
    listed ("model version: reason") and the others go on."""
    results, failures = [], []
    for row in (r for r in rows if r["kind"] in GENERATIVE_KINDS):
        try:
            results.append(evaluate_generative_version(lake, row, extractors, run_id=run_id))
        except Exception as error:  # noqa: BLE001 - reported; the flow fails after the rest ran
            log.exception("evaluation of %s %s failed", row["name"], row["version"])
            failures.append(f"{row['name']} {row['version']}: {type(error).__name__}: {error}")
    return results, failures


def evaluate_pending(
    lake: Lake,
    models: Sequence[str] | None = None,
    *,
    run_id: str | None = None,
    classifier: ClassifierSettings | None = None,
    sr_max_images: int | None = None,
) -> EvaluationSummary:
    """Evaluate, record and gate every pending version (of `models`: names or versions; default
    all); the champions after it in `.champions`. No report (`evaluation_report` writes it)."""
    pending = pending_versions(lake, models)
    summary = EvaluationSummary()
    # Baselines at every scale on a full run; with a model selection, only where its versions are.
    sr = evaluate_sr_versions(lake, [r for r in pending if r["kind"] == "sr"], scales=() if models else SCALES,
                              run_id=run_id, max_images=sr_max_images)
    extractors = ExtractorCache(lake, classifier)
    results, failures = evaluate_generative_versions(lake, pending, extractors, run_id=run_id)
    summary.results = sr.results + results
    summary.failures = sr.failures + failures
    summary.deferred = sr.deferred
    summary.baselines_recorded = sr.baselines_recorded
    summary.extractors = extractors.described()
    summary.champions, summary.champion_baselines = current_champions(lake)
    return summary


def current_champions(lake: Lake) -> tuple[dict[str, Champion | None], dict[str, float]]:
    """Each kind's champion, and the baseline value its promotion was decided against."""
    champions = {kind: current_champion(lake, kind) for kind in PRIMARY_METRIC}
    baselines = {}
    for row in read_evaluations(lake).to_pylist():  # in append order: the last match is the promotion
        champion = champions.get(row["model_kind"])
        if (row["record"] == "decision" and row["promoted"] and champion is not None
                and (row["model_name"], row["version"]) == (champion.model_name, champion.version)):
            baselines[row["model_kind"]] = row["baseline_value"]
    return champions, baselines
