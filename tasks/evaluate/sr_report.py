"""The super-resolution part of the evaluation report: every SR model and baseline per scale, where
the champion loses to bicubic, and before/after grids on held-out crops."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from catalog_enhance.tasks.evaluate.report import guarded
from catalog_enhance.tasks.evaluate.sr_test import (
    BASELINE_VERSION,
    degradation_config_hash,
    pair_images,
    sr_enhancer,
    test_pairs,
)
from catalog_enhance.tasks.evaluate.sr_versions import sr_scale_of
from catalog_enhance.tasks.imaging.metrics import quantize
from catalog_enhance.tasks.inference.enhancers import bicubic
from catalog_enhance.tasks.inference.trained import load_trained
from catalog_enhance.tasks.lake.champions import current_champion
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.report.html import ImageGridSection, ReportSection, TableSection

log = logging.getLogger(__name__)


def sr_comparison_table(evals: pd.DataFrame, lake: Lake, kind: str = "sr") -> list[dict]:
    """Per scale: the classical baselines and the newest evaluated version of each model of `kind`
    (super-resolution or restoration), on the newest test set of that scale (psnr/ssim, gains over
    bicubic, share of images worse)."""
    if evals.empty:
        return []
    sr = evals[(evals["record"] == "evaluation") & (evals["model_kind"] == kind)]
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


def sr_grid_sections(lake: Lake, n_images: int = 4, *, kind: str = "sr", degradation: str = "bicubic",
                     title: str = "Super-resolution") -> list[ReportSection]:
    """Per scale with models of `kind`: LR, bicubic, the newest version of each model, HR on a few
    test pairs of the named `degradation` (one per category where possible)."""
    newest: dict[int, dict[str, dict]] = {}
    for row in list_versions(lake):
        if row["kind"] == kind:
            newest.setdefault(sr_scale_of(row), {})[row["name"]] = row
    sections: list[ReportSection] = []
    for scale in sorted(newest):
        rows = test_pairs(lake, scale, config_hash=degradation_config_hash(lake, degradation))
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
            outputs: list[np.ndarray | None] = [quantize(lr), quantize(bicubic(lr, scale))]
            for enhance in models.values():
                try:
                    outputs.append(quantize(enhance(lr, scale)))
                except Exception as error:  # noqa: BLE001
                    log.warning("SR grid: %s failed on %s: %s", enhance, meta["sku"], error)
                    outputs.append(None)
            grid.append(outputs + [hr])
            labels.append(f"{meta['category']} · {meta['style']}")
        sections.append(ImageGridSection(
            f"{title} x{scale}: before and after", grid, row_labels=labels,
            column_labels=["LR", "bicubic", *models, "HR (truth)"],
            note=f"Test-split crops (held-out products). LR shown enlarged with square pixels; each model is its "
                 f"newest version trained for x{scale}: {shown}.",
        ))
    return sections


def sr_report_sections(lake: Lake, evals: pd.DataFrame, *, kind: str = "sr", degradation: str = "bicubic",
                       title: str = "Super-resolution", short: str = "SR") -> list[ReportSection]:
    """The comparison table, where the champion loses, and the before/after grids of `kind`'s
    models on the named `degradation`'s test pairs; each drawn on its own, so one that fails
    becomes a paragraph saying why and the others are still shown."""
    sections = guarded(f"{title} on the test split", lambda: [
        TableSection(f"{title} on the test split ({degradation} degradation)", sr_comparison_table(evals, lake, kind),
                     note="Classical baselines: bicubic, + unsharp mask, + histogram equalisation, + TV denoising, "
                          "+ TV denoising then unsharp mask (on the luma only).")])
    champion = current_champion(lake, kind)
    if champion is not None:
        def losses() -> list[ReportSection]:
            rows, verdict = sr_losses_table(evals, champion.model_name, champion.version)
            return [TableSection(f"Where the {short} champion does not beat bicubic", rows, note=verdict)]
        sections += guarded(f"Where the {short} champion does not beat bicubic", losses)
    sections += guarded(f"{title}: before and after",
                        lambda: sr_grid_sections(lake, kind=kind, degradation=degradation, title=title))
    return sections
