"""Super-resolution training (SRCNN, ESPCN, EDSR, RLFN): MSE or L1 on aligned patches from the
pairs manifest.

Optimiser: Adam. The SRCNN paper used plain SGD with momentum (lr 1e-4, and 1e-5 on the last
layer) for ~10^8 back-propagations; Adam, the common modern choice, reaches the same regime in
thousands of steps, which is what a CPU preset can afford. The learning rate follows a pure
function of the step (linear warmup, then cosine decay or step decay), so it needs no scheduler
state and a resumed run applies exactly the uninterrupted run's rates.

`TrainConfig.data` is `SROptions` (typed, unknown keys refused).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, cast

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models import get_model, get_spec
from catalog_enhance.models.protocols import SRNetwork
from catalog_enhance.tasks.catalog.labels import CatalogDataError
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.imaging.degradation_config import degradation_json
from catalog_enhance.tasks.imaging.lake_images import DEFAULT_CACHE_MB, LakeImages, fits_in_memory
from catalog_enhance.tasks.imaging.metrics import psnr_y
from catalog_enhance.tasks.inference.enhancers import bicubic, model_enhancer
from catalog_enhance.tasks.lake.manifests import read_pairs, table_fingerprint
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.runtime import autocast, to_device
from catalog_enhance.tasks.train.base import Trainer
from catalog_enhance.tasks.train.data import SRPairDataset, StepLoader


class SROptions(pydantic.BaseModel):
    """`TrainConfig.data` of the super-resolution trainer."""

    model_config = pydantic.ConfigDict(extra="forbid")
    # Options added after runs existed: left out of the config hash at these values, so a run made
    # before the option existed still resumes (`TrainConfig.config_hash`).
    hash_neutral: ClassVar[dict[str, Any]] = {"loss": "mse"}

    scale: Literal[2, 3, 4] = 2
    channels: Literal[1, 3] = 1  # 1 = MATLAB BT.601 Y as in the paper, 3 = RGB
    lr_patch: int = pydantic.Field(16, gt=0)  # LR patch side; the HR patch is lr_patch * scale
    # When set it wins: lr_patch = hr_patch // scale, so a model working at HR resolution (SRCNN)
    # costs the same per step at every scale instead of scale^2 times more.
    hr_patch: int | None = pydantic.Field(None, gt=0)
    augment: bool = True  # the 8 flips/rotations
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_steps: int = pydantic.Field(0, ge=0)
    min_lr_ratio: float = pydantic.Field(0.01, ge=0.0, le=1.0)
    cache_mb: float = pydantic.Field(DEFAULT_CACHE_MB, ge=0)  # preload the pairs' pixels up to this size
    val_images: int = pydantic.Field(64, ge=0)  # validation pairs scored after training
    num_workers: int | None = pydantic.Field(None, ge=0)  # DataLoader workers; None: 2 on CUDA, 0 on CPU
    # mse: the PSNR objective itself (SRCNN, ESPCN); l1: what EDSR and the efficient-SR designs
    # train with (sharper, more robust to outliers, and better PSNR in short runs).
    loss: Literal["mse", "l1"] = "mse"

    @property
    def patch(self) -> int:
        """The LR patch side actually trained on."""
        return self.hr_patch // self.scale if self.hr_patch else self.lr_patch


def learning_rate(step: int, *, base_lr: float, total_steps: int, schedule: str, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.01) -> float:
    """The learning rate of `step` (0-based): linear warmup, then cosine / step decay / constant."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return base_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if schedule == "step":  # x0.1 at 60% and again at 85% of training
        return base_lr * (0.1 ** ((progress >= 0.6) + (progress >= 0.85)))
    raise ValueError(f"unknown lr_schedule {schedule!r} (cosine, step or constant)")


