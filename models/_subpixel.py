"""The part every low-resolution SR network here shares (ESPCN, EDSR-lite, RLFN): residual learning
over bicubic with one sub-pixel convolution.

A subclass builds `self.body` (LR features, any module) and calls `_make_tail(width)`; `forward`
is then ``bicubic(lr) + PixelShuffle(r)(to_subpixels(body(lr)))``. With `to_subpixels` zero-
initialised the network starts out exactly as bicubic and learns only the correction to it. All
convolutions run at LR resolution, so `macs_per_output_pixel` is the LR convolutions' multiply-
accumulates divided by scale^2. Not a registered model (the name starts with `_`).
"""

from __future__ import annotations

import numbers
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def check_scale(model: str, scale: object, minimum: int = 2) -> int:
    """`scale` as an int >= `minimum` (any integral number: a numpy integer from a config), else
    ValueError. ESPCN takes 1 too: same-size restoration (`espcn_restore`)."""
    if not isinstance(scale, numbers.Integral) or int(scale) < minimum:
        raise ValueError(f"{model} scale must be an integer >= {minimum}, got {scale!r}")
    return int(scale)


def same_conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    """A k x k convolution keeping the size; `replicate` padding keeps borders off black."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="replicate")


class LongSkipBody(nn.Module):
    """head conv -> `blocks` -> closing conv, plus the head's features (EDSR's long skip; RLFN's too)."""

    def __init__(self, channels: int, features: int, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.head = same_conv(channels, features)
        self.blocks = nn.Sequential(*blocks)
        self.close = same_conv(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        return head + cast(torch.Tensor, self.close(self.blocks(head)))


class SubPixelResidualSR(nn.Module):
    """LR (N, C, h, w) -> (N, C, h*scale, w*scale), values unclamped (clamp at inference)."""

    upsamples_inside = True  # LR in, HR out
    scale: int
    channels: int
    body: nn.Module

    def _assemble(self, model: str, scale: object, channels: int, features: int, blocks: list[nn.Module],
                  zero_init: bool) -> None:
        """Set scale and channels, a `LongSkipBody` of `blocks` and the tail (EDSR, RLFN)."""
        if channels < 1 or features < 1:
            raise ValueError(f"{model} needs channels and features >= 1, got {channels}, {features}")
        self.scale = check_scale(model, scale)
        self.channels = channels
        self.body = LongSkipBody(channels, features, blocks)
        self._make_tail(features, zero_init=zero_init)

    def _make_tail(self, width: int, *, zero_init: bool = True) -> None:
        self.to_subpixels = same_conv(width, self.channels * self.scale * self.scale, 3)
        self.pixel_shuffle = nn.PixelShuffle(self.scale)
        if zero_init:
            nn.init.zeros_(self.to_subpixels.weight)
        else:
            nn.init.normal_(self.to_subpixels.weight, 0.0, 1e-3)
        assert self.to_subpixels.bias is not None
        nn.init.zeros_(self.to_subpixels.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        base = F.interpolate(lr, size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)
        return base + cast(torch.Tensor, self.pixel_shuffle(self.to_subpixels(self.body(lr))))

    def macs_per_output_pixel(self) -> float:
        """Convolution multiply-accumulates per OUTPUT pixel (all convolutions run at LR
        resolution; a strided convolution or one after pooling counts at its own, lower rate)."""
        per_lr_pixel = sum(
            m.kernel_size[0] * m.kernel_size[1] * m.in_channels * m.out_channels // m.groups
            / getattr(m, "resolution_divisor", 1)
            for m in self.modules()
            if isinstance(m, nn.Conv2d)
        )
        return per_lr_pixel / (self.scale * self.scale)
