"""CycleGAN: unpaired translation between two label-defined domains (lifestyle -> studio by default),
gated on PSNR of G(x) against the true studio shot of the same product, against doing nothing;
enhancement can run its champion after super-resolution (the studio transform)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from catalog_enhance.tasks.catalog.rows import catalog_training_rows, domain_rows
from catalog_enhance.tasks.evaluate.cyclegan_eval import FULL, evaluate_cyclegan, translate_pairs
from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings
from catalog_enhance.tasks.evaluate.gan_eval import data_options
from catalog_enhance.tasks.evaluate.generative import evaluate_generative_versions
from catalog_enhance.tasks.evaluate.report import figures_note, newest_version
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained
from catalog_enhance.tasks.kinds.base import EvaluationContext, KindEvaluation, ModelKind, PrimaryMetric, register_kind
from catalog_enhance.tasks.kinds.gan import extractors_of
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.report.html import ImageGridSection, ReportSection, TextSection
from catalog_enhance.tasks.train.cyclegan import CycleGANTrainer

REPORT_PRODUCTS = 6


def _settings_size(trained: TrainedModel, settings: ClassifierSettings) -> int:
    # Its images are of any size: measured at the extractor settings' size (the GAN presets' 32 px).
    return settings.image_size


@register_kind
class CycleGAN(ModelKind):
    name = "cyclegan"
    order = 40
    trainer = CycleGANTrainer
    primary_metric = PrimaryMetric(
        "psnr_vs_studio", "overall", "test", True, "identity",
        "PSNR of G(lifestyle) against the true studio image; the baseline is the lifestyle image unchanged",
    )
    history_metrics = ("psnr_vs_studio", "psnr_vs_studio_at_trained_size", "cycle_l1", "fid_to_studio")
    enhancement_role = "style"

    def evaluate(self, lake: Lake, rows: Sequence[dict], context: EvaluationContext) -> KindEvaluation:
        return evaluate_generative_versions(lake, rows, extractors_of(lake, context), measure=evaluate_cyclegan,
                                            extractor_size=_settings_size, run_id=context.run_id)

    def report_sections(self, lake: Lake, evaluations: pd.DataFrame) -> list[ReportSection]:
        row = newest_version(lake, self.name)
        if row is None:
            return []
        trained = load_trained(lake, row)
        options = data_options(trained)
        rows = catalog_training_rows(lake, split="test", filters=options.filters, **options.split_options())
        x_rows, y_rows = domain_rows(rows, trained.metadata["domain_x"], trained.metadata["domain_y"])
        pairs = translate_pairs(lake, trained, x_rows, y_rows, limit=REPORT_PRODUCTS)
        if not pairs:  # an unpaired catalog: nothing to put side by side
            return [TextSection(f"No test product has both a {trained.metadata['domain_x']!r} and a "
                                f"{trained.metadata['domain_y']!r} image: "
                                + figures_note(evaluations, row, ["fid_to_studio", "kid_to_studio", "cycle_l1"]),
                                title="CycleGAN: lifestyle → studio")]
        resolution = sorted({p.resolution for p in pairs})
        return [ImageGridSection(
            "CycleGAN: lifestyle → studio", [[p.lifestyle, p.translated, p.studio, p.translated_small] for p in pairs],
            row_labels=[f"{p.category} · {p.product_id}" for p in pairs],
            column_labels=["lifestyle (input)", "G(lifestyle)", "true studio shot", "G at the training image size"],
            note=figures_note(evaluations, row, ["psnr_vs_studio", "ssim_vs_studio", "psnr_vs_studio_at_trained_size",
                                                 "cycle_l1", "fid_to_studio"])
            + f" Test-split products; inference at {' + '.join(resolution) or FULL}.",
        )]
