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

from typing import Literal

from torch import nn

from catalog_enhance.models._subpixel import SubPixelResidualSR, check_scale, same_conv
from catalog_enhance.models.registry import register_model

ESPCN_ACTIVATIONS: tuple[str, ...] = ("prelu", "relu", "tanh")


def _activation(name: str, num_channels: int) -> nn.Module:
    if name == "prelu":
        return nn.PReLU(num_channels)
    if name == "relu":
        return nn.ReLU(inplace=True)
    return nn.Tanh()


class ESPCN(SubPixelResidualSR):
    """Low-resolution (N, C, h, w) -> (N, C, h*scale, w*scale); values unclamped (clamp at inference).

    Layers: 5x5 conv C->features, then ``depth`` 3x3 convs (features->mid, mid->mid, ...), each
    followed by ``activation``; then a 3x3 conv to C*scale^2 and ``PixelShuffle(scale)``. The paper
    used tanh; PReLU (as in FSRCNN) is the default here because it was the most robust to the
    learning rate in short CPU runs (300 Adam steps on 32 px patches: PReLU +1.0-1.3 dB over
    bicubic at lr 3e-4 to 3e-3; ReLU +1.5-1.7 dB up to 1e-3 but all units died at 3e-3; tanh
    +1.0-1.2 dB up to 1e-3, -0.3 to +0.7 dB at 3e-3). All convolutions pad with ``replicate`` so the output is exactly
    scale times the input and borders are not pulled towards black.
    """

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
        self.scale = check_scale("ESPCN", scale, minimum=1)  # 1: same-size restoration
        if activation not in ESPCN_ACTIVATIONS:
            raise ValueError(f"ESPCN activation must be one of {ESPCN_ACTIVATIONS}, got {activation!r}")
        if depth < 0 or channels < 1:
            raise ValueError(f"ESPCN needs depth >= 0 and channels >= 1, got depth={depth}, channels={channels}")
        self.channels = channels
        layers: list[nn.Module] = [same_conv(channels, features, 5), _activation(activation, features)]
        width = features
        for _ in range(depth):
            layers += [same_conv(width, mid, 3), _activation(activation, mid)]
            width = mid
        self.body = nn.Sequential(*layers)
        self._make_tail(width, zero_init=zero_init_last)
        self._init_body(activation)

    def _init_body(self, activation: str) -> None:
        # He-normal with the activation's gain (PReLU starts at slope 0.25).
        gains: dict[str, tuple[Literal["leaky_relu", "relu", "tanh"], float]] = {
            "prelu": ("leaky_relu", 0.25), "relu": ("relu", 0.0), "tanh": ("tanh", 0.0)}
        gain_args = gains[activation]
        for m in self.body.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=gain_args[1], mode="fan_in", nonlinearity=gain_args[0])
                assert m.bias is not None  # same_conv makes every convolution with a bias
                nn.init.zeros_(m.bias)


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
