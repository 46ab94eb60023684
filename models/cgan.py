"""Conditional DCGAN: generator and projection discriminator both receive the labels.

Conditions are integer-coded manifest labels, one column per condition (e.g. category, style);
``num_classes[k]`` is the vocabulary size of condition k (the vocabularies themselves live with the
checkpoint, not here). The generator embeds each condition and concatenates the embeddings with z
(Mirza & Osindero style input conditioning on the DCGAN generator). The discriminator is Miyato &
Koyama's projection discriminator ("cGANs with Projection Discriminator", 2018):

    logit(x, y) = psi(phi(x)) + sum_k <embed_k(y_k), phi(x)>

with phi the DCGAN strided-conv trunk followed by global sum pooling and psi a linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from catalog_enhance.models.dcgan import PRESETS as GAN_PRESETS
from catalog_enhance.models.dcgan import DCGANDiscriminatorFeatures, DCGANGenerator, dcgan_init_
from catalog_enhance.models.registry import register_model


def _validated_num_classes(num_classes: Sequence[int]) -> tuple[int, ...]:
    counts = tuple(int(n) for n in num_classes)
    if not counts or any(n < 1 for n in counts):
        raise ValueError(f"num_classes must be a non-empty sequence of positive vocabulary sizes, got {num_classes!r}")
    return counts


def _check_labels(y: torch.Tensor, num_classes: tuple[int, ...], batch: int) -> torch.Tensor:
    """(N, K) integer labels; a 1-D (N,) tensor is accepted when there is a single condition."""
    if y.dim() == 1 and len(num_classes) == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or y.shape[0] != batch or y.shape[1] != len(num_classes):
        raise ValueError(f"labels must have shape ({batch}, {len(num_classes)}), got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be an integer tensor, got {y.dtype}")
    # Out-of-range indices would be a device-side assert on CUDA; name the condition instead.
    for k, n in enumerate(num_classes):
        outside = (y[:, k] < 0) | (y[:, k] >= n)
        if bool(outside.any()):
            bad = y[:, k][outside].unique()[:10].tolist()
            raise ValueError(f"condition {k}: labels {bad} outside its vocabulary [0, {n})")
    return y.long()


class ConditionalGenerator(nn.Module):
    """(z (N, z_dim), y (N, K) long) -> (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(
        self,
        num_classes: Sequence[int],
        z_dim: int = 128,
        channels: int = 3,
        image_size: int = 64,
        base: int = 64,
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        self.num_classes = _validated_num_classes(num_classes)
        self.z_dim = z_dim
        self.image_size = image_size
        # nn.Embedding's default N(0, 1) init puts the label codes on the same scale as z, so the
        # condition is not drowned by the noise at the start of training.
        self.embeddings = nn.ModuleList(nn.Embedding(n, embed_dim) for n in self.num_classes)
        self.body = DCGANGenerator(z_dim + embed_dim * len(self.num_classes), channels, image_size, base)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = _check_labels(y, self.num_classes, z.shape[0])
        codes = [embed(y[:, k]) for k, embed in enumerate(self.embeddings)]
        return self.body(torch.cat([z.reshape(z.shape[0], self.z_dim), *codes], dim=1))


class ProjectionDiscriminator(nn.Module):
    """(x (N, channels, S, S) in [-1, 1], y (N, K) long) -> real/fake logits (N,)."""

    def __init__(self, num_classes: Sequence[int], channels: int = 3, image_size: int = 64, base: int = 64) -> None:
        super().__init__()
        self.num_classes = _validated_num_classes(num_classes)
        self.features = DCGANDiscriminatorFeatures(channels, image_size, base)
        width = self.features.out_channels
        self.psi = nn.Linear(width, 1)
        self.embeddings = nn.ModuleList(nn.Embedding(n, width) for n in self.num_classes)
        self.apply(dcgan_init_)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Image features (N, width): the conv trunk, globally sum-pooled as in Miyato & Koyama."""
        return self.features(x).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = _check_labels(y, self.num_classes, x.shape[0])
        h = self.phi(x)
        logit = self.psi(h).squeeze(1)
        for k, embed in enumerate(self.embeddings):
            logit = logit + (embed(y[:, k]) * h).sum(dim=1)
        return logit


class CGAN(nn.Module):
    """Container of the conditional generator and projection discriminator."""

    generator: ConditionalGenerator
    discriminator: ProjectionDiscriminator
    num_classes: tuple[int, ...]
    z_dim: int
    image_size: int
    channels: int

    def __init__(
        self,
        num_classes: Sequence[int] = (10,),
        z_dim: int = 128,
        channels: int = 3,
        image_size: int = 64,
        base: int = 64,
        embed_dim: int = 32,
    ) -> None:
        super().__init__()
        self.num_classes = _validated_num_classes(num_classes)
        self.z_dim = z_dim
        self.channels = channels
        self.image_size = image_size
        self.generator = ConditionalGenerator(self.num_classes, z_dim, channels, image_size, base, embed_dim)
        self.discriminator = ProjectionDiscriminator(self.num_classes, channels, image_size, base)


# The GAN's presets, conditioned on the category (tiny) or on category and style (cpu, gpu), on
# every style rather than the studio shots only.
PRESETS = {
    "tiny": {**GAN_PRESETS["tiny"], "data": {**GAN_PRESETS["tiny"]["data"], "conditions": ["category"]}},
    "cpu": {**GAN_PRESETS["cpu"], "data": {"image_size": 32, "conditions": ["category", "style"]}},
    "gpu": {**GAN_PRESETS["gpu"], "data": {"image_size": 64, "conditions": ["category", "style"]}},
}


@register_model("cgan", kind="cgan", presets=PRESETS,
                description="Conditional DCGAN: label embeddings into the generator, projection discriminator")
def build_cgan(
    *,
    num_classes: Sequence[int] = (10,),
    z_dim: int = 128,
    channels: int = 3,
    image_size: int = 64,
    base: int = 64,
    embed_dim: int = 32,
) -> CGAN:
    return CGAN(
        num_classes=num_classes, z_dim=z_dim, channels=channels, image_size=image_size, base=base, embed_dim=embed_dim
    )

