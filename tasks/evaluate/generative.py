"""GAN, conditional GAN and CycleGAN versions: measured with the catalog's own feature extractor,
recorded and gated, one version at a time (what each measures: `gan_eval`, `cyclegan_eval`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Protocol

from catalog_enhance.tasks.catalog.labels import CatalogDataError, NotEvaluableHere
from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings, FeatureExtractor, feature_extractor
from catalog_enhance.tasks.evaluate.gan_eval import data_options
from catalog_enhance.tasks.evaluate.gate import champion_value_on, primary_metric, record_and_gate, record_and_refuse
from catalog_enhance.tasks.evaluate.results import VersionResult
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained
from catalog_enhance.tasks.kinds import KindEvaluation
from catalog_enhance.tasks.lake.storage import Lake

log = logging.getLogger(__name__)


class GenerativeEvaluation(Protocol):
    """The evaluation a `Measure` returns (what this module reads of it)."""

    @property
    def dataset_hash(self) -> str: ...

    @property
    def primary(self) -> float: ...

    @property
    def primary_baseline(self) -> float: ...

    def rows(self) -> list[dict]: ...


# What a generative kind measures: (lake, trained version, extractor) -> an evaluation with
# `rows()`, `primary`, `primary_baseline` and `dataset_hash` (GANEvaluation, CycleGANEvaluation).
Measure = Callable[[Lake, TrainedModel, FeatureExtractor], GenerativeEvaluation]
# Which feature extractor image size a version is measured at.
ExtractorSize = Callable[[TrainedModel, ClassifierSettings], int]


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



def evaluate_generative_version(lake: Lake, row: dict, extractors: ExtractorCache, *, measure: Measure,
                                extractor_size: ExtractorSize, run_id: str | None = None) -> VersionResult:
    """Evaluate, record and gate one GAN / CGAN / CycleGAN version."""
    kind = row["kind"]
    trained = load_trained(lake, row)
    # The extractor trains on the split the model trained on (same split options).
    extractor = extractors.for_size(extractor_size(trained, extractors.settings), data_options(trained).split_options())
    evaluation = measure(lake, trained, extractor)
    rows = evaluation.rows()
    refusal = getattr(evaluation, "refusal", None)
    if refusal:  # measured what this catalog allows; the gate's metric is not among it
        decision = record_and_refuse(lake, model_name=row["name"], kind=kind, version=row["version"], rows=rows,
                                     dataset_hash=evaluation.dataset_hash, reason=refusal, run_id=run_id,
                                     baseline=float("nan"))
        return VersionResult(row["name"], row["version"], kind, evaluation.dataset_hash, rows, decision, evaluation)
    champion_value = champion_value_on(lake, kind, evaluation.dataset_hash,
                                       lambda champion: measure(lake, champion, extractor).primary)
    if not math.isfinite(evaluation.primary_baseline):
        # Nothing recorded: the version stays pending until the test split can measure it.
        raise NotEvaluableHere(f"{row['name']} {row['version']}",
                               f"the baseline's {primary_metric(kind).metric} could not be computed "
                               "(fewer than 2 test images?); nothing recorded")
    decision = record_and_gate(lake, model_name=row["name"], kind=kind, version=row["version"], rows=rows,
                               dataset_hash=evaluation.dataset_hash, candidate=evaluation.primary,
                               baseline=evaluation.primary_baseline, champion_value=champion_value, run_id=run_id)
    return VersionResult(row["name"], row["version"], kind, evaluation.dataset_hash, rows, decision, evaluation)


def evaluate_generative_versions(lake: Lake, rows: Iterable[dict], extractors: ExtractorCache, *,
                                 measure: Measure, extractor_size: ExtractorSize,
                                 run_id: str | None = None) -> KindEvaluation:
    """`evaluate_generative_version` for each row, oldest first; a failure is logged and listed
    ("model version: reason") and the others go on."""
    run = KindEvaluation()
    for row in rows:
        try:
            run.results.append(evaluate_generative_version(
                lake, row, extractors, measure=measure, extractor_size=extractor_size, run_id=run_id))
        except CatalogDataError as error:  # this catalog's test split cannot measure it: stays pending
            reason = error.reason if isinstance(error, NotEvaluableHere) else str(error)
            log.warning("%s %s not evaluated: %s", row["name"], row["version"], reason)
            run.deferred.append(f"{row['name']} {row['version']}: {reason}")
        except Exception as error:  # noqa: BLE001 - reported; the flow fails after the rest ran
            log.exception("evaluation of %s %s failed", row["name"], row["version"])
            run.failures.append(f"{row['name']} {row['version']}: {type(error).__name__}: {error}")
    run.extractors = extractors.described()
    return run
