"""GAN and conditional GAN (DCGAN family): trained on catalog images, gated on FID to the real test
images (features of the project's own catalog classifier) against an untrained generator. They
reach the catalog only through the report (sample grids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pandas as pd

from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings
from catalog_enhance.tasks.evaluate.gan_eval import cgan_sample_grid, evaluate_gan, gan_sample_grid
from catalog_enhance.tasks.evaluate.generative import ExtractorCache, evaluate_generative_versions
from catalog_enhance.tasks.evaluate.report import figures_note, newest_version
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained
from catalog_enhance.tasks.kinds.base import EvaluationContext, KindEvaluation, ModelKind, PrimaryMetric, register_kind
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.report.html import ImageGridSection, ReportSection
from catalog_enhance.tasks.train.gan import CGANTrainer, GANTrainer


def extractors_of(lake: Lake, context: EvaluationContext) -> ExtractorCache:
    """The run's feature extractors, shared by every generative kind (one per image size)."""
    return context.shared.setdefault("extractors", ExtractorCache(lake, context.classifier or ClassifierSettings()))


def _own_image_size(trained: TrainedModel, settings: ClassifierSettings) -> int:
    # A GAN is measured with the classifier at the size it generates.
    return int(trained.metadata["image_size"])


@register_kind
class GAN(ModelKind):
    name = "gan"
    order = 20
    trainer = GANTrainer
    primary_metric = PrimaryMetric(
        "fid", "overall", "test", False, "untrained generator",
        "FID to the real test images, features from the project's catalog classifier",
    )
    history_metrics: ClassVar[tuple[str, ...]] = ("fid", "kid")

    def evaluate(self, lake: Lake, rows: Sequence[dict], context: EvaluationContext) -> KindEvaluation:
        return evaluate_generative_versions(lake, rows, extractors_of(lake, context), measure=evaluate_gan,
                                            extractor_size=_own_image_size, run_id=context.run_id)

    def report_sections(self, lake: Lake, evaluations: pd.DataFrame) -> list[ReportSection]:
        row = newest_version(lake, self.name)
        if row is None:
            return []
        grid = gan_sample_grid(load_trained(lake, row))
        return [ImageGridSection("GAN samples", grid, note=figures_note(evaluations, row, ["fid", "kid"]),
                                 cell_px=64)]


@register_kind
class ConditionalGAN(GAN):
    name = "cgan"
    order = 30
    trainer = CGANTrainer
    history_metrics = ("fid", "kid", "conditional_accuracy")

    def report_sections(self, lake: Lake, evaluations: pd.DataFrame) -> list[ReportSection]:
        row = newest_version(lake, self.name)
        if row is None:
            return []
        labels, grid = cgan_sample_grid(lake, load_trained(lake, row))
        return [ImageGridSection(
            "Conditional GAN samples, one row per category", grid, row_labels=labels,
            note=figures_note(evaluations, row, ["fid", "kid", "conditional_accuracy"]), cell_px=64,
        )]
