"""What a model of each kind must expose, checked when it is registered and when it is built.

The pipeline reads these attributes directly (no `getattr` with a default), so each protocol is
the one place an attribute and its meaning are defined:

- `SRNetwork` (kind "sr"): `channels` (1 = BT.601 Y, 3 = RGB), `upsamples_inside` (True: the
  network maps LR to HR itself, like ESPCN; False: it refines a bicubic-upscaled input, like
  SRCNN) and `scale` (the factor an upsampling network was built for; None for one that runs on
  an upscaled input at any scale).
- `GANPair` (kinds "gan"): `generator` (z -> image in [-1, 1]), `discriminator` (image -> logit),
  `z_dim`, `image_size`, `channels`. `ConditionalGANPair` ("cgan") adds `num_classes`, the
  vocabulary size of each condition.
- `Translator` ("cyclegan"): the generators `G_XY` (X -> Y), `G_YX` and the discriminators `D_X`,
  `D_Y`; fully convolutional, any image size.
- `FeatureClassifier` ("classifier"): `num_features` and `features(x)`, the pooled features FID/KID
  are computed on.

A kind with no protocol here needs only be an `nn.Module`. A class declares an attribute by a
class attribute, a property or an annotation in its body (`scale: int`); a built module must have it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn


class SRNetwork(Protocol):
    channels: int
    upsamples_inside: bool
    scale: int | None

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...


class GANPair(Protocol):
    generator: nn.Module
    discriminator: nn.Module
    z_dim: int
    image_size: int
    channels: int


class ConditionalGANPair(GANPair, Protocol):
    num_classes: tuple[int, ...]


class Translator(Protocol):
    G_XY: nn.Module
    G_YX: nn.Module
    D_X: nn.Module
    D_Y: nn.Module


class FeatureClassifier(Protocol):
    num_features: int

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


# The one default of each SR attribute, for a bare module handed to the tiled inference directly
# (registered models must declare every attribute): an unmarked network maps LR to HR itself, at
# whatever scale it is called with, on whatever channels it is given.
SR_NETWORK_DEFAULTS: dict[str, object] = {"upsamples_inside": True, "scale": None, "channels": None}


def sr_attribute(module: nn.Module, name: str) -> Any:
    """`module`'s SRNetwork attribute `name`, or its one default (`SR_NETWORK_DEFAULTS`)."""
    return getattr(module, name, SR_NETWORK_DEFAULTS[name])


KIND_PROTOCOLS: dict[str, type] = {
    "sr": SRNetwork,
    "restore": SRNetwork,  # restoration (x1) and restoration + upscaling: the same network contract
    "gan": GANPair,
    "cgan": ConditionalGANPair,
    "cyclegan": Translator,
    "classifier": FeatureClassifier,
}


def members(protocol: type) -> list[str]:
    """The attributes and methods a protocol asks for, its bases' included."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        for name in [*getattr(klass, "__annotations__", {}), *vars(klass)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def _declared(cls: type, name: str) -> bool:
    return any(name in vars(k) or name in getattr(k, "__annotations__", {}) for k in cls.__mro__)


def _check(kind: str, model: str, has: Callable[[str], bool], what: str) -> None:
    protocol = KIND_PROTOCOLS.get(kind)
    if protocol is None:
        return
    missing = [name for name in members(protocol) if not has(name)]
    if missing:
        raise ValueError(f"model {model!r} ({what}) is a {kind} model without "
                         f"{', '.join(missing)} ({protocol.__name__}, models/protocols.py)")


def check_class(cls: type, kind: str, model: str) -> None:
    """Raise ValueError naming what `cls` does not declare of its kind's protocol (at registration)."""
    _check(kind, model, lambda name: _declared(cls, name), f"class {cls.__name__}")


def check_instance(module: nn.Module, kind: str, model: str) -> None:
    """Raise ValueError naming the protocol attributes a built module lacks."""
    _check(kind, model, lambda name: hasattr(module, name), f"built {type(module).__name__}")
