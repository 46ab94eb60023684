"""What people read: markdown for Prefect artifacts and rich tables for the terminal.

The pure core returns data (`counts()`, summaries, data frames); turning it into text for a person
happens here, at the edge, so the core never depends on how it is shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
from rich.console import JustifyMethod
from rich.table import Table

from catalog_enhance.tasks.enhance.run import EnhanceSummary
from catalog_enhance.tasks.evaluate.results import EvaluationSummary
from catalog_enhance.tasks.evaluate.sr_eval import REFERENCE


def counts_markdown(title: str, counts: Mapping[str, object], intro: str = "") -> str:
    """A `| what | value |` table of a stage's counts under a heading (and an optional paragraph)."""
    lines = [title, ""]
    if intro:
        lines += [intro, ""]
    lines += ["| what | value |", "|---|---|"]
    lines += [f"| {str(key).strip()} | {value} |" for key, value in counts.items()]
    return "\n".join(lines) + "\n"


def enhance_summary_markdown(summary: EnhanceSummary) -> str:
    """The enhance flow's summary artifact: the verdict, why this model, and every count."""
    return counts_markdown("# Catalog enhancement", summary.counts(),
                           intro=f"Lake `{summary.lake_uri}`; {summary.verdict()}\n\nModel choice: {summary.champion_reason}")


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2014"
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def evaluation_markdown(summary: EvaluationSummary) -> str:
    """The evaluation run: the report's link, every gate decision and standing champion, failures."""
    lines = ["# Model evaluation", ""]
    if summary.report_uri:
        lines += [f"Report: [{summary.report_uri}]({summary.report_uri})", ""]
    if summary.nothing_new:
        lines += ["Nothing new to evaluate: every registered version has been evaluated and gated.", ""]
    lines += ["| model | version | kind | primary metric | value | baseline | promoted | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for row in summary.champion_rows():
        lines.append(
            f"| {row['model']} | {row['version']} | {row['kind']} | {row['primary_metric']} | "
            f"{_fmt(row['value'])} | {row['baseline']} {_fmt(row['baseline_value'])} | "
            f"{'yes' if row['promoted'] else 'no'} | {row['reason']} |"
        )
    for size, info in sorted(summary.extractors.items()):
        lines += ["", f"Feature extractor ({size} px): held-out accuracy {_fmt(info['test_accuracy'])} "
                      f"on {info['test_images']} test images (majority class {_fmt(info['chance_accuracy'])})."]
    if summary.failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in summary.failures]
    if summary.deferred:
        lines += ["", "## Deferred (not enough held-out data yet)", ""] + [f"- {d}" for d in summary.deferred]
    return "\n".join(lines)


def sr_summary_table(summary: pd.DataFrame, title: str = "Super-resolution (Y channel, border = scale)") -> Table:
    """A rich table of `sr_eval.summarize` output; gains that are not positive are shown in red."""
    table = Table(title=title)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("scale", "right"), ("scope", "left"), ("enhancer", "left"), ("images", "right"),
        ("PSNR-Y dB", "right"), ("SSIM-Y", "right"), ("gain dB", "right"),
        ("SSIM gain", "right"), ("worse than bicubic", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for row in summary.itertuples(index=False):
        gain = "" if pd.isna(row.psnr_gain) else f"{row.psnr_gain:+.3f}"
        if gain and row.enhancer != REFERENCE and row.psnr_gain <= 0:
            gain = f"[red]{gain}[/red]"
        images = f"{row.n_images}" + (f" ({row.n_errors} failed)" if row.n_errors else "")
        table.add_row(
            f"x{row.scale}", row.scope, row.enhancer, images,
            _cell(row.psnr_y, "{:.2f}"), _cell(row.ssim_y, "{:.4f}"), gain,
            _cell(row.ssim_gain, "{:+.4f}"), _cell(row.share_worse, "{:.0%}"),
        )
    return table


def _cell(value: float, pattern: str) -> str:
    return "" if pd.isna(value) else pattern.format(value)
