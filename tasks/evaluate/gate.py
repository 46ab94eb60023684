"""The quality gate: which version of a model kind is champion, decided by numbers and recorded.

Each model kind has one primary metric (its plugin's `primary_metric`, `tasks.kinds`). A candidate version is promoted
only if it beats the baseline AND the current champion of its kind, strictly (ties do not
promote), so a regression can never replace a champion. Every evaluation and every decision,
promoted or refused, is appended to the evaluations manifest with its reason; enhancement reads
the champion back with `current_champion`.

Rows are appended through `lake.manifests` (validated, written atomically); the current champion
is read back with `lake.champions.current_champion`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime


from catalog_enhance.tasks.kinds import PrimaryMetric, get_kind
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.lake.champions import current_champion

log = logging.getLogger(__name__)


def primary_metric(kind: str) -> PrimaryMetric:
    """The primary metric of a model kind, as its plugin declares it."""
    return get_kind(kind).primary_metric


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str  # names the numbers
    kind: str
    metric: str
    candidate: float
    baseline: float
    champion: float | None  # None: there was no champion


def _beats(a: float, b: float, higher_is_better: bool, margin: float) -> bool:
    # Strict: a tie (difference 0) never wins. NaN compares False, so it never wins either.
    return (a - b if higher_is_better else b - a) > margin


def decide_promotion(
    candidate: float,
    baseline: float,
    champion: float | None,
    kind: str,
    *,
    min_improvement: float = 0.0,
) -> Decision:
    """Promote iff `candidate` beats `baseline` and (if any) `champion` by more than `min_improvement`,
    in the direction of `kind`'s primary metric. The reason states the comparison with its numbers."""
    spec = primary_metric(kind)
    direction = "higher" if spec.higher_is_better else "lower"
    head = f"{spec.metric} {candidate:.4f}"
    against_baseline = f"the baseline ({spec.baseline}) {baseline:.4f}"
    against_champion = "no champion yet" if champion is None else f"the champion {champion:.4f}"

    def decision(promote: bool, reason: str) -> Decision:
        return Decision(promote, f"{reason} ({direction} is better)", kind, spec.metric,
                        float(candidate), float(baseline), None if champion is None else float(champion))

    if not math.isfinite(candidate):
        return decision(False, f"refused: {spec.metric} of the candidate is {candidate}, not a finite number")
    if not math.isfinite(baseline):
        return decision(False, f"refused: the baseline ({spec.baseline}) {spec.metric} is {baseline}, not comparable")
    if not _beats(candidate, baseline, spec.higher_is_better, min_improvement):
        verb = "ties" if candidate == baseline else "does not beat"
        return decision(False, f"refused: {head} {verb} {against_baseline}")
    if champion is not None and not _beats(candidate, champion, spec.higher_is_better, min_improvement):
        verb = "ties" if candidate == champion else "does not beat"
        return decision(False, f"refused: {head} beats {against_baseline} but {verb} {against_champion}")
    joiner = "; " if champion is None else " and "
    return decision(True, f"promoted: {head} beats {against_baseline}{joiner}{against_champion}")


# -- the evaluations manifest --------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _append(lake, rows: Sequence[Mapping]) -> None:
    manifests.append(lake, "evaluations", rows)  # validated before anything is written


def record_evaluation(lake, rows: Iterable[Mapping]) -> int:
    """Append evaluation rows (record "evaluation"; `evaluated_at` defaults to now); returns the
    number appended. Rows must meet the EVALUATIONS contract, else nothing is written."""
    now = _now()
    rows = [{"record": "evaluation", "evaluated_at": now, **dict(r)} for r in rows]
    if any(r["record"] != "evaluation" for r in rows):
        raise ValueError("record_evaluation writes evaluation rows only; use record_promotion for decisions")
    if rows:
        _append(lake, rows)
    return len(rows)


