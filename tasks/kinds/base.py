"""The contract of a model kind: one plugin object holds everything the pipeline knows about it.

A kind (super-resolution, GAN, conditional GAN, CycleGAN, ...) is a `ModelKind` subclass in a
module of `tasks/kinds/`, registered with `@register_kind`; the package imports its modules on
its own, so a new kind is its plugin module plus its trainer, and a new model of a kind is one
file in `models/`. Training, evaluation, the gate, the report and enhancement ask the plugin
(`get_kind(name)`) instead of branching on a kind's name.

Hooks, in the order the pipeline uses them (CycleGAN repo's `base_model.py` in spirit):

    name              the kind's name, as models register it (`@register_model(kind=...)`)
    order             where the kind comes in tables and in the default training order
    trainer           the `Trainer` subclass that trains its models; its `options` class is the
                      typed `TrainConfig.data` of the kind (pydantic, unknown keys refused)
    primary_metric    the one figure the gate compares (`PrimaryMetric`: metric, scope, split,
                      direction, what the baseline is)
    history_metrics   the metrics the report plots across versions
    enhancement_role  how enhancement uses the kind's champion: "upscale" (the super-resolution
                      of every catalog image, the `fidelity` mode), "restore" (the same, by a
                      model trained on realistic degradations: the `restore` mode), "style"
                      (the optional studio transform after it), or None (the kind reaches the
                      catalog only through the report)
    pairs_degradations
                      the named degradations (`NAMED_DEGRADATIONS`) whose LR/HR pairs the kind
                      trains and is judged on: the pairs stage makes them before training
    evaluation_batches(rows)
                      pending registry rows grouped into evaluation tasks (default: one a version)
    evaluate(lake, rows, context) -> KindEvaluation
                      evaluate, record and gate the versions of one batch, oldest first
    report_sections(lake, evaluations) -> sections
                      the kind's part of the HTML evaluation report

`evaluate` and `report_sections` have no default: a kind that does not implement them cannot
be registered. Everything else has one, declared here once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # annotations only: the plugins import these modules, the contract does not
    import pandas as pd

    from catalog_enhance.tasks.lake.storage import Lake
    from catalog_enhance.tasks.train.base import Trainer

EnhancementRole = Literal["upscale", "restore", "style"]


@dataclass(frozen=True)
class PrimaryMetric:
    """The one number that decides promotion for a model kind."""

    metric: str  # the `metric` column value in the evaluations manifest
    scope: str  # the `scope` column value
    split: str
    higher_is_better: bool
    baseline: str  # what the baseline value measures
    description: str


@dataclass
class EvaluationContext:
    """What every kind's evaluation of one run shares."""

    run_id: str | None = None
    full_run: bool = True  # every pending version (not a selection): SR also records its baselines
    sr_max_images: int | None = None
    classifier: Any = None  # the FID feature extractor's settings (evaluate.feature_extractor.ClassifierSettings)
    # Per-run shared resources a kind may cache here (the FID feature extractors, by image size).
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class KindEvaluation:
    """What evaluating one batch of versions did."""

    results: list[Any] = field(default_factory=list)  # evaluate.results.VersionResult
    failures: list[str] = field(default_factory=list)  # "model version: reason"
    # Versions that cannot be judged yet (no held-out data): they stay pending, nothing is recorded.
    deferred: list[str] = field(default_factory=list)
    baselines_recorded: list[int] = field(default_factory=list)  # SR scales whose baselines were recorded
    extractors: dict[int, dict] = field(default_factory=dict)  # image size -> FeatureExtractor.describe()

    def extend(self, other: "KindEvaluation") -> None:
        self.results += other.results
        self.failures += other.failures
        self.deferred += other.deferred
        self.baselines_recorded += other.baselines_recorded
        self.extractors.update(other.extractors)


class ModelKind(abc.ABC):
    """One kind of model; see the module docstring for every hook."""

    name: ClassVar[str]
    order: ClassVar[int] = 100
    trainer: ClassVar[type["Trainer"]]
    primary_metric: ClassVar[PrimaryMetric]
    history_metrics: ClassVar[tuple[str, ...]] = ()
    enhancement_role: ClassVar[EnhancementRole | None] = None
    pairs_degradations: ClassVar[tuple[str, ...]] = ()

    def evaluation_batches(self, rows: Sequence[dict]) -> list[list[dict]]:
        """Pending versions grouped into evaluation tasks: one task a version by default."""
        return [[row] for row in rows]

    @abc.abstractmethod
    def evaluate(self, lake: "Lake", rows: Sequence[dict], context: EvaluationContext) -> KindEvaluation:
        """Evaluate, record and gate `rows` (registry rows of this kind), oldest first."""

    @abc.abstractmethod
    def report_sections(self, lake: "Lake", evaluations: "pd.DataFrame") -> list[Any]:
        """This kind's sections of the evaluation report (`tasks.report.html` sections)."""


_KINDS: dict[str, ModelKind] = {}
_REQUIRED = ("name", "trainer", "primary_metric")


def register_kind(cls: type[ModelKind]) -> type[ModelKind]:
    """Class decorator: one instance of the plugin, found by `get_kind(cls.name)`."""
    missing = [attribute for attribute in _REQUIRED if not hasattr(cls, attribute)]
    if missing:
        raise TypeError(f"model kind {cls.__name__} does not declare {', '.join(missing)} (tasks/kinds/base.py)")
    if cls.name in _KINDS and type(_KINDS[cls.name]) is not cls:
        raise ValueError(f"a model kind {cls.name!r} is already registered: {type(_KINDS[cls.name]).__name__}")
    _KINDS[cls.name] = cls()  # abstract hooks left unimplemented fail here, naming them
    return cls


def registered() -> dict[str, ModelKind]:
    """The kinds registered so far (`tasks.kinds.get_kind` imports the plugin modules first)."""
    return _KINDS