@torch.no_grad()
def validate(model: nn.Module, lake: Lake, *, scale: int, channels: int, split: str = "val",
             max_images: int | None = None, degradation: str = "bicubic") -> dict[str, float]:
    """Mean PSNR (dB) of the model and of MATLAB bicubic on a split's pairs of one named
    `degradation`, paper protocol: 8-bit outputs, MATLAB BT.601 Y, `scale` pixels shaved per side
    (`evaluate.sr_metrics.psnr_y`).

    Empty dict when the split has no pairs at this scale. The model is left in train mode.
    """
    rows = read_pairs(lake, split=split, scale=scale,
                      degradation=degradation_json(degradation)).to_pylist()[:max_images]
    if not rows:
        return {}
    enhance = model_enhancer(model, scale, channels)
    model_psnr, bicubic_psnr = [], []
    try:
        for row in rows:
            hr = load_rgb(lake.read_bytes(row["hr_key"]))
            lr = load_rgb(lake.read_bytes(row["lr_key"])).astype(np.float64) / 255.0
            model_psnr.append(psnr_y(enhance(lr, scale), hr, border=scale))
            bicubic_psnr.append(psnr_y(bicubic(lr, scale), hr, border=scale))
    finally:
        model.train()
    psnr, base = float(np.mean(model_psnr)), float(np.mean(bicubic_psnr))
    return {
        f"{split}_psnr": psnr,
        f"{split}_psnr_bicubic": base,
        f"{split}_psnr_gain": psnr - base,
        f"{split}_images": float(len(rows)),
    }


LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


class SRTrainer(Trainer):
    """MSE or L1 on aligned (input, target) patches of the pairs manifest; see the module docstring."""

    options_class = SROptions
    options: SROptions
    model: nn.Module  # an SRNetwork (its kind's protocol, checked when it is built)

    @property
    def degradation(self) -> str:
        """The named degradation of the pairs trained on: MATLAB bicubic alone, the papers' protocol
        (the restoration trainer trains on realistic degradations instead)."""
        return "bicubic"

    def setup(self) -> None:
        config, options = self.config, self.options
        scale, channels = options.scale, options.channels

        rows_table = read_pairs(self.lake, split="train", scale=scale, degradation=degradation_json(self.degradation))
        if rows_table.num_rows == 0:
            raise CatalogDataError(f"the pairs manifest has no train pairs at x{scale} with the "
                                   f"{self.degradation} degradation (catalog-enhance pairs --degradation {self.degradation})")
        self.data_manifest_hash = table_fingerprint(rows_table)
        rows = rows_table.to_pylist()
        pixels = [r["hr_width"] * r["hr_height"] + r["lr_width"] * r["lr_height"] for r in rows]
        images = LakeImages(
            self.lake,
            [key for r in rows for key in (r["hr_key"], r["lr_key"])],
            preload=fits_in_memory(pixels, cache_mb=options.cache_mb),
        )

        # The model takes the data's channels, and its scale if it upsamples inside (ESPCN).
        kwargs = {"channels": channels, **config.model_kwargs}
        if get_spec(config.model).takes("scale"):
            kwargs.setdefault("scale", scale)
        self.model_kwargs = kwargs
        self.model = to_device(get_model(config.model, **kwargs), self.runtime)
        self.model.train()
        self.upscale_input = not cast(SRNetwork, self.model).upsamples_inside

        dataset = SRPairDataset(
            rows,
            images,
            scale=scale,
            lr_patch=options.patch,
            channels=channels,
            upscale_input=self.upscale_input,
            augment=options.augment,
        )
        self.skipped = dataset.skipped
        self.loader = StepLoader(
            dataset,
            batch_size=config.batch_size,
            seed=config.seed,
            total_steps=config.steps,
            runtime=self.runtime,
            num_workers=options.num_workers,
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)

    def train_step(self, step: int) -> dict[str, float]:
        options = self.options
        lr = learning_rate(step, base_lr=self.config.lr, total_steps=self.config.steps,
                           schedule=options.lr_schedule, warmup_steps=options.warmup_steps,
                           min_lr_ratio=options.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        source, target = self.loader.batch(step)
        source, target = to_device(source, self.runtime), to_device(target, self.runtime)
        with autocast(self.runtime):
            output = self.model(source)
        loss = LOSSES[options.loss](output.float(), target)  # in fp32 even under bf16 autocast
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {options.loss: loss.item()}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def metadata(self) -> dict:
        """How to run the model at inference (the enhancer needs exactly this)."""
        options = self.options
        return {
            "model_kwargs": dict(self.model_kwargs),
            "scale": options.scale,
            "channels": options.channels,
            "colour": "Y (BT.601, MATLAB rgb2ycbcr)" if options.channels == 1 else "RGB",
            "input": "bicubic-upscaled LR (MATLAB imresize)" if self.upscale_input else "LR",
        }

    def final_metrics(self) -> dict[str, float]:
        options = self.options
        return validate(self.model, self.lake, scale=options.scale, channels=options.channels,
                        max_images=options.val_images, degradation=self.degradation)
