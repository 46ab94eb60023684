"""Evaluate every registered version not evaluated yet, record it, gate it: pure functions.

A version counts as evaluated once the evaluations manifest holds its gate DECISION row (written
last, after its evaluation rows): a run that died half-way evaluates that version again, and a
re-run with nothing new does nothing at all.

What evaluating a version of a kind means is the kind's plugin's (`tasks.kinds`: its `evaluate`
hook, its primary metric and baseline); versions of one kind are gated oldest first, so each meets
the champion its predecessors left.

The Prefect flow (`flows/evaluate.py`) runs the same kind hooks as tasks; tests call these directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from catalog_enhance.tasks.evaluate.results import EvaluationSummary
from catalog_enhance.tasks.kinds import EvaluationContext, kind_names, list_kinds
from catalog_enhance.tasks.lake.champions import Champion, current_champion, read_evaluations
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake


def gated_versions(lake: Lake) -> set[tuple[str, str]]:
    """(model_name, version) of every version with a gate decision recorded."""
    table = read_evaluations(lake)
    return {(r["model_name"], r["version"]) for r in table.to_pylist() if r["record"] == "decision"}


def pending_versions(lake: Lake, models: Sequence[str] | None = None) -> list[dict]:
    """Registry rows (oldest first) of gated kinds not yet decided; `models`: names or versions."""
    done = gated_versions(lake)
    kinds = set(kind_names())
    rows = [r for r in list_versions(lake) if r["kind"] in kinds and (r["name"], r["version"]) not in done]
    if models:
        wanted = set(models)
        rows = [r for r in rows if r["name"] in wanted or r["version"] in wanted]
    return rows


def evaluate_pending(
    lake: Lake,
    models: Sequence[str] | None = None,
    *,
    run_id: str | None = None,
    classifier: Any = None,
    sr_max_images: int | None = None,
) -> EvaluationSummary:
    """Evaluate, record and gate every pending version (of `models`: names or versions; default
    all), kind by kind; the champions after it in `.champions`. No report (`report` writes it).
    `classifier`: the FID feature extractor's `ClassifierSettings` (default ones if None)."""
    pending = pending_versions(lake, models)
    # Baselines at every scale on a full run; with a model selection, only where its versions are.
    context = EvaluationContext(run_id=run_id, full_run=not models, sr_max_images=sr_max_images,
                                classifier=classifier)
    summary = EvaluationSummary()
    for kind in list_kinds():
        rows = [r for r in pending if r["kind"] == kind.name]
        for batch in kind.evaluation_batches(rows):
            summary.add(kind.evaluate(lake, batch, context))
    summary.champions, summary.champion_baselines = current_champions(lake)
    return summary


def current_champions(lake: Lake) -> tuple[dict[str, Champion | None], dict[str, float]]:
    """Each kind's champion, and the baseline value its promotion was decided against."""
    champions = {kind: current_champion(lake, kind) for kind in kind_names()}
    baselines = {}
    for row in read_evaluations(lake).to_pylist():  # in append order: the last match is the promotion
        champion = champions.get(row["model_kind"])
        if (row["record"] == "decision" and row["promoted"] and champion is not None
                and (row["model_name"], row["version"]) == (champion.model_name, champion.version)):
            baselines[row["model_kind"]] = row["baseline_value"]
    return champions, baselines
