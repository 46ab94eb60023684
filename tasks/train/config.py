"""Typed training configuration and the per-model presets (tiny | cpu | gpu).

A `TrainConfig` is stored in every checkpoint and registry row; its hash names the run, so the
same config resumes the same run automatically. Trainer modules add their presets with
`register_presets(model, {...})`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pydantic

PRESET_NAMES = ("tiny", "cpu", "gpu")
# Fields that change how a run is reported, not what it computes: left out of the hash so that
# e.g. logging more often still resumes the same run.
_NOT_HASHED = frozenset({"checkpoint_every", "log_every"})


class TrainConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", protected_namespaces=())

    model: str  # registry name
    preset: str  # tiny | cpu | gpu
    steps: int = pydantic.Field(gt=0)
    batch_size: int = pydantic.Field(gt=0)
    lr: float = pydantic.Field(gt=0)
    seed: int = 0
    checkpoint_every: int = pydantic.Field(default=100, gt=0)
    log_every: int = pydantic.Field(default=10, gt=0)
    model_kwargs: dict = {}  # passed to build_model
    data: dict = {}  # model-kind specific (scale, patch size, label columns, domains, image_size...)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of everything that shapes the weights, 12 hex."""
        payload = self.model_dump(mode="json", exclude=set(_NOT_HASHED))
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


PRESETS: dict[str, dict[str, dict]] = {}


def register_presets(model: str, presets: dict[str, dict]) -> None:
    """Add (or replace) the tiny/cpu/gpu presets of `model`; each is TrainConfig kwargs."""
    unknown = set(presets) - set(PRESET_NAMES)
    if unknown:
        raise ValueError(f"model {model!r}: unknown preset(s) {sorted(unknown)}; known: {PRESET_NAMES}")
    PRESETS[model] = {name: copy.deepcopy(kwargs) for name, kwargs in presets.items()}


def _apply_override(values: dict, key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if rest:  # dotted: data.scale, model_kwargs.variant
        if head not in ("data", "model_kwargs"):
            raise ValueError(f"override {key!r}: only data.* and model_kwargs.* keys may be dotted")
        section = values.setdefault(head, {})
        *parents, leaf = rest.split(".")
        for parent in parents:
            section = section.setdefault(parent, {})
        section[leaf] = value
    elif head in ("data", "model_kwargs") and isinstance(value, dict):
        values.setdefault(head, {}).update(value)  # merge into the preset, do not replace it
    else:
        values[head] = value


def make_config(model: str, preset: str, **overrides) -> TrainConfig:
    """The preset's config with overrides (steps, lr, batch_size, seed, data.scale=..., ...).

    Overrides whose value is None are ignored, so flow/CLI parameters can default to None.
    Dotted keys arrive through `**{"data.scale": 3}`.
    """
    if model not in PRESETS:
        raise KeyError(f"no presets for model {model!r}; known: {', '.join(sorted(PRESETS)) or '(none)'}")
    if preset not in PRESETS[model]:
        raise KeyError(f"model {model!r} has no preset {preset!r}; known: {', '.join(PRESETS[model])}")
    values = copy.deepcopy(PRESETS[model][preset])
    values.update(model=model, preset=preset)
    for key, value in overrides.items():
        if value is not None:
            _apply_override(values, key, value)
    try:
        return TrainConfig(**values)
    except pydantic.ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"invalid training config for {model}/{preset}: {problems}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """CLI `key=value` pairs -> overrides for make_config; values are read as JSON when they parse
    (`steps=500`, `lr=1e-3`, `data.augment=false`, `data={"scale": 3}`), else kept as strings."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides[key.strip()] = value
    return overrides
