"""Choosing the models of a run, as registry references (`ModelRef`) tasks can receive.

Which model: the SR champion recorded by the evaluation gate (`current_champion(lake, "sr")`), or
the model or version a caller names. Nothing else: until the gate has promoted a version there is
no default, `NoChampion` says so (a version the gate refused, or never judged, is never picked
behind the caller's back). The optional studio transform is the CycleGAN champion (same rules),
whose X->Y generator runs on the super-resolved RGB (alpha passes through) of the catalog
images in the model's domain X (its `domain_x` filter, `style=lifestyle` by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from catalog_enhance.tasks.enhance.params import EnhanceParams
from catalog_enhance.tasks.inference.trained import find_version
from catalog_enhance.tasks.kinds import kind_for_role
from catalog_enhance.tasks.lake.champions import current_champion
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake

CHAMPION_SOURCES = ("gate", "requested")


class NoChampion(LookupError):
    """No version of a kind was promoted by the gate (at the asked scale) and none was named."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # crosses processes (Prefect results, Dask) with its kind
        return type(self), (str(self), self.kind)


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
    champion; `NoChampion` when the gate has promoted none (the message names the registered
    models the caller could name instead).

    `scale` (upscaling models): the champion must be a model of that factor, so that promoting
    a x3 or x4 version never makes a x2 night use it (a requested version is taken as asked and
    checked later, by `check_models`).
    """
    if requested:
        row = find_version(lake, requested)
        if row["kind"] != kind:
            raise ValueError(f"{requested!r} is a {row['kind']} model ({row['version']}), not a {kind} model")
        return ChosenModel(ModelRef.from_row(row), "requested", f"{row['version']} was asked for")

    champion = current_champion(lake, kind)
    if champion is not None:
        row = _registry_row(lake, champion.version)
        if scale is None or _row_scale(row) == scale:
            return ChosenModel(ModelRef.from_row(row), "gate",
                               f"champion since {champion.promoted_at:%Y-%m-%d %H:%M} UTC: {champion.reason}")
    raise NoChampion(no_champion_message(lake, kind, scale, champion.version if champion else None), kind)


def no_champion_message(lake: Lake, kind: str, scale: int | None, champion: str | None = None) -> str:
    """One line: why there is no model to use, and what to do about it."""
    wanted = f"x{scale} {kind}" if scale is not None else kind
    names = sorted({r["name"] for r in list_versions(lake) if r["kind"] == kind
                    and (scale is None or _row_scale(r) == scale)})
    why = (f"the {kind} champion {champion} is not a x{scale} model" if champion else
           "the evaluation gate has promoted no version (catalog-enhance evaluate)")
    option = "style_model=" if kind == kind_for_role("style").name else "--model"
    hint = (f"name a model with {option}{'' if option.endswith('=') else ' '}{names[0]} "
            f"(registered: {', '.join(names)})" if names else
            "no such model is registered either: train one first (catalog-enhance train)")
    return f"no gated champion for {wanted} in {lake.root_uri}: {why}; {hint}"


def choose_models(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                  style_model: str | None = None) -> ModelChoice:
    """The models of the enhancement roles (`tasks.kinds`): the mode's kind's (fidelity: the
    upscaling kind; restore: the restoration kind), at the asked scale, and the style kind's when
    the studio transform is asked for."""
    style = choose_model(lake, kind_for_role("style").name, style_model) if params.style_transform else None
    return ModelChoice(sr=choose_model(lake, kind_for_role(params.role).name, model, scale=params.scale), style=style)
