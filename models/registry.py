"""Models by name: a decorator registers a builder with its metadata, `get_model` builds one.

Modelled on torchvision's `register_model` / `get_model` / `list_models`: a model is ONE file in
`models/` whose builder carries the decorator, and `models/__init__.py` imports every module of
the package on its own (BasicSR's automatic scan), so nothing else is edited to add a model:

    @register_model("espcn", kind="sr", presets=PRESETS,
                    description="ESPCN-style sub-pixel SR at LR resolution")
    def build_espcn(*, scale: int = 2, channels: int = 1, ...) -> ESPCN:
        return ESPCN(scale, channels=channels, ...)

What registration knows about a model (`ModelSpec`): its kind (the training family; the pipeline
asks the kind's plugin what to do with it), the class the builder returns (from its return
annotation), the builder's keyword arguments, whether the builder takes the data's `scale` and
`channels`, and the training presets (`tiny` | `cpu` | `gpu`) beside the architecture. The class
is checked against its kind's protocol (`models.protocols`) when it is registered, and every
built module again, so a missing attribute is an error naming it, never a `getattr` default.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from torch import nn

from catalog_enhance.models.protocols import check_class, check_instance

PRESET_NAMES: tuple[str, ...] = ("tiny", "cpu", "gpu")

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    kind: str
    build: Callable[..., nn.Module]  # keyword arguments only
    module_class: type[nn.Module]
    description: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # preset -> TrainConfig kwargs
    # Trained when no model list is given (nightly, train-models, the demo); False: opt-in by name.
    default_training: bool = True

    @property
    def parameters(self) -> tuple[str, ...]:
        """The builder's keyword arguments (what `model_kwargs` may set)."""
        return tuple(inspect.signature(self.build).parameters)

    def takes(self, argument: str) -> bool:
        """Whether the builder takes `argument` (an SR net that upsamples inside takes `scale`)."""
        return argument in self.parameters

    @property
    def trainable(self) -> bool:
        """Has training presets: a model `train-models` trains (the FID classifier has none)."""
        return bool(self.presets)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str | None = None, *, kind: str, description: str,
                   presets: Mapping[str, Mapping[str, Any]] | None = None,
                   default_training: bool = True) -> Callable[[Builder], Builder]:
    """Decorator: register the builder under `name` (default: the builder's name without `build_`).

    `default_training=False` keeps a model with presets out of the default training list (the
    nightly and the demo train it only when it is named): for candidates whose `cpu` preset
    would blow the demo's time budget.

    Raises ValueError on a duplicate name, an unknown preset name, a builder with positional
    parameters or without a return annotation, or a class missing its kind's protocol attributes.
    """

    def decorate(build: Builder) -> Builder:
        model = name or build.__name__.removeprefix("build_")
        if model in _REGISTRY:
            raise ValueError(f"model {model!r} is already registered")
        positional = [p.name for p in inspect.signature(build).parameters.values()
                      if p.kind not in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)]
        if positional:
            raise ValueError(f"model {model!r}: the builder must take keyword arguments only, got {positional}")
        try:
            module_class = typing.get_type_hints(build).get("return")
        except NameError as error:
            raise ValueError(f"model {model!r}: the builder's return annotation cannot be resolved ({error})") from None
        if not (isinstance(module_class, type) and issubclass(module_class, nn.Module)):
            raise ValueError(f"model {model!r}: the builder must be annotated to return its nn.Module class")
        unknown = set(presets or {}) - set(PRESET_NAMES)
        if unknown:
            raise ValueError(f"model {model!r}: unknown preset(s) {sorted(unknown)}; known: {', '.join(PRESET_NAMES)}")
        check_class(module_class, kind, model)
        frozen = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in (presets or {}).items()})
        _REGISTRY[model] = ModelSpec(model, kind, build, module_class, description, frozen, default_training)
        return build

    return decorate


def get_spec(name: str) -> ModelSpec:
    """The spec registered as `name`; KeyError naming the known models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name`; an unknown keyword argument is an error listing the
    builder's, and the module is checked against its kind's protocol."""
    spec = get_spec(name)
    unknown = sorted(set(kwargs) - set(spec.parameters))
    if unknown:
        raise TypeError(f"model {name!r} takes no argument(s) {', '.join(unknown)}; "
                        f"its arguments: {', '.join(spec.parameters) or 'none'}")
    module = spec.build(**kwargs)
    check_instance(module, spec.kind, name)
    return module


def list_models(kind: str | None = None, *, trainable: bool | None = None) -> list[str]:
    """Registered names, sorted (optionally of one kind, or only those with training presets)."""
    return sorted(
        name for name, spec in _REGISTRY.items()
        if (kind is None or spec.kind == kind) and (trainable is None or spec.trainable == trainable)
    )
