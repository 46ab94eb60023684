"""Super-resolution (SRCNN, ESPCN, ...): trained on the pairs manifest, gated on the PSNR-Y gain over
MATLAB bicubic at x2, and what enhancement runs on every catalog image."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from catalog_enhance.tasks.evaluate.sr_report import sr_report_sections
from catalog_enhance.tasks.evaluate.sr_test import SCALES
from catalog_enhance.tasks.evaluate.sr_versions import evaluate_sr_versions
from catalog_enhance.tasks.kinds.base import EvaluationContext, KindEvaluation, ModelKind, PrimaryMetric, register_kind
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.report.html import ReportSection
from catalog_enhance.tasks.train.sr import SRTrainer


@register_kind
class SuperResolution(ModelKind):
    name = "sr"
    order = 10
    trainer = SRTrainer
    primary_metric = PrimaryMetric(
        "psnr_y_gain", "scale=2", "test", True, "bicubic",
        "PSNR-Y gain (dB) over MATLAB bicubic at x2 on the test split; bicubic itself scores 0",
    )
    history_metrics = ("psnr_y_gain", "ssim_y_gain", "share_worse_than_bicubic")
    enhancement_role = "upscale"
    pairs_degradations = ("bicubic",)

    def evaluation_batches(self, rows: Sequence[dict]) -> list[list[dict]]:
        # One task for all versions: they share each scale's test images and baselines, and a
        # full run records the baselines even when no SR version is new.
        return [list(rows)]

    def evaluate(self, lake: Lake, rows: Sequence[dict], context: EvaluationContext) -> KindEvaluation:
        return evaluate_sr_versions(lake, rows, scales=SCALES if context.full_run else (),
                                    run_id=context.run_id, max_images=context.sr_max_images)

    def report_sections(self, lake: Lake, evaluations: pd.DataFrame) -> list[ReportSection]:
        return sr_report_sections(lake, evaluations)
