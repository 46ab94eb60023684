"""What an evaluation run did: each version's figures and the gate's verdict, and the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalog_enhance.data_contracts.evaluations import is_headline_scope
from catalog_enhance.tasks.evaluate.gate import Decision, primary_metric
from catalog_enhance.tasks.kinds import KindEvaluation
from catalog_enhance.tasks.lake.champions import Champion


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
            for r in self.results for row in r.rows if is_headline_scope(row["scope"])
        ]

    def add(self, run: KindEvaluation) -> None:
        """Take in what evaluating one batch of versions did."""
        self.results += run.results
        self.failures += run.failures
        self.deferred += run.deferred
        self.baselines_recorded += run.baselines_recorded
        self.extractors.update(run.extractors)
