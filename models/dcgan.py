"""DCGAN (Radford, Metz, Chintala: "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", 2016), sized by ``image_size``.

Generator: z -> 4x4 (ConvTranspose 4x4, stride 1) -> doubling ConvTranspose(4, 2, 1) blocks with
BatchNorm + ReLU -> Tanh image in [-1, 1]. Discriminator: the mirror image with strided convs,
LeakyReLU(0.2), BatchNorm on every block but the first, and a final 4x4 valid conv to one LOGIT
per image (no sigmoid: the trainer uses ``BCEWithLogitsLoss``, which is numerically stable).
``image_size`` is any power of two >= 8 (32, 64, 128 in practice); the number of blocks is
log2(image_size) - 2, and the widest block has ``base * min(2**(blocks-1), 8)`` channels (capped
at 8x so 128 px does not double the parameter count again).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from catalog_enhance.models.registry import register_model

_MAX_WIDTH_MULT = 8


def dcgan_block_count(image_size: int) -> int:
    """Number of resolution-doubling blocks between 4x4 and ``image_size`` (validates the size)."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"DCGAN image_size must be a power of two >= 8, got {image_size}")
    return int(math.log2(image_size)) - 2


def dcgan_widths(image_size: int, base: int) -> list[int]:
    """Channel widths from the 4x4 map upwards to the last hidden map (length = block count)."""
    blocks = dcgan_block_count(image_size)
    return [base * min(2 ** (blocks - 1 - i), _MAX_WIDTH_MULT) for i in range(blocks)]


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0. Apply with ``.apply``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        bias = getattr(module, "bias", None)  # nn.Embedding has none, a layer built with bias=False None
        if bias is not None:
            nn.init.zeros_(bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """(N, z_dim) or (N, z_dim, 1, 1) noise -> (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, z_dim: int = 128, channels: int = 3, image_size: int = 64, base: int = 64) -> None:
        super().__init__()
        widths = dcgan_widths(image_size, base)
        self.z_dim = z_dim
        self.image_size = image_size
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.z_dim, 1, 1))


class DCGANDiscriminatorFeatures(nn.Sequential):
    """Strided-conv trunk: (N, channels, S, S) -> (N, out_channels, 4, 4) after LeakyReLU(0.2).

    Shared by the unconditional discriminator and the conditional projection discriminator.
    """

    def __init__(self, channels: int = 3, image_size: int = 64, base: int = 64) -> None:
        widths = list(reversed(dcgan_widths(image_size, base)))  # narrow at full size -> wide at 8x8
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        super().__init__(*layers)
        self.out_channels = widths[-1]


class DCGANDiscriminator(nn.Module):
    """(N, channels, image_size, image_size) in [-1, 1] -> real/fake logits of shape (N,)."""

    def __init__(self, channels: int = 3, image_size: int = 64, base: int = 64) -> None:
        super().__init__()
        self.features = DCGANDiscriminatorFeatures(channels, image_size, base)
        self.classifier = nn.Conv2d(self.features.out_channels, 1, 4, 1, 0)  # 4x4 -> 1x1
        self.apply(dcgan_init_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).reshape(x.shape[0])


class DCGAN(nn.Module):
    """Container of the two networks; the trainer optimises them separately."""

    generator: DCGANGenerator
    discriminator: DCGANDiscriminator
    z_dim: int
    image_size: int
    channels: int

    def __init__(self, z_dim: int = 128, channels: int = 3, image_size: int = 64, base: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.channels = channels
        self.image_size = image_size
        self.generator = DCGANGenerator(z_dim, channels, image_size, base)
        self.discriminator = DCGANDiscriminator(channels, image_size, base)


# Training presets. tiny: seconds, for tests (a 5x LR so that 150 steps visibly move the generator).
# cpu: `make demo` on 2 cores, 2-3 minutes (32 px, base 32, 2000 steps of 64). gpu: DCGAN paper
# scale (64 px, base 64, batch 128). Trained on the studio shots (`data.filters`).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 150, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 50, "log_every": 25,
             "model_kwargs": {"z_dim": 16, "base": 16},
             "data": {"image_size": 32, "filters": "style=studio", "sample_count": 16}},
    "cpu": {"steps": 2000, "batch_size": 64, "lr": 2e-4, "checkpoint_every": 500, "log_every": 100,
            "model_kwargs": {"z_dim": 64, "base": 32}, "data": {"image_size": 32, "filters": "style=studio"}},
    "gpu": {"steps": 30000, "batch_size": 128, "lr": 2e-4, "checkpoint_every": 2000, "log_every": 100,
            "model_kwargs": {"z_dim": 128, "base": 64}, "data": {"image_size": 64, "filters": "style=studio"}},
}


@register_model("gan", kind="gan", presets=PRESETS,
                description="DCGAN generator + discriminator (logits), image_size a power of two (64 by default)")
def build_gan(*, z_dim: int = 128, channels: int = 3, image_size: int = 64, base: int = 64) -> DCGAN:
    return DCGAN(z_dim=z_dim, channels=channels, image_size=image_size, base=base)

