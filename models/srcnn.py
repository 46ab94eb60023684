"""SRCNN (Dong, Loy, He, Tang: "Image Super-Resolution Using Deep Convolutional Networks", 2014/2016).

Three convolutions on the bicubic-UPSCALED low-resolution image: patch extraction (9x9, n1=64),
non-linear mapping (f2 x f2, n2=32; f2=1 for the "915" variant, 5 for "955") and reconstruction
(5x5). The paper trains on the Y channel of YCbCr (``channels=1``); ``channels=3`` is the RGB option.

Cost (convolution multiply-accumulates per output pixel, computed by ``macs_per_output_pixel``;
FLOPs = 2 x MACs; biases/ReLUs and the external bicubic upscale not counted):

=========  ========  ====================  ===========
variant    channels  MACs / output pixel   parameters
=========  ========  ====================  ===========
955        1         57,184                57,281
915        1         8,032                 8,129
955        3         69,152                69,251
=========  ========  ====================  ===========
"""

from __future__ import annotations

import torch
from torch import nn

from catalog_enhance.models.registry import register_model

SRCNN_VARIANTS: dict[str, int] = {"915": 1, "955": 5}  # variant -> f2 (mapping-layer kernel size)
SRCNN_INITS: tuple[str, ...] = ("kaiming", "paper")


class SRCNN(nn.Module):
    """SRCNN on an already bicubic-upscaled image: (N, C, H, W) in [0, 1] -> (N, C, H, W).

    The paper used valid (unpadded) convolutions, so its output is 12 (or 8 for 915) pixels
    smaller than its input and the loss is taken on the central crop. Here every convolution pads
    to keep the size, because catalog images must come out at exactly the upscaled size and
    tiles must line up; ``replicate`` padding (rather than zeros) keeps the border from being
    pulled towards black, so the border pixels are only mildly worse than the interior.

    ``residual=True`` predicts the correction to the bicubic input (output = input + net(input)),
    which converges faster; the default is the paper's direct mapping.

    ``init="kaiming"`` (default): He-normal hidden layers, reconstruction layer N(0, 1e-3), zero
    biases. The paper's init (all weights N(0, 1e-3), ``init="paper"``) shrinks activations about
    1000-fold per layer and trains far more slowly; He init keeps the activation scale through the
    ReLUs. Measured on 32 px grey patches, batch 16, Adam: the direct mapping passes bicubic after
    ~400 steps (lr 3e-4 to 1e-3), ``residual=True`` after ~100 steps (lr 1e-4 to 3e-4; at 1e-3 one
    run lost all its ReLUs and stayed at bicubic), the paper init was still 4 dB below bicubic
    after 300 steps.
    """

    upsamples_inside = False  # runs on the bicubic-upscaled image
    scale = None  # any scale: the upscale happens before the network
    channels: int

    def __init__(
        self,
        channels: int = 1,
        variant: str = "955",
        residual: bool = False,
        *,
        n1: int = 64,
        n2: int = 32,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if variant not in SRCNN_VARIANTS:
            raise ValueError(f"SRCNN variant must be one of {sorted(SRCNN_VARIANTS)}, got {variant!r}")
        if init not in SRCNN_INITS:
            raise ValueError(f"SRCNN init must be one of {SRCNN_INITS}, got {init!r}")
        if channels < 1:
            raise ValueError(f"SRCNN channels must be >= 1, got {channels}")
        f2 = SRCNN_VARIANTS[variant]
        self.channels = channels
        self.variant = variant
        self.residual = residual

        def same_conv(cin: int, cout: int, k: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="replicate")

        self.patch_extraction = same_conv(channels, n1, 9)
        self.mapping = same_conv(n1, n2, f2)
        self.reconstruction = same_conv(n2, channels, 5)
        self.relu = nn.ReLU(inplace=True)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        for conv in (self.patch_extraction, self.mapping):
            if init == "paper":
                nn.init.normal_(conv.weight, 0.0, 1e-3)
            else:
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            assert conv.bias is not None  # same_conv makes every convolution with a bias
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.reconstruction.weight, 0.0, 1e-3)
        assert self.reconstruction.bias is not None
        nn.init.zeros_(self.reconstruction.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.patch_extraction(x))
        out = self.relu(self.mapping(out))
        out = self.reconstruction(out)
        return x + out if self.residual else out

    def macs_per_output_pixel(self) -> int:
        """Convolution multiply-accumulates per output pixel (all layers run at output resolution)."""
        return sum(
            m.kernel_size[0] * m.kernel_size[1] * m.in_channels * m.out_channels // m.groups
            for m in self.modules()
            if isinstance(m, nn.Conv2d)
        )


# Training presets. tiny: seconds, for tests. cpu: a couple of minutes on 2 cores (make demo).
# gpu: paper-like. On tiny/cpu SRCNN predicts the residual over its bicubic input: the paper's
# direct mapping must first learn to reproduce the input and lags bicubic for thousands of steps
# (measured: -6 dB after 40 steps, +0.9 dB after 1500 cpu steps, where the residual form reaches
# +1.2 dB in 800); the gpu preset keeps the paper's direct mapping. cpu: a 32 px HR patch at every
# scale (`hr_patch`), so x3/x4 cost what x2 costs instead of 2.25x/4x more.
PRESETS = {
    "tiny": {"steps": 100, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 50, "log_every": 10,
             "model_kwargs": {"variant": "955", "residual": True},
             "data": {"lr_patch": 12, "augment": False, "warmup_steps": 10}},
    "cpu": {"steps": 1000, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 250, "log_every": 50,
            "model_kwargs": {"variant": "955", "residual": True},
            "data": {"hr_patch": 32, "warmup_steps": 50}},
    "gpu": {"steps": 200_000, "batch_size": 128, "lr": 1e-4, "checkpoint_every": 5000, "log_every": 500,
            "model_kwargs": {"variant": "955", "residual": False},
            "data": {"lr_patch": 17, "warmup_steps": 1000}},
}


@register_model("srcnn", kind="sr", presets=PRESETS,
                description="SRCNN (Dong et al.) 9-5-5 / 9-1-5 on the bicubic-upscaled image; Y channel or RGB")
def build_srcnn(*, channels: int = 1, variant: str = "955", residual: bool = False, init: str = "kaiming") -> SRCNN:
    return SRCNN(channels=channels, variant=variant, residual=residual, init=init)
