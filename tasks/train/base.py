"""The trainer interface the training loop drives, and the kind -> trainer registry.

A trainer owns one model family's data, modules, optimisers and one optimisation step; the loop
(`loop.train_model`) owns everything else: resume, logging, checkpoints, the loss curve.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from catalog_enhance.models.registry import get_spec
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.config import TrainConfig
from catalog_enhance.tasks.runtime import Runtime


class Trainer(abc.ABC):
    kind: ClassVar[str]  # "sr" | "gan" | "cgan" | "cyclegan"

    def __init__(self, config: TrainConfig, lake: Lake, runtime: Runtime):
        self.config = config
        self.lake = lake
        self.runtime = runtime
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


TRAINERS: dict[str, type[Trainer]] = {}


def register_trainer(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: TRAINERS[cls.kind] = cls."""
    kind = getattr(cls, "kind", None)
    if not kind:
        raise ValueError(f"{cls.__name__} declares no `kind`")
    if kind in TRAINERS and TRAINERS[kind] is not cls:
        raise ValueError(f"a trainer for kind {kind!r} is already registered: {TRAINERS[kind].__name__}")
    TRAINERS[kind] = cls
    return cls


def trainer_for(config: TrainConfig, lake: Lake, runtime: Runtime) -> Trainer:
    kind = get_spec(config.model).kind
    try:
        cls = TRAINERS[kind]
    except KeyError:
        known = ", ".join(sorted(TRAINERS)) or "(none)"
        raise KeyError(f"model {config.model!r}: no trainer for kind {kind!r}; known kinds: {known}") from None
    return cls(config, lake, runtime)
