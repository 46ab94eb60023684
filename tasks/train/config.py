"""Typed training configuration: a model's preset plus overrides, validated before any run starts.

A `TrainConfig` is stored in every checkpoint and registry row; its hash names the run, so the
same config resumes the same run automatically. Its two free-form-looking parts are typed too:
`model_kwargs` must be arguments of the model's builder (`models.get_spec(model).parameters`),
and `data` is validated by the options class of the model's kind's trainer (pydantic,
`extra="forbid"`) and stored with every default filled in, so an unknown or mistyped key is one
error naming it (and the valid ones) before anything runs, and the config hash covers exactly
the options the run uses. Presets live beside each model (`@register_model(presets=...)`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from catalog_enhance.models import get_spec
from catalog_enhance.models.registry import PRESET_NAMES
from catalog_enhance.tasks.catalog.domains import LabelDomains
from catalog_enhance.tasks.kinds import kind_of_model, trainable_models

# Fields that change how a run is reported, not what it computes: left out of the hash so that
# e.g. logging more often still resumes the same run.
_NOT_HASHED = frozenset({"checkpoint_every", "log_every"})


class ConfigError(ValueError):
    """A training config that cannot run: one line naming the model, the key and the reason."""


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
    model_kwargs: dict[str, Any] = {}  # arguments of the model's builder
    data: dict[str, Any] = {}  # the options of the kind's trainer, every default filled in

    @pydantic.model_validator(mode="after")
    def _typed_parts(self) -> "TrainConfig":
        spec = get_spec(self.model)
        unknown = sorted(set(self.model_kwargs) - set(spec.parameters))
        if unknown:
            raise ValueError(f"unknown model_kwargs {', '.join(unknown)} (the {self.model} builder takes: "
                             f"{', '.join(spec.parameters)})")
        options = kind_of_model(self.model).trainer.options_class
        unknown = sorted(set(self.data) - set(options.model_fields))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join('data.' + k for k in unknown)} (valid data options: "
                             f"{', '.join(sorted(options.model_fields))})")
        try:
            self.data = options.model_validate(self.data).model_dump(mode="json")
        except pydantic.ValidationError as error:
            raise ValueError("; ".join(f"data.{_problem(e)}" for e in error.errors())) from None
        return self

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of everything that shapes the weights, 12 hex."""
        payload = self.model_dump(mode="json", exclude=set(_NOT_HASHED))
        neutral = getattr(kind_of_model(self.model).trainer.options_class, "hash_neutral", {})
        payload["data"] = {k: v for k, v in payload["data"].items() if not (k in neutral and v == neutral[k])}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _apply_override(values: dict, key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if rest:  # dotted: data.scale, model_kwargs.variant
        if head not in ("data", "model_kwargs"):
            raise ConfigError(f"override {key!r}: only data.* and model_kwargs.* keys may be dotted")
        section = values.setdefault(head, {})
        *parents, leaf = rest.split(".")
        for parent in parents:
            section = section.setdefault(parent, {})
        section[leaf] = value
    elif head in ("data", "model_kwargs") and isinstance(value, dict):
        values.setdefault(head, {}).update(value)  # merge into the preset, do not replace it
    else:
        values[head] = value


def make_config(model: str, preset: str, **overrides: Any) -> TrainConfig:
    """The preset's config with overrides (steps, lr, batch_size, seed, data.scale=..., ...),
    validated; `ConfigError` (one line) for an unknown model, preset, key or a bad value.

    Overrides whose value is None are ignored, so flow/CLI parameters can default to None.
    Dotted keys arrive through `**{"data.scale": 3}`.
    """
    try:
        presets = get_spec(model).presets
    except KeyError as error:
        raise ConfigError(str(error.args[0])) from None
    if not presets:
        raise ConfigError(f"model {model!r} has no training presets (it is not trained by train-models)")
    if preset not in presets:
        raise ConfigError(f"model {model!r} has no preset {preset!r}; known: {', '.join(p for p in PRESET_NAMES if p in presets)}")
    values = copy.deepcopy({k: (dict(v) if isinstance(v, dict) or hasattr(v, "items") else v)
                            for k, v in presets[preset].items()})
    values.update(model=model, preset=preset)
    for key, value in overrides.items():
        if value is not None:
            _apply_override(values, key, value)
    try:
        return TrainConfig(**values)
    except pydantic.ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        raise ConfigError(f"invalid training config for {model}/{preset}: {problems}") from None


def _problem(error: Any) -> str:
    where = ".".join(map(str, error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def overrides_for(model: str, models: Sequence[str], steps: int | None, overrides: Mapping[str, Any] | None) -> dict:
    """Shared overrides apply to every model; a key naming a model holds that model's own."""
    shared = {k: v for k, v in (overrides or {}).items() if k not in models}
    own = (overrides or {}).get(model) or {}
    return {**shared, **own, **({"steps": steps} if steps is not None else {})}


def label_overrides(model: str, preset: str, domains: LabelDomains, gan_filters: str | None = None) -> dict[str, Any]:
    """The catalog's label configuration as overrides of `model`'s preset (the lowest layer above
    it: explicit overrides win). A CycleGAN's domains are `domains` x and y; a GAN preset that
    filters its images filters them by `gan_filters` (unset: domain y; empty: every image).
    With the default settings these are the presets' own values, so config hashes do not move."""
    options = kind_of_model(model).trainer.options_class
    configured = getattr(options, "label_configured", ())
    preset_data = (get_spec(model).presets.get(preset) or {}).get("data") or {}
    overrides: dict[str, Any] = {}
    if "domains" in configured:
        overrides.update({"data.domain_x": domains.x_filter, "data.domain_y": domains.y_filter})
    if "filters" in configured and preset_data.get("filters"):
        # [] (no filter) rather than None: make_config ignores None overrides.
        overrides["data.filters"] = domains.y_filter if gan_filters is None else (gan_filters or [])
    return overrides


def validate_training(models: Sequence[str], preset: str, steps: int | None = None,
                      overrides: Mapping[str, Any] | None = None) -> list[TrainConfig]:
    """Every model's config, validated before any training starts: a model without presets, a
    preset, an option or a value that cannot run is one `ConfigError` naming it."""
    trainable = trainable_models()
    unknown = [m for m in models if m not in trainable]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; trainable: {', '.join(trainable)}")
    return [make_config(model, preset, **overrides_for(model, models, steps, overrides)) for model in models]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """CLI `key=value` pairs -> overrides for make_config; values are read as JSON when they parse
    (`steps=500`, `lr=1e-3`, `data.augment=false`, `data={"scale": 3}`), else kept as strings."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides[key.strip()] = value
    return overrides
