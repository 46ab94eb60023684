"""The evaluation report: champions, every metric, where the SR champion loses, images and plots.

Built from the lake (the evaluations manifest, the registry, the trained checkpoints), so it shows
the champions even when they were evaluated in an earlier run, plus what this run decided. One
self-contained HTML file (`tasks.report`), written to `reports/evaluation-<UTC time>/report.html`.
A section that cannot be drawn (a checkpoint gone, ...) becomes a paragraph saying why; the rest
of the report is still written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd

from catalog_enhance.tasks.evaluate.cyclegan_eval import FULL, translate_pairs
from catalog_enhance.tasks.inference.enhancers import bicubic
from catalog_enhance.tasks.evaluate.gan_eval import cgan_sample_grid, data_options, gan_sample_grid
from catalog_enhance.tasks.evaluate.gate import PRIMARY_METRIC
from catalog_enhance.tasks.lake.champions import read_evaluations
from catalog_enhance.tasks.evaluate.pipeline import EvaluationSummary, sr_scale_of
from catalog_enhance.tasks.imaging.metrics import quantize
from catalog_enhance.tasks.evaluate.sr_test import BASELINE_VERSION, pair_images, sr_enhancer, test_pairs
from catalog_enhance.tasks.lake.model_registry import list_versions, read_curves
from catalog_enhance.tasks.report.html import (
    REPORT_FILENAME,
    ImageGridSection,
    PlotSection,
    ReportSection,
    TableSection,
    TextSection,
    build_report,
    plot_metric_history,
    plot_training_curves,
    write_report,
)
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.catalog.rows import catalog_training_rows, domain_rows
from catalog_enhance.tasks.inference.trained import load_trained

log = logging.getLogger(__name__)

REPORT_PREFIX = "evaluation-"
HISTORY_METRICS = {
    "sr": ["psnr_y_gain", "ssim_y_gain", "share_worse_than_bicubic"],
    "gan": ["fid", "kid"],
    "cgan": ["fid", "kid", "conditional_accuracy"],
    "cyclegan": ["psnr_vs_studio", "psnr_vs_studio_at_trained_size", "cycle_l1", "fid_to_studio"],
}


def _evaluations(lake: Lake) -> pd.DataFrame:
    return read_evaluations(lake).to_pandas()


def _headline(scope: str) -> bool:
    return scope in ("overall", "feature_extractor") or (scope.startswith("scale=") and "," not in scope)


def _gain(value, baseline, higher_is_better) -> float | None:
    """Value minus baseline, signed so that positive is better (None without both)."""
    if value is None or baseline is None or pd.isna(value) or pd.isna(baseline):
        return None
    return float(value - baseline) if higher_is_better else float(baseline - value)


# -- tables --------------------------------------------------------------------------------------


def champion_table(evals: pd.DataFrame) -> list[dict]:
    """One row per model kind: its champion's promotion decision (latest promoted decision row)."""
    rows = []
    decisions = evals[(evals["record"] == "decision")] if len(evals) else evals
    for kind in PRIMARY_METRIC:
        promoted = decisions[(decisions["model_kind"] == kind) & (decisions["promoted"].fillna(False).astype(bool))]
        if promoted.empty:
            rows.append({"kind": kind, "champion": "none yet", "version": None,
                         "primary metric": PRIMARY_METRIC[kind].metric, "value": None,
                         "baseline": PRIMARY_METRIC[kind].baseline, "baseline value": None,
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
    rows = []
    if evals.empty:
        return rows
    part = evals[(evals["record"] == "evaluation") & evals["scope"].map(_headline).astype(bool)]
    part = part[[(m, v) in versions for m, v in zip(part["model_name"], part["version"])]]
    part = part.drop_duplicates(["model_name", "version", "metric", "scope"], keep="last")
    for r in part.itertuples(index=False):
        rows.append({
            "kind": r.model_kind, "model": r.model_name, "version": r.version, "metric": r.metric, "scope": r.scope,
            "value": r.value, "baseline": r.baseline, "baseline value": r.baseline_value,
            "gain over baseline": _gain(r.value, r.baseline_value, bool(r.higher_is_better)),
            "higher is better": bool(r.higher_is_better),
        })
    order = {k: i for i, k in enumerate(PRIMARY_METRIC)}
    return sorted(rows, key=lambda r: (order.get(r["kind"], 99), r["model"], r["version"], r["scope"], r["metric"]))


def sr_comparison_table(evals: pd.DataFrame, lake: Lake) -> list[dict]:
    """Per scale: the classical baselines and the newest evaluated version of each SR model, on the
    newest test set of that scale (psnr/ssim, gains over bicubic, share of images worse)."""
    if evals.empty:
        return []
    sr = evals[(evals["record"] == "evaluation") & (evals["model_kind"] == "sr")]
    sr = sr[sr["scope"].str.fullmatch(r"scale=\d+").astype(bool)]
    rows = []
    for scope in sorted(sr["scope"].unique(), key=lambda s: int(s.split("=")[1])):
        at = sr[sr["scope"] == scope]
        dataset = at["dataset_hash"].iloc[-1]  # the newest test set of this scale
        at = at[at["dataset_hash"] == dataset]
        latest = at.drop_duplicates(["model_name"], keep="last")[["model_name", "version"]]
        for model_name, version in latest.itertuples(index=False):
            figures = at[(at["model_name"] == model_name) & (at["version"] == version)]
            values = dict(zip(figures["metric"], figures["value"]))
            rows.append({
                "scale": scope.split("=")[1], "enhancer": model_name,
                "version": version if version != BASELINE_VERSION else "(classical)",
                "PSNR-Y dB": values.get("psnr_y"), "SSIM-Y": values.get("ssim_y"),
                "psnr gain dB": values.get("psnr_y_gain"), "ssim gain": values.get("ssim_y_gain"),
                "share of images worse than bicubic": values.get("share_worse_than_bicubic"),
            })
    return rows


def sr_losses_table(evals: pd.DataFrame, model_name: str, version: str) -> tuple[list[dict], str]:
    """Where the SR champion does not beat bicubic: its x-its-scale figures overall, per category
    and per style, the losing scopes first; and a one-line verdict."""
    part = evals[(evals["record"] == "evaluation") & (evals["model_name"] == model_name)
                 & (evals["version"] == version)]
    if part.empty:
        return [], f"{model_name} {version} has no evaluation rows."
    rows = []
    for scope, group in part.groupby("scope", sort=False):
        values = dict(zip(group["metric"], group["value"]))
        where = scope.split(",", 1)[1] if "," in scope else "all test images"
        rows.append({
            "scale": scope.split(",")[0].split("=")[1], "where": where,
            "psnr gain dB": values.get("psnr_y_gain"), "ssim gain": values.get("ssim_y_gain"),
            "share of images where bicubic is better": values.get("share_worse_than_bicubic"),
            "beats bicubic": None if values.get("psnr_y_gain") is None or pd.isna(values.get("psnr_y_gain"))
            else bool(values["psnr_y_gain"] > 0),
        })
    rows.sort(key=lambda r: (r["where"] != "all test images", _sort_value(r["psnr gain dB"])))
    scoped = [r for r in rows if r["where"].startswith("category=")]
    losing = [r["where"].split("=", 1)[1] for r in scoped if r["beats bicubic"] is False]
    overall = next((r for r in rows if r["where"] == "all test images"), None)
    share = overall and overall["share of images where bicubic is better"]
    verdict = (f"{model_name} {version}: bicubic is better on "
               f"{'—' if share is None or pd.isna(share) else f'{share:.0%}'} of the test images; "
               f"it loses on average in {len(losing)} of {len(scoped)} categories"
               + (f" ({', '.join(losing)})." if losing else "."))
    return rows, verdict


def _sort_value(value) -> float:
    return math.inf if value is None or pd.isna(value) else float(value)


# -- images --------------------------------------------------------------------------------------


def sr_grid_sections(lake: Lake, n_images: int = 4) -> list[ReportSection]:
    """Per scale with SR models: LR, bicubic, the newest version of each SR model, HR on a few test
    pairs (one per category where possible)."""
    newest: dict[int, dict[str, dict]] = {}
    for row in list_versions(lake):
        if row["kind"] == "sr":
            newest.setdefault(sr_scale_of(row), {})[row["name"]] = row
    sections = []
    for scale in sorted(newest):
        rows = test_pairs(lake, scale)
        if rows.num_rows == 0:
            continue
        seen, pick = set(), []
        for i, category in enumerate(rows.column("category").to_pylist()):
            if category not in seen:
                seen.add(category)
                pick.append(i)
        pick = (pick + [i for i in range(rows.num_rows) if i not in pick])[:n_images]
        models = {name: sr_enhancer(load_trained(lake, row)) for name, row in sorted(newest[scale].items())}
        shown = ", ".join(f"`{row['version']}`" for _, row in sorted(newest[scale].items()))
        grid, labels = [], []
        for hr, lr, meta in pair_images(lake, rows.take(pick)):
            outputs = [quantize(lr), quantize(bicubic(lr, scale))]
            for enhance in models.values():
                try:
                    outputs.append(quantize(enhance(lr, scale)))
                except Exception as error:  # noqa: BLE001
                    log.warning("SR grid: %s failed on %s: %s", enhance, meta["sku"], error)
                    outputs.append(None)
            grid.append(outputs + [hr])
            labels.append(f"{meta['category']} · {meta['style']}")
        sections.append(ImageGridSection(
            f"Super-resolution x{scale}: before and after", grid, row_labels=labels,
            column_labels=["LR", "bicubic", *models, "HR (truth)"],
            note=f"Test-split crops (held-out products). LR shown enlarged with square pixels; each model is its "
                 f"newest version trained for x{scale}: {shown}.",
        ))
    return sections


def _newest(lake: Lake, kind: str) -> dict | None:
    rows = [r for r in list_versions(lake) if r["kind"] == kind]
    return rows[-1] if rows else None


def _figures_note(evals: pd.DataFrame, row: dict, metrics: list[str]) -> str:
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


def gan_sections(lake: Lake, evals: pd.DataFrame) -> list[ReportSection]:
    sections = []
    row = _newest(lake, "gan")
    if row is not None:
        grid = gan_sample_grid(load_trained(lake, row))
        sections.append(ImageGridSection("GAN samples", grid, note=_figures_note(evals, row, ["fid", "kid"]),
                                         cell_px=64))
    row = _newest(lake, "cgan")
    if row is not None:
        labels, grid = cgan_sample_grid(lake, load_trained(lake, row))
        sections.append(ImageGridSection(
            "Conditional GAN samples, one row per category", grid, row_labels=labels,
            note=_figures_note(evals, row, ["fid", "kid", "conditional_accuracy"]), cell_px=64,
        ))
    return sections


def cyclegan_sections(lake: Lake, evals: pd.DataFrame, n_products: int = 6) -> list[ReportSection]:
    row = _newest(lake, "cyclegan")
    if row is None:
        return []
    trained = load_trained(lake, row)
    options = data_options(trained)
    rows = catalog_training_rows(lake, split="test", filters=options.filters, **options.split_options())
    x_rows, y_rows = domain_rows(rows, trained.metadata["domain_x"], trained.metadata["domain_y"])
    pairs = translate_pairs(lake, trained, x_rows, y_rows, limit=n_products)
    resolution = sorted({p.resolution for p in pairs})
    return [ImageGridSection(
        "CycleGAN: lifestyle → studio", [[p.lifestyle, p.translated, p.studio, p.translated_small] for p in pairs],
        row_labels=[f"{p.category} · {p.product_id}" for p in pairs],
        column_labels=["lifestyle (input)", "G(lifestyle)", "true studio shot", "G at the training image size"],
        note=_figures_note(evals, row, ["psnr_vs_studio", "ssim_vs_studio", "psnr_vs_studio_at_trained_size",
                                        "cycle_l1", "fid_to_studio"])
        + f" Test-split products; inference at {' + '.join(resolution) or FULL}.",
    )]


# -- the whole report ----------------------------------------------------------------------------


def _guarded(title: str, build: Callable[[], list[ReportSection]]) -> list[ReportSection]:
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
    sections += _guarded("Super-resolution on the test split", lambda: [
        TableSection("Super-resolution on the test split", sr_comparison_table(evals, lake),
                     note="Classical baselines: bicubic, + unsharp mask, + histogram equalisation, + TV denoising "
                          "(on the luma only).")])
    sr_champion = summary.champions.get("sr")
    if sr_champion is not None:
        def losses() -> list[ReportSection]:
            rows, verdict = sr_losses_table(evals, sr_champion.model_name, sr_champion.version)
            return [TableSection("Where the SR champion does not beat bicubic", rows, note=verdict)]
        sections += _guarded("Where the SR champion does not beat bicubic", losses)
    sections += _guarded("Super-resolution: before and after", lambda: sr_grid_sections(lake))
    sections += _guarded("GAN samples", lambda: gan_sections(lake, evals))
    sections += _guarded("CycleGAN translations", lambda: cyclegan_sections(lake, evals))
    sections += _guarded("Training curves", lambda: [
        PlotSection("Training curves", plot_training_curves(read_curves(lake).to_pandas()),
                    note="Newest version of each model; faint: every step, solid: moving average.")])

    def history() -> list[ReportSection]:
        out = []
        for kind, metrics in HISTORY_METRICS.items():
            if evals.empty:
                break
            part = evals[(evals["model_kind"] == kind) & (evals["version"] != BASELINE_VERSION)]
            if len(part):
                out.append(PlotSection(f"Metrics across versions: {kind}", plot_metric_history(part, metrics=metrics)))
        return out

    sections += _guarded("Metrics across versions", history)
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
    "champion_table", "evaluation_report_sections", "latest_report_key", "metrics_table", "sr_comparison_table",
    "sr_losses_table", "write_evaluation_report",
]
