"""Trained models back from the lake: a registry row (or checkpoint key) in, an eval-mode module out.

Kind-agnostic: every trainer stores its exact builder arguments as `metadata["model_kwargs"]`
and its module's weights as `trainer["model"]`, so one function rebuilds any registered model.
Checkpoints load with `weights_only=True` only (see tasks.lake.checkpoints). The training config
comes back as the plain JSON the checkpoint stores (`TrainConfig.model_dump(mode="json")`):
what inference needs of it is data, not a config to validate again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from catalog_enhance.models import get_model, get_spec
from catalog_enhance.tasks.lake.model_registry import latest_version, list_versions
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.lake.checkpoints import load_checkpoint
from catalog_enhance.tasks.runtime import Runtime, select_runtime, to_device


@dataclass
class TrainedModel:
    name: str
    version: str
    kind: str
    module: nn.Module
    config: dict  # the training config as stored: model, preset, seed, model_kwargs, data, ...
    metadata: dict = field(default_factory=dict)
    checkpoint_key: str = ""


def load_trained(lake: Lake, row: dict, runtime: Runtime | None = None) -> TrainedModel:
    """Rebuild the module of one registry row (`name`, `version`, `checkpoint_key`) for inference."""
    state = load_checkpoint(lake, row["checkpoint_key"])
    config = dict(state["config"])
    metadata = state.get("metadata") or {}
    if "model_kwargs" not in metadata:
        raise ValueError(f"{row['version']}: checkpoint metadata has no model_kwargs; cannot rebuild the model")
    module = get_model(config["model"], **metadata["model_kwargs"])
    module.load_state_dict(state["trainer"]["model"])
    module.eval()
    runtime = runtime or select_runtime()
    module = to_device(module, runtime)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return TrainedModel(
        name=config["model"],
        version=row["version"],
        kind=get_spec(config["model"]).kind,
        module=module,
        config=config,
        metadata=metadata,
        checkpoint_key=row["checkpoint_key"],
    )


def find_version(lake: Lake, name_or_version: str) -> dict:
    """A registry row by model name (its latest version) or by exact version string."""
    row = latest_version(lake, name_or_version)
    if row is not None:
        return row
    for candidate in list_versions(lake):
        if candidate["version"] == name_or_version:
            return candidate
    known = sorted({r["name"] for r in list_versions(lake)})
    raise KeyError(f"no registered model or version {name_or_version!r}; models with versions: {known}")

