"""Restoration (the `restore` enhancement mode): super-resolution networks trained on realistic
degradations (JPEG, noise, blur, twice: Real-ESRGAN's second-order model) instead of bicubic
alone, judged on held-out pairs made by the same degradation, and promoted only when they beat
the best classical pipeline there (bicubic, + unsharp, + histogram equalisation, + denoising)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from catalog_enhance.tasks.evaluate.sr_report import sr_report_sections
from catalog_enhance.tasks.evaluate.sr_versions import evaluate_sr_versions
from catalog_enhance.tasks.kinds.base import EvaluationContext, KindEvaluation, ModelKind, PrimaryMetric, register_kind
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.report.html import ReportSection
from catalog_enhance.tasks.train.restore import RestoreTrainer

DEGRADATION = "realistic"


@register_kind
class Restoration(ModelKind):
    name = "restore"
    order = 15
    trainer = RestoreTrainer
    primary_metric = PrimaryMetric(
        "psnr_y_gain", "scale=2", "test", True, "the best classical pipeline",
        "PSNR-Y gain (dB) over MATLAB bicubic at x2 on the test split of the realistic degradation; "
        "promoted only above the best classical pipeline's gain",
    )
    history_metrics = ("psnr_y_gain", "ssim_y_gain", "share_worse_than_bicubic")
    enhancement_role = "restore"
    pairs_degradations = (DEGRADATION,)

    def evaluation_batches(self, rows: Sequence[dict]) -> list[list[dict]]:
        return [list(rows)]  # one task: the versions share each scale's test images and baselines

    def evaluate(self, lake: Lake, rows: Sequence[dict], context: EvaluationContext) -> KindEvaluation:
        # Baselines only at the scales a version was trained for: the realistic pairs are made
        # for the scales restoration models use, not for every scale.
        return evaluate_sr_versions(lake, rows, scales=(), run_id=context.run_id, max_images=context.sr_max_images,
                                    kind=self.name, degradation=DEGRADATION, best_classical=True)

    def report_sections(self, lake: Lake, evaluations: pd.DataFrame) -> list[ReportSection]:
        return sr_report_sections(lake, evaluations, kind=self.name, degradation=DEGRADATION,
                                  title="Restoration", short="restoration")
