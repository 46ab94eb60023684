"""A small category classifier for catalog images: the project's own feature extractor for FID/KID.

No pretrained Inception weights can be had here, so FID and KID use the pooled features of this
network, trained on the catalog's own categories (`tasks.evaluate.feature_extractor`). Four
3x3-conv stages (BatchNorm + ReLU), each but the first halving the resolution, then global average
pooling: `features(x)` is that pooled vector (as Inception's pool3 features are for FID), and
`forward(x)` adds one linear layer to class logits. Global pooling makes the network accept any
image size; the feature extractor feeds it images at the size it was trained on.

Input: float (N, 3, H, W) RGB in [0, 1] (mapped to [-1, 1] inside, the generators' range).
"""

from __future__ import annotations

import torch
from torch import nn

from catalog_enhance.models.registry import register_model


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CatalogClassifier(nn.Module):
    """(N, 3, H, W) float in [0, 1] -> (N, num_classes) logits; `features` -> (N, num_features)."""

    num_features: int

    def __init__(self, num_classes: int = 10, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        widths = (width, 2 * width, 4 * width, 4 * width)
        self.body = nn.Sequential(
            _stage(channels, widths[0], 1),
            _stage(widths[0], widths[1], 2),
            _stage(widths[1], widths[2], 2),
            _stage(widths[2], widths[3], 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        # torchmetrics reads `num_features` instead of probing the network with a dummy image.
        self.num_features = widths[-1]
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled last-stage activations: (N, num_features)."""
        return self.pool(self.body(x * 2.0 - 1.0)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("catalog_classifier", kind="classifier",
                description="Small CNN category classifier; its pooled features drive FID/KID (no pretrained Inception)")
def build_catalog_classifier(*, num_classes: int = 10, channels: int = 3, width: int = 16) -> CatalogClassifier:
    return CatalogClassifier(num_classes=num_classes, channels=channels, width=width)

