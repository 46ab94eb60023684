"""Choosing the models of a run, as registry references (`ModelRef`) tasks can receive.

Which model: the SR champion recorded by the evaluation gate (`current_champion(lake, "sr")`);
until the gate has promoted one, the registered SR version with the best validation metric
(newest among equals), reported as `champion_source = "fallback: latest registered"`; or the
version a caller names. The optional studio transform is the CycleGAN champion (same rules),
whose X->Y generator runs on the super-resolved RGB (alpha passes through) of the catalog
images in the model's domain X (its `domain_x` filter, `style=lifestyle` by default).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from catalog_enhance.tasks.enhance.params import EnhanceParams
from catalog_enhance.tasks.inference.trained import find_version
from catalog_enhance.tasks.kinds import kind_for_role
from catalog_enhance.tasks.lake.champions import current_champion
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake

CHAMPION_SOURCES = ("gate", "fallback: latest registered", "requested")


@dataclass(frozen=True)
class ModelRef:
    """A registered version, small and picklable: what tasks receive instead of a module."""

    name: str
    version: str
    kind: str
    checkpoint_key: str

    @classmethod
    def from_row(cls, row: dict) -> "ModelRef":
        return cls(row["name"], row["version"], row["kind"], row["checkpoint_key"])


@dataclass(frozen=True)
class ChosenModel:
    ref: ModelRef
    source: str  # one of CHAMPION_SOURCES
    reason: str  # why this version, in a sentence


@dataclass(frozen=True)
class ModelChoice:
    sr: ChosenModel
    style: ChosenModel | None = None


def _registry_row(lake: Lake, version: str) -> dict:
    for row in list_versions(lake):
        if row["version"] == version:
            return row
    raise LookupError(f"version {version!r} is not in the model registry")


def _row_scale(row: dict) -> int | None:
    """The upscaling factor a registered SR version was trained for (None if not recorded)."""
    try:
        scale = json.loads(row["metadata_json"] or "{}").get("scale")
    except (TypeError, ValueError):
        return None
    return int(scale) if scale is not None else None


def choose_model(lake: Lake, kind: str, requested: str | None = None, *, scale: int | None = None) -> ChosenModel:
    """The version of `kind` to enhance with: `requested` (a name or version), else the gate's
    champion, else the registered version with the best validation metric (SR: the PSNR gain
    over bicubic, higher is better; other kinds: the newest).

    `scale` (upscaling models): the champion and the fallback must be models of that factor, so that
    registering a x3 or x4 version never makes a x2 night pick it (a requested version is taken
    as asked and checked later, by `check_models`).
    """
    if requested:
        row = find_version(lake, requested)
        if row["kind"] != kind:
            raise ValueError(f"{requested!r} is a {row['kind']} model ({row['version']}), not a {kind} model")
        return ChosenModel(ModelRef.from_row(row), "requested", f"{row['version']} was asked for")

    def fits(row: dict) -> bool:
        return scale is None or _row_scale(row) == scale

    champion = current_champion(lake, kind)
    if champion is not None:
        row = _registry_row(lake, champion.version)
        if fits(row):
            return ChosenModel(ModelRef.from_row(row), "gate",
                               f"champion since {champion.promoted_at:%Y-%m-%d %H:%M} UTC: {champion.reason}")
    rows = [r for r in list_versions(lake) if r["kind"] == kind and r["status"] != "retired" and fits(r)]
    if not rows:
        wanted = f"x{scale} {kind}" if scale is not None else kind
        raise LookupError(f"no registered {wanted} model in the lake: train one first (catalog-enhance train)")
    if scale is not None:  # an upscaling model: the best validation metric of that scale
        def rank(item):
            index, row = item
            metric = row["val_metric"]
            return (metric if metric is not None and math.isfinite(metric) else -math.inf, index)

        row = max(enumerate(rows), key=rank)[1]
        figure = "no validation metric" if row["val_metric"] is None else f"{row['val_metric_name']} {row['val_metric']:+.3f}"
        why = "no champion recorded by the evaluation gate yet" if champion is None else \
            f"the champion {champion.version} is not a x{scale} model"
        reason = f"{why}; best validation metric of {len(rows)} registered ({figure})"
    else:
        row = rows[-1]
        reason = f"no champion recorded by the evaluation gate yet; newest of {len(rows)} registered"
    return ChosenModel(ModelRef.from_row(row), "fallback: latest registered", reason)


def choose_models(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                  style_model: str | None = None) -> ModelChoice:
    """The models of the enhancement roles (`tasks.kinds`): the upscaling kind's, at the asked scale,
    and the style kind's when the studio transform is asked for."""
    style = choose_model(lake, kind_for_role("style").name, style_model) if params.style_transform else None
    return ModelChoice(sr=choose_model(lake, kind_for_role("upscale").name, model, scale=params.scale), style=style)
