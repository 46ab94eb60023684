"""RLFN: residual local feature network (Kong et al., "Residual Local Feature Network for Efficient
Super-Resolution", CVPRW 2022, winner of NTIRE 2022 efficient SR's runtime track), with residual
learning over bicubic.

Each block (RLFB): three 3x3 conv + LeakyReLU(0.05) with a local skip, a 1x1 conv, then enhanced
spatial attention (ESA, from RFDN): a 1x1 squeeze to `esa_channels`, a stride-2 conv, a 7x7/3
max-pool, a conv, bilinear upsampling back and a sigmoid mask on the block's features. The head
conv's features are added back before the sub-pixel tail (`_subpixel.SubPixelResidualSR`,
zero-initialised: the model starts as bicubic). RLFN-S is features 48, blocks 6, esa_channels 16.

`macs_per_output_pixel` counts ESA's strided conv at 1/4 and its post-pool conv at 1/36 of the LR
pixels (`resolution_divisor`), their nominal rates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models._subpixel import SubPixelResidualSR, same_conv
from catalog_enhance.models.registry import register_model


class ESA(nn.Module):
    """Enhanced spatial attention: x * sigmoid(mask(x)), the mask computed at low resolution."""

    def __init__(self, features: int, esa_channels: int) -> None:
        super().__init__()
        f = esa_channels
        self.squeeze = nn.Conv2d(features, f, 1)
        self.skip = nn.Conv2d(f, f, 1)
        self.down = nn.Conv2d(f, f, 3, stride=2)
        self.pooled = same_conv(f, f)
        self.expand = nn.Conv2d(f, features, 1)
        setattr(self.down, "resolution_divisor", 4)
        setattr(self.pooled, "resolution_divisor", 36)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        down = self.down(squeezed)
        pooled = F.max_pool2d(down, kernel_size=min(7, *down.shape[-2:]), stride=3)
        coarse = F.interpolate(self.pooled(pooled), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.expand(coarse + self.skip(squeezed)))


class RLFB(nn.Module):
    def __init__(self, features: int, esa_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*(m for _ in range(3) for m in (same_conv(features, features), nn.LeakyReLU(0.05))))
        self.fuse = nn.Conv2d(features, features, 1)
        self.esa = ESA(features, esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.fuse(x + self.convs(x)))


class RLFN(SubPixelResidualSR):
    """LR (N, C, h, w) -> (N, C, h*scale, w*scale); see the module docstring. Inputs need
    h, w >= 3 (ESA's stride-2 conv)."""

    def __init__(self, scale: int, channels: int = 1, features: int = 32, blocks: int = 4,
                 esa_channels: int = 16, *, zero_init_last: bool = True) -> None:
        super().__init__()
        if esa_channels < 1:
            raise ValueError(f"RLFN needs esa_channels >= 1, got {esa_channels}")
        self._assemble("RLFN", scale, channels, features, [RLFB(features, esa_channels) for _ in range(blocks)],
                       zero_init_last)


# Training presets (L1, cosine; bench/sr_candidates.py measures them). cpu: a step costs ~0.22 s of
# 2-core CPU time (measured under load), so 3500 steps should take ~13 min on 2 dedicated cores (not
# yet timed on a quiet machine; bench/NOTES.md "SR candidates"). gpu: RLFN's own size (52 features, 6 blocks).
PRESETS = {
    "tiny": {"steps": 60, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 30, "log_every": 10,
             "model_kwargs": {"features": 8, "blocks": 1, "esa_channels": 4},
             "data": {"lr_patch": 16, "augment": False, "warmup_steps": 5, "loss": "l1"}},
    "cpu": {"steps": 3500, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 500, "log_every": 50,
            "model_kwargs": {"features": 32, "blocks": 4},
            "data": {"lr_patch": 32, "warmup_steps": 100, "loss": "l1"}},
    "gpu": {"steps": 500_000, "batch_size": 64, "lr": 5e-4, "checkpoint_every": 5000, "log_every": 500,
            "model_kwargs": {"features": 52, "blocks": 6},
            "data": {"lr_patch": 64, "warmup_steps": 1000, "loss": "l1", "channels": 3}},
}


@register_model("rlfn", kind="sr", presets=PRESETS, default_training=False,
                description="RLFN efficient SR (residual local features + ESA) over bicubic (opt-in)")
def build_rlfn(*, scale: int = 2, channels: int = 1, features: int = 32, blocks: int = 4,
               esa_channels: int = 16, zero_init_last: bool = True) -> RLFN:
    return RLFN(scale, channels=channels, features=features, blocks=blocks, esa_channels=esa_channels,
                zero_init_last=zero_init_last)
