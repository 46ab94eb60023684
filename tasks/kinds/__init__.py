"""Model kinds as plugins: `get_kind("sr")` is everything the pipeline knows about super-resolution.

The contract and its hooks: `tasks/kinds/base.py`. Every module of this package but `base` (and
names starting with `_`) is a plugin module, imported the first time a kind is looked up, so a
new kind is one module here plus its trainer, with no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from catalog_enhance.models import get_spec, list_models
from catalog_enhance.tasks.kinds.base import (
    EnhancementRole,
    EvaluationContext,
    KindEvaluation,
    ModelKind,
    PrimaryMetric,
    register_kind,
    registered,
)

_LOAD_LOCK = threading.RLock()
_loaded = False


def _load_plugins() -> dict[str, ModelKind]:
    global _loaded
    with _LOAD_LOCK:
        if not _loaded:
            for module in pkgutil.iter_modules(__path__):
                if module.name != "base" and not module.name.startswith("_"):
                    importlib.import_module(f"{__name__}.{module.name}")
            _loaded = True
    return registered()


def get_kind(name: str) -> ModelKind:
    """The plugin of kind `name`; KeyError naming the known kinds otherwise."""
    kinds = _load_plugins()
    try:
        return kinds[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r}; known kinds: {', '.join(kind_names())}") from None


def list_kinds() -> list[ModelKind]:
    """Every kind, in its `order`."""
    return sorted(_load_plugins().values(), key=lambda kind: (kind.order, kind.name))


def kind_names() -> list[str]:
    return [kind.name for kind in list_kinds()]


def kind_of_model(model: str) -> ModelKind:
    """The plugin of the kind a registered model belongs to."""
    return get_kind(get_spec(model).kind)


def kind_for_role(role: EnhancementRole) -> ModelKind:
    """The kind enhancement uses for `role` ("upscale" or "style"); exactly one has each role."""
    kinds = [kind for kind in list_kinds() if kind.enhancement_role == role]
    if len(kinds) != 1:
        raise LookupError(f"{len(kinds)} model kinds declare the enhancement role {role!r}; exactly one must")
    return kinds[0]


def trainable_models() -> list[str]:
    """Every registered model with training presets, of a kind that has a plugin, in the kinds'
    order: what `train-models` and the nightly accept."""
    order = {kind.name: index for index, kind in enumerate(list_kinds())}
    names = [name for name in list_models(trainable=True) if get_spec(name).kind in order]
    return sorted(names, key=lambda name: (order[get_spec(name).kind], name))


def default_models() -> list[str]:
    """The trainable models trained when none are named (`train-models`, the nightly, the demo):
    all but those registered with `default_training=False`, which are trained only by name."""
    return [name for name in trainable_models() if get_spec(name).default_training]


__all__ = [
    "EnhancementRole", "EvaluationContext", "KindEvaluation", "ModelKind", "PrimaryMetric", "default_models", "get_kind",
    "kind_for_role", "kind_names", "kind_of_model", "list_kinds", "register_kind", "trainable_models",
]
