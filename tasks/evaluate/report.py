"""The evaluation report: champions, every metric, where the SR champion loses, images and plots.

Built from the lake (the evaluations manifest, the registry, the trained checkpoints), so it shows
the champions even when they were evaluated in an earlier run, plus what this run decided. One
self-contained HTML file (`tasks.report`), written to `reports/evaluation-<UTC time>/report.html`.
A section that cannot be drawn (a checkpoint gone, ...) becomes a paragraph saying why; the rest
of the report is still written.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from catalog_enhance.data_contracts.evaluations import is_headline_scope
from catalog_enhance.tasks.evaluate.results import EvaluationSummary
from catalog_enhance.tasks.evaluate.sr_test import BASELINE_VERSION
from catalog_enhance.tasks.kinds import list_kinds
from catalog_enhance.tasks.lake.champions import read_evaluations
from catalog_enhance.tasks.lake.model_registry import list_versions, read_curves
from catalog_enhance.tasks.report.html import (
    REPORT_FILENAME,
    PlotSection,
    ReportSection,
    TableSection,
    TextSection,
    build_report,
    write_report,
)
from catalog_enhance.tasks.report.plots import plot_metric_history, plot_training_curves
from catalog_enhance.tasks.lake.storage import Lake

log = logging.getLogger(__name__)

REPORT_PREFIX = "evaluation-"


def _evaluations(lake: Lake) -> pd.DataFrame:
    return read_evaluations(lake).to_pandas()


def _gain(value, baseline, higher_is_better) -> float | None:
    """Value minus baseline, signed so that positive is better (None without both)."""
    if value is None or baseline is None or pd.isna(value) or pd.isna(baseline):
        return None
    return float(value - baseline) if higher_is_better else float(baseline - value)


# -- tables --------------------------------------------------------------------------------------


def champion_table(evals: pd.DataFrame) -> list[dict]:
    """One row per model kind: its champion's promotion decision (latest promoted decision row)."""
    rows: list[dict] = []
    decisions = evals[(evals["record"] == "decision")] if len(evals) else evals
    for plugin in list_kinds():
        kind, primary = plugin.name, plugin.primary_metric
        promoted = decisions[(decisions["model_kind"] == kind) & (decisions["promoted"].fillna(False).astype(bool))]
        if promoted.empty:
            rows.append({"kind": kind, "champion": "none yet", "version": None,
                         "primary metric": primary.metric, "value": None,
                         "baseline": primary.baseline, "baseline value": None,
                         "gain over baseline": None, "promoted at": None, "reason": "no version has passed the gate"})
            continue
        last = promoted.iloc[-1]
        rows.append({
            "kind": kind, "champion": last["model_name"], "version": last["version"], "primary metric": last["metric"],
            "value": last["value"], "baseline": last["baseline"], "baseline value": last["baseline_value"],
            "gain over baseline": _gain(last["value"], last["baseline_value"], bool(last["higher_is_better"])),
            "promoted at": f"{pd.Timestamp(last['evaluated_at']):%Y-%m-%d %H:%M} UTC", "reason": last["reason"],
        })
    return rows


def metrics_table(evals: pd.DataFrame, versions: set[tuple[str, str]]) -> list[dict]:
    """Every headline figure (overall / per scale) of the given (model, version)s, latest record each."""
    rows: list[dict] = []
    if evals.empty:
        return rows
    part = evals[(evals["record"] == "evaluation") & evals["scope"].map(is_headline_scope).astype(bool)]
    part = part[[(m, v) in versions for m, v in zip(part["model_name"], part["version"])]]
    part = part.drop_duplicates(["model_name", "version", "metric", "scope"], keep="last")
    for r in part.itertuples(index=False):
        rows.append({
            "kind": r.model_kind, "model": r.model_name, "version": r.version, "metric": r.metric, "scope": r.scope,
            "value": r.value, "baseline": r.baseline, "baseline value": r.baseline_value,
            "gain over baseline": _gain(r.value, r.baseline_value, bool(r.higher_is_better)),
            "higher is better": bool(r.higher_is_better),
        })
    order = {kind.name: i for i, kind in enumerate(list_kinds())}
    return sorted(rows, key=lambda r: (order.get(r["kind"], 99), r["model"], r["version"], r["scope"], r["metric"]))


def newest_version(lake: Lake, kind: str) -> dict | None:
    """The newest registered version of a kind (the one its report section shows)."""
    rows = [r for r in list_versions(lake) if r["kind"] == kind]
    return rows[-1] if rows else None


def figures_note(evals: pd.DataFrame, row: dict, metrics: list[str]) -> str:
    """A version's headline figures, each with its baseline, as one line under its section."""
    part = evals[(evals["record"] == "evaluation") & (evals["version"] == row["version"])
                 & (evals["scope"] == "overall")]
    parts = []
    for metric in metrics:
        found = part[part["metric"] == metric]
        if not found.empty:
            r = found.iloc[-1]
            base = "" if pd.isna(r["baseline_value"]) else f" (baseline {r['baseline']}: {r['baseline_value']:.4g})"
            parts.append(f"{metric} **{r['value']:.4g}**{base}")
    return f"Version `{row['version']}`. " + ("; ".join(parts) if parts else "Not evaluated yet.")


