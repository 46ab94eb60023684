"""Restoration training: the super-resolution trainer on realistic degradations.

A shop's supplier photos are small and also JPEG-compressed, noisy and soft; a model trained on
clean bicubic pairs sharpens those artifacts. A restoration model sees, in training, inputs made
by Real-ESRGAN's second-order degradation (`NAMED_DEGRADATIONS["realistic"]`: blur, random
resize, Gaussian/Poisson noise, JPEG, twice, then sinc and JPEG), made once and seeded by the
pairs stage (`catalog-enhance pairs --degradation realistic`), so a run is reproducible and every
model is judged on the same held-out pairs. Same loss and schedule as `SRTrainer`; RGB by default,
because colour noise and JPEG's chroma blocks live outside the luma channel a Y model restores.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from catalog_enhance.tasks.train.sr import SROptions, SRTrainer


class RestoreOptions(SROptions):
    """`TrainConfig.data` of the restoration trainer: the SR options, a degradation and x1."""

    model_config = pydantic.ConfigDict(extra="forbid")

    # 1: same size (de-JPEG, denoise, deblur, for images big enough but bad); 2, 4: restore and upscale.
    scale: Literal[1, 2, 3, 4] = 2  # type: ignore[assignment]
    channels: Literal[1, 3] = 3
    degradation: Literal["light", "realistic"] = "realistic"


class RestoreTrainer(SRTrainer):
    options_class = RestoreOptions
    options: RestoreOptions

    @property
    def degradation(self) -> str:
        return self.options.degradation

    def metadata(self) -> dict:
        return {**super().metadata(), "degradation": self.options.degradation}
