"""CycleGAN networks (Zhu, Park, Isola, Efros: "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", 2017) and the generated-image history buffer.

``ResnetGenerator`` is the paper's c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3 with
reflection padding, instance norm and a Tanh output in [-1, 1]. ``PatchDiscriminator`` is the 70x70
PatchGAN (with ``n_layers=3``): a map of real/fake logits, one per overlapping 70x70 patch (the
trainer's LSGAN loss compares that map with 1 or 0). Weights start N(0, 0.02) as in the authors'
code. Losses, LR decay and the training loop belong to the trainer, not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models.dcgan import dcgan_init_
from catalog_enhance.models.registry import register_model

NORMS: tuple[str, ...] = ("instance", "batch", "none")


def _norm_layer(norm: str, num_channels: int) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm2d(num_channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    return nn.Identity()


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ResnetBlock(nn.Module):
    """R_k: two reflection-padded 3x3 convs with norm, ReLU between, plus the identity."""

    def __init__(self, channels: int, norm: str = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        use_bias = norm != "batch"  # BatchNorm's shift makes a conv bias redundant
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=use_bias),
            _norm_layer(norm, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=use_bias), _norm_layer(norm, channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """(N, in_channels, H, W) in [-1, 1] -> (N, out_channels, H, W) in [-1, 1], for ANY H, W >= 1.

    The two stride-2 downsamplings need H and W to be multiples of 4 (and the reflection pads need
    at least 8 px). Other sizes are padded at the bottom/right (reflect when the image is large
    enough, replicate otherwise) up to the next valid size, and the output is cropped back, so
    full-resolution catalog images of arbitrary size come out at exactly their input size, even
    though training uses fixed-size crops.
    """

    size_multiple = 4
    min_size = 8

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_norm(norm)
        use_bias = norm != "batch"
        layers: list[nn.Module] = [  # c7s1-ngf
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=use_bias),
            _norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):  # d(2 ngf), d(4 ngf)
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                _norm_layer(norm, ngf * mult * 2),
                nn.ReLU(inplace=True),
            ]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]  # R(4 ngf) x n_blocks
        for mult in (4, 2):  # u(2 ngf), u(ngf)
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                _norm_layer(norm, ngf * mult // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]  # c7s1-out
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        target_h = max(-(-h // self.size_multiple) * self.size_multiple, self.min_size)
        target_w = max(-(-w // self.size_multiple) * self.size_multiple, self.min_size)
        pad_h, pad_w = target_h - h, target_w - w
        if pad_h == 0 and pad_w == 0:
            return self.net(x)
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        out = self.net(F.pad(x, (0, pad_w, 0, pad_h), mode=mode))
        return out[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """PatchGAN: (N, in_channels, H, W) -> logit map (N, 1, H', W'); 30x30 for 256x256 and n_layers=3.

    Each output logit sees a ``receptive_field()`` x ``receptive_field()`` input patch (70 for
    n_layers=3). No sigmoid: the LSGAN loss is taken on the raw map.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        _check_norm(norm)
        use_bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last feature layer keeps the resolution
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=use_bias),
                _norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def receptive_field(self) -> int:
        """Side of the input patch one output logit depends on (70 for n_layers=3)."""
        field = 1
        for m in reversed([m for m in self.net if isinstance(m, nn.Conv2d)]):
            field = (field - 1) * m.stride[0] + m.kernel_size[0]
        return field


class CycleGAN(nn.Module):
    """The four networks: G_XY: X->Y, G_YX: Y->X, D_X judges domain X, D_Y judges domain Y."""

    G_XY: ResnetGenerator
    G_YX: ResnetGenerator
    D_X: PatchDiscriminator
    D_Y: PatchDiscriminator

    def __init__(
        self,
        channels: int = 3,
        ngf: int = 64,
        ndf: int = 64,
        n_blocks: int = 9,
        n_layers: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.channels = channels
        self.G_XY = ResnetGenerator(channels, channels, ngf, n_blocks, norm)
        self.G_YX = ResnetGenerator(channels, channels, ngf, n_blocks, norm)
        self.D_X = PatchDiscriminator(channels, ndf, n_layers, norm)
        self.D_Y = PatchDiscriminator(channels, ndf, n_layers, norm)


PRESETS = {
    # Seconds: 32 px crops of 36 px images, 2 residual blocks, narrow networks.
    "tiny": {
        "steps": 30, "batch_size": 4, "lr": 2e-4, "checkpoint_every": 10, "log_every": 10,
        "model_kwargs": {"ngf": 8, "ndf": 8, "n_blocks": 2, "n_layers": 3},
        "data": {"image_size": 36, "crop_size": 32, "pool_size": 8},
    },
    # `make demo` on 2 cores: 64 px crops of 72 px images, ngf 16, 4 residual blocks
    # (about 4 min single-threaded on a busy machine, 0.3-0.4 s/step).
    "cpu": {
        "steps": 600, "batch_size": 4, "lr": 2e-4, "checkpoint_every": 100, "log_every": 25,
        "model_kwargs": {"ngf": 16, "ndf": 32, "n_blocks": 4, "n_layers": 3},
        "data": {"image_size": 72, "crop_size": 64},
    },
    # The paper: 256 px crops of 286 px images, ngf/ndf 64, 9 blocks, batch 1, pool 50.
    "gpu": {
        "steps": 200000, "batch_size": 1, "lr": 2e-4, "checkpoint_every": 5000, "log_every": 200,
        "model_kwargs": {"ngf": 64, "ndf": 64, "n_blocks": 9, "n_layers": 3},
        "data": {"image_size": 286, "crop_size": 256},
    },
}


@register_model("cyclegan", kind="cyclegan", presets=PRESETS,
                description="CycleGAN: two ResNet generators (any input size) and two 70x70 PatchGAN discriminators")
def build_cyclegan(
    *,
    channels: int = 3,
    ngf: int = 64,
    ndf: int = 64,
    n_blocks: int = 9,
    n_layers: int = 3,
    norm: str = "instance",
) -> CycleGAN:
    return CycleGAN(channels=channels, ngf=ngf, ndf=ndf, n_blocks=n_blocks, n_layers=n_layers, norm=norm)


class ImageHistoryBuffer:
    """Pool of previously generated images (Shrivastava et al. 2017; CycleGAN uses 50).

    ``query(images)`` returns a batch of the same shape for the discriminator step: while the pool
    is filling, each image is stored and returned as is; afterwards each image is, with probability
    1/2, swapped with a random stored one (the old one is returned, the new one stored), and
    otherwise returned as is. Returned images are detached. Randomness comes only from this
    buffer's own ``torch.Generator`` (seeded; default seed 0), so runs are reproducible, and
    ``state_dict()``/``load_state_dict()`` (plain tensors, ints: safe for ``torch.load(...,
    weights_only=True)``) let a resumed run continue exactly. Not thread-safe: one per training run.
    """

    def __init__(self, pool_size: int = 50, *, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        self.pool_size = pool_size
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed or 0)
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                idx = int(torch.randint(self.pool_size, (), generator=self.generator))
                out.append(self.images[idx])
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    __call__ = query

    def state_dict(self) -> dict:
        return {"pool_size": self.pool_size, "images": list(self.images), "rng_state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if int(state["pool_size"]) != self.pool_size:
            raise ValueError(f"history buffer pool_size {self.pool_size} != saved {state['pool_size']}")
        self.images = list(state["images"])
        self.generator.set_state(state["rng_state"])