def record_promotion(
    lake,
    decision: Decision,
    *,
    model_name: str,
    version: str,
    dataset_hash: str,
    champion_version: str | None = None,
    split: str | None = None,
    evaluated_at: datetime | None = None,
    run_id: str | None = None,
) -> dict:
    """Append the gate's decision (promoted or refused) with its reason; returns the row written."""
    spec = primary_metric(decision.kind)
    row = {
        "record": "decision",
        "model_name": model_name,
        "model_kind": decision.kind,
        "version": version,
        "metric": decision.metric,
        "scope": spec.scope,
        "split": split or spec.split,
        "value": decision.candidate,
        "higher_is_better": spec.higher_is_better,
        "baseline": spec.baseline,
        # None when there is nothing to compare with (a CycleGAN with no paired test product).
        "baseline_value": decision.baseline if math.isfinite(decision.baseline) else None,
        "champion_version": champion_version,
        "champion_value": decision.champion,
        "promoted": decision.promote,
        "reason": decision.reason,
        "dataset_hash": dataset_hash,
        "evaluated_at": evaluated_at or _now(),
        "run_id": run_id,
    }
    _append(lake, [row])
    return row


def promote_if_better(
    lake,
    *,
    model_name: str,
    kind: str,
    version: str,
    candidate: float,
    baseline: float,
    dataset_hash: str,
    champion_value: float | None = None,
    min_improvement: float = 0.0,
    run_id: str | None = None,
) -> Decision:
    """Gate one candidate against its kind's current champion and record the decision.

    `champion_value`: the champion re-measured on the candidate's data (preferred, so both are
    scored on the same test set); by default the value recorded when it was promoted.
    """
    champion = current_champion(lake, kind)
    if champion is not None and (champion.model_name, champion.version) == (model_name, version):
        spec = primary_metric(kind)
        decision = Decision(False, f"refused: {model_name} {version} is already the champion", kind,
                            spec.metric, float(candidate), float(baseline), champion.value)
    else:
        reference = None if champion is None else (champion.value if champion_value is None else champion_value)
        decision = decide_promotion(candidate, baseline, reference, kind, min_improvement=min_improvement)
    record_promotion(
        lake, decision, model_name=model_name, version=version, dataset_hash=dataset_hash,
        champion_version=None if champion is None else f"{champion.model_name}:{champion.version}",
        run_id=run_id,
    )
    return decision


def primary_value(rows: Iterable[Mapping], kind: str) -> float:
    """The primary metric's value among evaluation rows of one version (KeyError if absent)."""
    spec = primary_metric(kind)
    for row in rows:
        if row.get("metric") == spec.metric and row.get("scope") == spec.scope:
            return float(row["value"])
    raise KeyError(f"no {spec.metric} at scope {spec.scope!r} among the evaluation rows")


# -- recording and gating a version -----------------------------------------------------------


def registry_row(lake: Lake, model_name: str, version: str) -> dict | None:
    return next((r for r in list_versions(lake, model_name) if r["version"] == version), None)


# -- gating --------------------------------------------------------------------------------------


def champion_value_on(lake: Lake, kind: str, dataset_hash: str,
                    remeasure: Callable[[TrainedModel], float]) -> float | None:
    """The champion's primary figure on the candidate's data: None (use the recorded value) when it
    was measured on the same data or cannot be loaded again."""
    champion = current_champion(lake, kind)
    if champion is None or champion.dataset_hash == dataset_hash:
        return None
    row = registry_row(lake, champion.model_name, champion.version)
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


def record_and_gate(lake: Lake, *, model_name: str, kind: str, version: str, rows: list[dict], dataset_hash: str,
          candidate: float, baseline: float, champion_value: float | None, run_id: str | None) -> Decision:
    record_evaluation(lake, [{**row, "run_id": run_id} for row in rows])
    return promote_if_better(lake, model_name=model_name, kind=kind, version=version, candidate=candidate,
                             baseline=baseline, dataset_hash=dataset_hash, champion_value=champion_value, run_id=run_id)


def record_and_refuse(lake: Lake, *, model_name: str, kind: str, version: str, rows: list[dict],
                      dataset_hash: str, reason: str, run_id: str | None, baseline: float = 0.0) -> Decision:
    """Record a version's rows and a refusal where no comparison on the primary metric can be
    made (the reason says why), against `baseline` (SR: bicubic's own gain, 0 by definition)."""
    record_evaluation(lake, [{**row, "run_id": run_id} for row in rows])
    spec = primary_metric(kind)
    champion = current_champion(lake, kind)
    decision = Decision(False, f"refused: {reason}", kind, spec.metric, math.nan, baseline,
                        None if champion is None else champion.value)
    record_promotion(lake, decision, model_name=model_name, version=version, dataset_hash=dataset_hash,
                     champion_version=None if champion is None else f"{champion.model_name}:{champion.version}",
                     run_id=run_id)
    return decision