def guarded(title: str, build: Callable[[], list[ReportSection]]) -> list[ReportSection]:
    """The sections `build` draws, or one paragraph saying why it could not."""
    try:
        return build()
    except Exception as error:  # noqa: BLE001 - one broken section must not cost the whole report
        log.exception("report section %r failed", title)
        return [TextSection(f"This section could not be drawn: {type(error).__name__}: {error}", title=title)]


def intro_text(summary: EvaluationSummary) -> str:
    lines = []
    if summary.results:
        lines.append(f"This run evaluated **{len(summary.results)}** version(s) on the held-out test split; "
                     f"**{sum(r.promoted for r in summary.results)}** promoted.")
    else:
        lines.append("This run evaluated no new version.")
    if summary.failures:
        lines.append("")
        lines += [f"- failed: {f}" for f in summary.failures]
    lines += [
        "",
        "## Protocol",
        "",
        "- Super-resolution: PSNR/SSIM on MATLAB BT.601 luma, `scale` pixels shaved, 8-bit outputs; bicubic is "
        "MATLAB's `imresize` (a = -0.5, antialiased), as in published SR tables. Test pairs: the current pairs "
        "config's held-out products.",
        "- GAN/CGAN: FID and KID (torchmetrics) with the features of the project's own catalog classifier (no "
        "pretrained Inception is available), against the real test images; baseline: the untrained generator.",
        "- CycleGAN: G(lifestyle) against the true studio shot of the same product; baseline: the lifestyle shot "
        "unchanged. Note the classifier is trained on categories across styles, so its features are largely "
        "style-invariant: FID to the studio domain understates the background change, PSNR/SSIM do not.",
    ]
    for size, info in sorted(summary.extractors.items()):
        lines.append(f"- Feature extractor ({size} px, `{info['feature_extractor']}`): held-out accuracy "
                     f"**{info['test_accuracy']:.1%}** on {info['test_images']} test images, over {info['classes']} "
                     f"categories (the majority class alone: {info['chance_accuracy']:.1%}).")
    return "\n".join(lines)


def evaluation_report_sections(lake: Lake, summary: EvaluationSummary) -> list[ReportSection]:
    evals = _evaluations(lake)
    sections: list[ReportSection] = [TextSection(intro_text(summary), title="Summary")]
    sections.append(TableSection("Champions", champion_table(evals),
                                 note="A version is promoted only if it beats its baseline and the current champion."))
    if summary.results:
        sections.append(TableSection("Gate decisions of this run, and the standing champions", summary.champion_rows()))
    champions = {(c.model_name, c.version) for c in summary.champions.values() if c is not None}
    shown = champions | {(r.model_name, r.version) for r in summary.results}
    sections.append(TableSection("All metrics: champions and this run's versions", metrics_table(evals, shown),
                                 note="`gain over baseline` is signed so that positive is better."))
    for kind in list_kinds():
        sections += guarded(f"{kind.name} models", functools.partial(kind.report_sections, lake, evals))
    sections += guarded("Training curves", lambda: [
        PlotSection("Training curves", plot_training_curves(read_curves(lake).to_pandas()),
                    note="Newest version of each model; faint: every step, solid: moving average.")])

    def history() -> list[ReportSection]:
        out: list[ReportSection] = []
        for kind in list_kinds():
            if evals.empty:
                break
            part = evals[(evals["model_kind"] == kind.name) & (evals["version"] != BASELINE_VERSION)]
            if len(part):
                out.append(PlotSection(f"Metrics across versions: {kind.name}",
                                       plot_metric_history(part, metrics=list(kind.history_metrics))))
        return out

    sections += guarded("Metrics across versions", history)
    return sections


def write_evaluation_report(lake: Lake, summary: EvaluationSummary, generated_at: datetime | None = None) -> str:
    """Build the report and write it to the lake; returns its key (also set on `summary`)."""
    generated_at = generated_at or datetime.now(UTC)
    html = build_report(evaluation_report_sections(lake, summary), "Model evaluation", generated_at)
    key = write_report(lake, f"{REPORT_PREFIX}{generated_at:%Y%m%dT%H%M%S%fZ}", html)
    summary.report_key, summary.report_uri = key, lake.uri(key)
    return key


def latest_report_key(lake: Lake) -> str | None:
    """The newest evaluation report in the lake (run names sort by time), or None."""
    keys = [k for k in lake.list("reports") if k.endswith("/" + REPORT_FILENAME)
            and k.split("/")[-2].startswith(REPORT_PREFIX)]
    return max(keys, key=lambda k: k.split("/")[-2]) if keys else None


__all__ = [
    "champion_table", "evaluation_report_sections", "figures_note", "guarded", "latest_report_key",
    "metrics_table", "newest_version", "write_evaluation_report",
]
