"""ESPCN-style fast super-resolution with residual learning over bicubic.

Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network" (2016): every convolution runs at LOW resolution and a final
sub-pixel convolution (conv to C*r^2 channels + ``PixelShuffle(r)``) produces the r-times larger
image. Here the network predicts only the residual over a bicubic upscale computed inside
``forward`` (output = bicubic(lr) + net(lr)), so with the zero-initialised last layer the model
starts out exactly as bicubic and learns only the correction to it.

Cost with the defaults (channels=1, features=64, mid=32, depth=1), from ``macs_per_output_pixel``
(convolution multiply-accumulates per OUTPUT pixel; FLOPs = 2 x MACs; the 4x4-tap bicubic base adds
about 16 MACs per output pixel and channel; activations/biases are not counted):

=====  ====================  ===========
scale  MACs / output pixel   parameters
=====  ====================  ===========
x2     5,296                 21,380
x3     2,513.8               22,825
x4     1,540                 24,848
=====  ====================  ===========

(The parameter counts include the 96 PReLU slopes.)

For comparison SRCNN 9-5-5 costs 57,184 MACs per output pixel at every scale (~11x / 23x / 37x
more), which is what makes this the model to run catalog-wide on CPU.
"""

from __future__ import annotations

import numbers
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models.registry import register_model

ESPCN_ACTIVATIONS: tuple[str, ...] = ("prelu", "relu", "tanh")


def _activation(name: str, num_channels: int) -> nn.Module:
    if name == "prelu":
        return nn.PReLU(num_channels)
    if name == "relu":
        return nn.ReLU(inplace=True)
    return nn.Tanh()


