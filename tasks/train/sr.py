"""Super-resolution training (SRCNN, ESPCN): MSE on aligned patches from the pairs manifest.

Optimiser: Adam. The SRCNN paper used plain SGD with momentum (lr 1e-4, and 1e-5 on the last
layer) for ~10^8 back-propagations; Adam, the common modern choice, reaches the same regime in
thousands of steps, which is what a CPU preset can afford. The learning rate follows a pure
function of the step (linear warmup, then cosine decay or step decay), so it needs no scheduler
state and a resumed run applies exactly the uninterrupted run's rates.

`data` keys (TrainConfig.data): scale (2|3|4), channels (1 = MATLAB BT.601 Y as in the paper,
3 = RGB), lr_patch (LR patch side; the HR patch is lr_patch*scale), hr_patch (optional; when set
it wins: lr_patch = hr_patch // scale, so a model working at HR resolution, SRCNN, costs the same
per step at every scale instead of scale^2 times more), augment (flips/rotations),
lr_schedule ("cosine" | "step" | "constant"), warmup_steps, min_lr_ratio, cache_mb, val_images.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models import build_model, get_spec
from catalog_enhance.tasks.inference.enhancers import bicubic, model_enhancer
from catalog_enhance.tasks.imaging.metrics import psnr_y
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.base import Trainer, register_trainer
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.train.config import register_presets
from catalog_enhance.tasks.imaging.lake_images import DEFAULT_CACHE_MB, LakeImages, fits_in_memory
from catalog_enhance.tasks.lake.manifests import read_pairs
from catalog_enhance.tasks.train.data import SRPairDataset, StepLoader
from catalog_enhance.tasks.runtime import autocast, to_device

SR_DATA_DEFAULTS = {
    "scale": 2,
    "channels": 1,
    "lr_patch": 16,
    "augment": True,
    "lr_schedule": "cosine",
    "warmup_steps": 0,
    "min_lr_ratio": 0.01,
    "cache_mb": DEFAULT_CACHE_MB,
    "val_images": 64,
}


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
             max_images: int | None = None) -> dict[str, float]:
    """Mean PSNR (dB) of the model and of MATLAB bicubic on a split's pairs, paper protocol:
    8-bit outputs, MATLAB BT.601 Y, `scale` pixels shaved per side (`evaluate.sr_metrics.psnr_y`).

    Empty dict when the split has no pairs at this scale. The model is left in train mode.
    """
    rows = read_pairs(lake, split=split, scale=scale).to_pylist()[:max_images]
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


@register_trainer
class SRTrainer(Trainer):
    kind = "sr"

    def setup(self) -> None:
        config = self.config
        self.data_config = data = {**SR_DATA_DEFAULTS, **config.data}
        scale, channels = int(data["scale"]), int(data["channels"])

        rows_table = read_pairs(self.lake, split="train", scale=scale)
        if rows_table.num_rows == 0:
            raise ValueError(f"{config.model}: the pairs manifest has no train pairs at x{scale}")
        self.data_manifest_hash = table_fingerprint(rows_table)
        rows = rows_table.to_pylist()
        pixels = [r["hr_width"] * r["hr_height"] + r["lr_width"] * r["lr_height"] for r in rows]
        images = LakeImages(
            self.lake,
            [key for r in rows for key in (r["hr_key"], r["lr_key"])],
            preload=fits_in_memory(pixels, cache_mb=float(data["cache_mb"])),
        )

        # The model takes the data's channels, and its scale if it upsamples inside (ESPCN).
        kwargs = {"channels": channels, **config.model_kwargs}
        if "scale" in inspect.signature(get_spec(config.model).build).parameters:
            kwargs.setdefault("scale", scale)
        self.model_kwargs = kwargs
        self.model = to_device(build_model(config.model, **kwargs), self.runtime)
        self.model.train()
        self.upscale_input = not getattr(self.model, "upsamples_inside", False)

        dataset = SRPairDataset(
            rows,
            images,
            scale=scale,
            lr_patch=int(data["hr_patch"]) // scale if data.get("hr_patch") else int(data["lr_patch"]),
            channels=channels,
            upscale_input=self.upscale_input,
            augment=bool(data["augment"]),
        )
        self.skipped = dataset.skipped
        self.loader = StepLoader(
            dataset,
            batch_size=config.batch_size,
            seed=config.seed,
            total_steps=config.steps,
            runtime=self.runtime,
            num_workers=data.get("num_workers"),
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)

    def train_step(self, step: int) -> dict[str, float]:
        data = self.data_config
        lr = learning_rate(step, base_lr=self.config.lr, total_steps=self.config.steps,
                           schedule=data["lr_schedule"], warmup_steps=int(data["warmup_steps"]),
                           min_lr_ratio=float(data["min_lr_ratio"]))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        source, target = self.loader.batch(step)
        source, target = to_device(source, self.runtime), to_device(target, self.runtime)
        with autocast(self.runtime):
            output = self.model(source)
        loss = F.mse_loss(output.float(), target)  # the loss in fp32 even under bf16 autocast
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"mse": loss.item()}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def metadata(self) -> dict:
        """How to run the model at inference (the enhancer needs exactly this)."""
        data = self.data_config
        return {
            "model_kwargs": dict(self.model_kwargs),
            "scale": int(data["scale"]),
            "channels": int(data["channels"]),
            "colour": "Y (BT.601, MATLAB rgb2ycbcr)" if int(data["channels"]) == 1 else "RGB",
            "input": "bicubic-upscaled LR (MATLAB imresize)" if self.upscale_input else "LR",
        }

    def final_metrics(self) -> dict[str, float]:
        data = self.data_config
        return validate(self.model, self.lake, scale=int(data["scale"]), channels=int(data["channels"]),
                        max_images=int(data["val_images"]))


# tiny: seconds, for tests. cpu: a couple of minutes each on 2 cores (make demo). gpu: paper-like.
# SRCNN on tiny/cpu predicts the residual over its bicubic input (the option the model offers):
# the paper's direct mapping must first learn to reproduce the input and lags bicubic for
# thousands of steps (measured: -6 dB after 40 steps, +0.9 dB after 1500 cpu steps, where the
# residual form reaches +1.2 dB in 800). The gpu preset keeps the paper's direct mapping.
# SRCNN cpu: a 32 px HR patch at every scale (hr_patch), so x3/x4 cost what x2 costs instead of
# 2.25x/4x more (a 16 px LR patch made the x4 patch 64 px).
# ESPCN cpu: depth 3, mid 64 (the paper's 5-3-3 layout had depth 1, mid 32) and 5000 steps: on
# photos it never trained on, 2000 steps of the paper's layout gained +1.47 dB over bicubic at x2,
# 8000 steps of it +1.70; depth 3 / mid 64 gained +2.00 after 4000 steps and +2.09 after 6000,
# +1.19 at x4 after 4000 (bench/NOTES.md). ~40 ms a step on 2 cores: 3-4 min per scale.
register_presets(
    "srcnn",
    {
        "tiny": {"steps": 100, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 50, "log_every": 10,
                 "model_kwargs": {"variant": "955", "residual": True},
                 "data": {"lr_patch": 12, "augment": False, "warmup_steps": 10}},
        "cpu": {"steps": 1000, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 250, "log_every": 50,
                "model_kwargs": {"variant": "955", "residual": True},
                "data": {"hr_patch": 32, "warmup_steps": 50}},
        "gpu": {"steps": 200_000, "batch_size": 128, "lr": 1e-4, "checkpoint_every": 5000, "log_every": 500,
                "model_kwargs": {"variant": "955", "residual": False},
                "data": {"lr_patch": 17, "warmup_steps": 1000}},
    },
)
register_presets(
    "espcn",
    {
        "tiny": {"steps": 100, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 50, "log_every": 10,
                 "data": {"lr_patch": 12, "augment": False, "warmup_steps": 10}},
        "cpu": {"steps": 5000, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 500, "log_every": 50,
                "model_kwargs": {"depth": 3, "mid": 64},
                "data": {"lr_patch": 24, "warmup_steps": 50}},
        "gpu": {"steps": 200_000, "batch_size": 128, "lr": 3e-4, "checkpoint_every": 5000, "log_every": 500,
                "data": {"lr_patch": 32, "warmup_steps": 1000}},
    },
)
