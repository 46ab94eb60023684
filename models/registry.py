"""Name -> architecture registry.

Each architecture module calls :func:`register` once at import time, and
``models/__init__.py`` imports every architecture module, so adding a model is
one file, one ``register(...)`` call and one import line; nothing else in the
code base switches on model names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

#: The training families; the trainer picks its loop by ``ModelSpec.kind``. "classifier" is the
#: evaluation's own feature extractor (trained by tasks.evaluate.feature_extractor, never gated).
MODEL_KINDS: tuple[str, ...] = ("sr", "gan", "cgan", "cyclegan", "classifier")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str  # registry key
    kind: str  # one of MODEL_KINDS
    build: Callable[..., nn.Module]  # builder taking keyword args only
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` under ``spec.name``; raises ``ValueError`` on a duplicate name or unknown kind."""
    if spec.kind not in MODEL_KINDS:
        raise ValueError(
            f"model {spec.name!r}: unknown kind {spec.kind!r} (expected one of {', '.join(MODEL_KINDS)})"
        )
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; ``KeyError`` naming the known models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with its builder's keyword arguments."""
    return get_spec(name).build(**kwargs)


def model_names(kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally only those of one ``kind``."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r} (expected one of {', '.join(MODEL_KINDS)})")
    return sorted(name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind)
