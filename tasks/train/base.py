"""The trainer interface the training loop drives.

A trainer owns one model family's data, modules, optimisers and one optimisation step; the loop
(`loop.train_model`) owns everything else: resume, logging, checkpoints, the loss curve. Which
trainer trains a model is its kind's (`tasks.kinds`): `trainer_for` asks the plugin.

Hooks of a trainer (a new kind's trainer implements the abstract ones):

    options_class     the pydantic model of `TrainConfig.data` (extra="forbid"); `self.options`
                      is the validated instance
    setup()           read manifests, build data, model, optimisers (and schedulers); set
                      `self.data_manifest_hash` (`lake.manifests.table_fingerprint` of the rows)
    train_step(step)  ONE optimisation step; every random choice from (seed, step)
    state_dict() / load_state_dict(state)   plain data only (checkpoints load weights_only)
    metadata()        stored with the checkpoint and the registry row; holds `model_kwargs`
    final_metrics()   figures computed once after training (the registry's validation metric)
"""

from __future__ import annotations

import abc
from typing import ClassVar

import pydantic

from catalog_enhance.tasks.kinds import kind_of_model
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.config import TrainConfig
from catalog_enhance.tasks.runtime import Runtime


class Trainer(abc.ABC):
    options_class: ClassVar[type[pydantic.BaseModel]]

    def __init__(self, config: TrainConfig, lake: Lake, runtime: Runtime):
        self.config = config
        self.lake = lake
        self.runtime = runtime
        # `config.data` was validated by this class when the config was made; typed here.
        self.options = self.options_class.model_validate(config.data)
        # Set by setup(), e.g. `self.data_manifest_hash = table_fingerprint(rows)`.
        self.data_manifest_hash: str | None = None

    @abc.abstractmethod
    def setup(self) -> None:
        """Read manifests, build data + model + optimisers (+ schedulers)."""

    @abc.abstractmethod
    def train_step(self, step: int) -> dict[str, float]:
        """ONE optimisation step; its batch is chosen from (seed, step) so resume is exact."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Modules, optimisers, schedulers, extras (history buffer, vocabularies): plain data only."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def metadata(self) -> dict:
        """Vocabularies etc., stored with the checkpoint and the registry row (plain data).

        Must hold `model_kwargs`: the exact builder arguments, so `tasks.trained_models` can
        rebuild the trained module for inference without knowing the model's kind.
        """
        return {}

    def final_metrics(self) -> dict[str, float]:
        """Metrics computed once after training (e.g. SR: val PSNR vs bicubic); {} if none."""
        return {}

    def data_fingerprint(self) -> str:
        """Hash of the training manifest rows used (the registry's data_manifest_hash)."""
        if self.data_manifest_hash is None:
            raise RuntimeError(f"{type(self).__name__}: setup() must set data_manifest_hash")
        return self.data_manifest_hash


def trainer_for(config: TrainConfig, lake: Lake, runtime: Runtime) -> Trainer:
    """The trainer of `config.model`'s kind, for this config."""
    return kind_of_model(config.model).trainer(config, lake, runtime)
