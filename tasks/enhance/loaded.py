"""Loaded models: per-process, read-only modules, cached by checkpoint (`load_model`), and the
checks that they can do what the parameters ask (`check_models`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import torch

from catalog_enhance.models.protocols import Translator
from catalog_enhance.tasks.catalog.labels import parse_filters
from catalog_enhance.tasks.enhance.choice import ModelChoice, ModelRef, choose_models
from catalog_enhance.tasks.enhance.params import EnhanceParams, inference_runtime
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained
from catalog_enhance.tasks.kinds import kind_for_role
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.runtime import Runtime, select_runtime


@dataclass(frozen=True)
class EnhancementModels:
    """Modules in eval mode on their device; shared by every thread, never mutated."""

    sr: TrainedModel
    style: TrainedModel | None = None

    @property
    def scale(self) -> int:
        return int(self.sr.metadata["scale"])

    @property
    def channels(self) -> int:
        return int(self.sr.metadata["channels"])

    @property
    def generator(self) -> torch.nn.Module:
        """The CycleGAN's X -> Y generator (lifestyle -> studio by default)."""
        if self.style is None:
            raise ValueError("no style model loaded")
        return cast(Translator, self.style.module).G_XY  # the style kind's protocol

    @property
    def style_domain(self) -> str | list[str] | None:
        """The label filter of the images the transform is for (the model's domain X)."""
        return None if self.style is None else self.style.metadata.get("domain_x", "style=lifestyle")


_MODEL_CACHE: OrderedDict[tuple, TrainedModel] = OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()
_MODEL_CACHE_SIZE = 4  # a champion and a style model, plus room for a new champion mid-life


def load_model(lake: Lake, ref: ModelRef, runtime: Runtime) -> TrainedModel:
    """Load a registered version for inference once per process (thread-safe), then reuse it.

    Keyed by lake, checkpoint and device: a Dask worker or a thread pool loads each model once;
    a different version or lake is a different entry. The lock is held while loading so two
    threads never load the same checkpoint twice.
    """
    runtime = inference_runtime(runtime)
    key = (lake.root_uri, ref.checkpoint_key, ref.version, str(runtime.device), runtime.channels_last)
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = load_trained(lake, {"version": ref.version, "checkpoint_key": ref.checkpoint_key}, runtime)
            _MODEL_CACHE[key] = model
            while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
        _MODEL_CACHE.move_to_end(key)
        return model


def load_models(lake: Lake, choice: ModelChoice, runtime: Runtime) -> EnhancementModels:
    style = load_model(lake, choice.style.ref, runtime) if choice.style is not None else None
    return EnhancementModels(sr=load_model(lake, choice.sr.ref, runtime), style=style)


def check_models(models: EnhancementModels, params: EnhanceParams) -> None:
    """Refuse, before any image is read, a model that cannot do what the parameters ask."""
    wanted, style = kind_for_role(params.role).name, kind_for_role("style").name
    if models.sr.kind != wanted:
        raise ValueError(f"{models.sr.version} is a {models.sr.kind} model; the {params.mode} mode runs "
                         f"{wanted} models")
    if params.scale is not None and params.scale != models.scale:
        raise ValueError(
            f"{models.sr.version} is a x{models.scale} model but scale={params.scale} was asked for: use "
            f"scale={models.scale}, a target long side, or a x{params.scale} model (model=<name or version>)"
        )
    if params.style_transform:
        if models.style is None or models.style.kind != style:
            raise ValueError(f"the studio transform needs a {style} model")
        parse_filters(models.style_domain)  # a malformed domain fails here, not per image


def load_for_params(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                    style_model: str | None = None, runtime: Runtime | None = None
                    ) -> tuple[ModelChoice, EnhancementModels]:
    """Choose, load and check the models for `params` (what a run and an ad-hoc call both need)."""
    choice = choose_models(lake, params, model=model, style_model=style_model)
    models = load_models(lake, choice, runtime or select_runtime())
    check_models(models, params)
    return choice, models