class ESPCN(nn.Module):
    """Low-resolution (N, C, h, w) -> (N, C, h*scale, w*scale); values unclamped (clamp at inference).

    Layers: 5x5 conv C->features, then ``depth`` 3x3 convs (features->mid, mid->mid, ...), each
    followed by ``activation``; then a 3x3 conv to C*scale^2 and ``PixelShuffle(scale)``. The paper
    used tanh; PReLU (as in FSRCNN) is the default here because it was the most robust to the
    learning rate in short CPU runs (300 Adam steps on 32 px patches: PReLU +1.0-1.3 dB over
    bicubic at lr 3e-4 to 3e-3; ReLU +1.5-1.7 dB up to 1e-3 but all units died at 3e-3; tanh
    +1.0-1.2 dB up to 1e-3, -0.3 to +0.7 dB at 3e-3). All convolutions pad with ``replicate`` so the output is exactly
    scale times the input and borders are not pulled towards black.
    """

    upsamples_inside = True  # LR in, HR out
    scale: int
    channels: int

    def __init__(
        self,
        scale: int,
        channels: int = 1,
        features: int = 64,
        mid: int = 32,
        depth: int = 1,
        *,
        activation: str = "prelu",
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        # Any integral number is accepted (a numpy integer from a config), so the check is on the
        # value as an object: mypy deems `int` and `numbers.Integral` disjoint and would skip the rest.
        if not isinstance(cast(object, scale), numbers.Integral) or scale < 1:
            raise ValueError(f"ESPCN scale must be an integer >= 1 (1: same-size restoration), got {scale!r}")
        if activation not in ESPCN_ACTIVATIONS:
            raise ValueError(f"ESPCN activation must be one of {ESPCN_ACTIVATIONS}, got {activation!r}")
        if depth < 0 or channels < 1:
            raise ValueError(f"ESPCN needs depth >= 0 and channels >= 1, got depth={depth}, channels={channels}")
        self.scale = int(scale)
        self.channels = channels

        def same_conv(cin: int, cout: int, k: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="replicate")

        layers: list[nn.Module] = [same_conv(channels, features, 5), _activation(activation, features)]
        width = features
        for _ in range(depth):
            layers += [same_conv(width, mid, 3), _activation(activation, mid)]
            width = mid
        self.body = nn.Sequential(*layers)
        self.to_subpixels = same_conv(width, channels * scale * scale, 3)
        self.pixel_shuffle = nn.PixelShuffle(scale)
        self._init_weights(activation, zero_init_last)

    def _init_weights(self, activation: str, zero_init_last: bool) -> None:
        # He-normal with the activation's gain (PReLU starts at slope 0.25).
        gains: dict[str, tuple[Literal["leaky_relu", "relu", "tanh"], float]] = {
            "prelu": ("leaky_relu", 0.25), "relu": ("relu", 0.0), "tanh": ("tanh", 0.0)}
        gain_args = gains[activation]
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=gain_args[1], mode="fan_in", nonlinearity=gain_args[0])
                assert m.bias is not None  # same_conv makes every convolution with a bias
                nn.init.zeros_(m.bias)
        if zero_init_last:
            nn.init.zeros_(self.to_subpixels.weight)
        else:
            nn.init.normal_(self.to_subpixels.weight, 0.0, 1e-3)
        assert self.to_subpixels.bias is not None
        nn.init.zeros_(self.to_subpixels.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        base = F.interpolate(lr, size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)
        return base + self.pixel_shuffle(self.to_subpixels(self.body(lr)))

    def macs_per_output_pixel(self) -> float:
        """Convolution multiply-accumulates per OUTPUT pixel (all convolutions run at LR resolution)."""
        per_lr_pixel = sum(
            m.kernel_size[0] * m.kernel_size[1] * m.in_channels * m.out_channels // m.groups
            for m in self.modules()
            if isinstance(m, nn.Conv2d)
        )
        return per_lr_pixel / (self.scale * self.scale)


# Training presets. cpu: depth 3, mid 64 (the paper's 5-3-3 layout had depth 1, mid 32) and 5000
# steps: on photos it never trained on, 2000 steps of the paper's layout gained +1.47 dB over
# bicubic at x2, 8000 steps of it +1.70; depth 3 / mid 64 gained +2.00 after 4000 steps and +2.09
# after 6000, +1.19 at x4 after 4000 (bench/NOTES.md). ~40 ms a step on 2 cores: 3-4 min per scale.
PRESETS = {
    "tiny": {"steps": 100, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 50, "log_every": 10,
             "data": {"lr_patch": 12, "augment": False, "warmup_steps": 10}},
    "cpu": {"steps": 5000, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 500, "log_every": 50,
            "model_kwargs": {"depth": 3, "mid": 64},
            "data": {"lr_patch": 24, "warmup_steps": 50}},
    "gpu": {"steps": 200_000, "batch_size": 128, "lr": 3e-4, "checkpoint_every": 5000, "log_every": 500,
            "data": {"lr_patch": 32, "warmup_steps": 1000}},
}


@register_model("espcn", kind="sr", presets=PRESETS,
                description="ESPCN-style sub-pixel SR at LR resolution, residual over bicubic; fast on CPU")
def build_espcn(
    *,
    scale: int = 2,
    channels: int = 1,
    features: int = 64,
    mid: int = 32,
    depth: int = 1,
    activation: str = "prelu",
    zero_init_last: bool = True,
) -> ESPCN:
    return ESPCN(
        scale,
        channels=channels,
        features=features,
        mid=mid,
        depth=depth,
        activation=activation,
        zero_init_last=zero_init_last,
    )



# The same network as a restoration model (kind "restore": trained on realistic degradations,
# `tasks/train/restore.py`): RGB, since colour noise and JPEG's chroma blocks live outside the luma,
# and one layer deeper, for a receptive field (15 LR px) that spans the blur kernels it undoes.
RESTORE_PRESETS = {
    "tiny": {"steps": 60, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 30, "log_every": 10,
             "data": {"lr_patch": 12, "augment": False, "warmup_steps": 10}},
    "cpu": {"steps": 4000, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 500, "log_every": 50,
            "model_kwargs": {"depth": 4, "mid": 64},
            "data": {"lr_patch": 24, "warmup_steps": 50}},
    "gpu": {"steps": 200_000, "batch_size": 64, "lr": 3e-4, "checkpoint_every": 5000, "log_every": 500,
            "model_kwargs": {"depth": 8, "mid": 64},
            "data": {"lr_patch": 48, "warmup_steps": 1000}},
}
register_model("espcn_restore", kind="restore", presets=RESTORE_PRESETS,
               description="ESPCN trained on realistic degradations (JPEG, noise, blur): restores and upscales")(build_espcn)
