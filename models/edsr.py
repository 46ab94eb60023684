"""EDSR-style residual SR (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", 2017), at reduced width for a CPU budget, with residual learning over bicubic.

Layout: 3x3 conv C->features; `blocks` residual blocks (conv-ReLU-conv, no batch norm, the
branch scaled by `res_scale`); a 3x3 conv closing the body with a long skip from the head; then,
unlike EDSR's per-x2 upsampler, ONE sub-pixel conv to C*scale^2 at LR resolution plus the
bicubic-upscaled input (`_subpixel.SubPixelResidualSR`), zero-initialised so the model starts as
bicubic. Every convolution runs at LR resolution.

Sizes: EDSR-baseline is features 64, blocks 16 (res_scale 1); EDSR itself features 256, blocks 32,
res_scale 0.1 (the `gpu` preset). The `cpu` preset (features 32, blocks 8) costs
(2 + 2 x 8) x 9 x 32 x 32 + ... ~ 0.17 M MACs per LR pixel, ~1.5x the cpu-preset ESPCN.
"""

from __future__ import annotations

import torch
from torch import nn

from catalog_enhance.models._subpixel import SubPixelResidualSR, same_conv
from catalog_enhance.models.registry import register_model


class ResBlock(nn.Module):
    """x + res_scale * conv(relu(conv(x))) (EDSR's block: no batch norm)."""

    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = same_conv(features, features)
        self.conv2 = same_conv(features, features)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(torch.relu(self.conv1(x)))


class EDSRLite(SubPixelResidualSR):
    """LR (N, C, h, w) -> (N, C, h*scale, w*scale); see the module docstring."""

    def __init__(self, scale: int, channels: int = 1, features: int = 32, blocks: int = 8,
                 res_scale: float = 1.0, *, zero_init_last: bool = True) -> None:
        super().__init__()
        self._assemble("EDSR", scale, channels, features, [ResBlock(features, res_scale) for _ in range(blocks)],
                       zero_init_last)


# Training presets (L1, cosine; bench/sr_candidates.py measures them). cpu: 32 px LR patches; a
# step costs ~0.15 s of 2-core CPU time (measured under load: 2277 steps in 5.8 min of CPU / 2), so
# 5000 steps should take ~13 min on 2 dedicated cores (not yet timed on a quiet machine; bench/NOTES.md
# "SR candidates"). gpu: EDSR's own size (256 features, 32 blocks, res_scale 0.1, 48 px patches).
PRESETS = {
    "tiny": {"steps": 60, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 30, "log_every": 10,
             "model_kwargs": {"features": 8, "blocks": 1},
             "data": {"lr_patch": 12, "augment": False, "warmup_steps": 5, "loss": "l1"}},
    "cpu": {"steps": 5000, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 500, "log_every": 50,
            "model_kwargs": {"features": 32, "blocks": 8},
            "data": {"lr_patch": 32, "warmup_steps": 100, "loss": "l1"}},
    "gpu": {"steps": 300_000, "batch_size": 16, "lr": 1e-4, "checkpoint_every": 5000, "log_every": 500,
            "model_kwargs": {"features": 256, "blocks": 32, "res_scale": 0.1},
            "data": {"lr_patch": 48, "warmup_steps": 1000, "loss": "l1", "channels": 3}},
}


@register_model("edsr", kind="sr", presets=PRESETS, default_training=False,
                description="EDSR-style residual blocks at LR resolution, residual over bicubic (opt-in)")
def build_edsr(*, scale: int = 2, channels: int = 1, features: int = 32, blocks: int = 8,
               res_scale: float = 1.0, zero_init_last: bool = True) -> EDSRLite:
    return EDSRLite(scale, channels=channels, features=features, blocks=blocks, res_scale=res_scale,
                    zero_init_last=zero_init_last)
