"""FID/KID through torchmetrics with the project's own feature extractor, and the classifier behind it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from generative_catalog import build_catalog
from torch import nn

from catalog_enhance.data_contracts.layout import feature_extractor_key
from catalog_enhance.models import get_model
from catalog_enhance.tasks.evaluate.feature_extractor import (
    ClassifierFeatures,
    ClassifierSettings,
    accuracy,
    feature_extractor,
    fid_kid,
    train_classifier,
)

FAST = ClassifierSettings(image_size=16, steps=40, width=8)



class MeanColour(nn.Module):
    """A known feature map: each image's mean R, G, B (so FID can be computed by hand)."""

    num_features = 3

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.double().mean(dim=(2, 3))


def blobs(n: int, seed: int, shift: float = 0.0, size: int = 16) -> torch.Tensor:
    """Smooth random colour images in [0, 1], optionally brightened by `shift`."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    images = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (images * 0.8 + shift).clamp(0, 1)


def hand_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def random_classifier_features(image_size: int = 16) -> ClassifierFeatures:
    torch.manual_seed(0)
    classifier = get_model("catalog_classifier", num_classes=3, width=8).eval()
    return ClassifierFeatures(classifier, image_size)


# -- FID and KID -----------------------------------------------------------------------------------


def test_fid_matches_the_formula_computed_by_hand():
    real, fake = blobs(40, seed=1), blobs(30, seed=2, shift=0.1)
    features = MeanColour()
    expected = hand_fid(features(real).numpy(), features(fake).numpy())
    assert fid_kid(real, fake, features)["fid"] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_fid_and_kid_of_a_set_against_itself_are_zero_and_grow_with_a_shift():
    features = random_classifier_features()
    real = blobs(48, seed=3)
    itself = fid_kid(real, real, features, kid_subset_size=48)
    small = fid_kid(real, blobs(48, seed=3, shift=0.05), features, kid_subset_size=48)
    large = fid_kid(real, blobs(48, seed=3, shift=0.3), features, kid_subset_size=48)
    assert abs(itself["fid"]) < 1e-6 * large["fid"]
    assert 0 < small["fid"] < large["fid"]
    # KID's unbiased estimate of a set against itself is ~0: slightly negative, by O(1/n) of the
    # feature variance (the diagonal kernel terms count only across the two sets).
    assert -0.2 * large["kid"] < itself["kid"] <= 0
    assert small["kid"] < large["kid"] and large["kid"] > 0


def test_two_samples_of_one_distribution_are_closer_than_a_shifted_one():
    features = random_classifier_features()
    real = blobs(64, seed=4)
    same = fid_kid(real, blobs(64, seed=5), features)
    shifted = fid_kid(real, blobs(64, seed=5, shift=0.3), features)
    assert same["fid"] < shifted["fid"] and same["kid"] < shifted["kid"]


def test_kid_is_reproducible_and_leaves_the_global_rng_alone():
    features = random_classifier_features()
    real, fake = blobs(40, seed=6), blobs(40, seed=7, shift=0.1)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = fid_kid(real, fake, features, kid_subset_size=20)
    assert torch.equal(torch.rand(1), expected_next)
    assert fid_kid(real, fake, features, kid_subset_size=20) == first


def test_fewer_than_two_images_give_nan_not_an_error():
    out = fid_kid(blobs(1, seed=8), blobs(10, seed=9), MeanColour())
    assert all(np.isnan(v) for v in out.values())


def test_features_accept_uint8_and_other_sizes():
    features = random_classifier_features(image_size=16)
    images = blobs(4, seed=10, size=24)
    as_bytes = (images * 255).round().to(torch.uint8)
    out = features(images)
    assert out.shape == (4, features.num_features) and out.dtype == torch.float64
    assert torch.allclose(features(as_bytes), out, atol=1e-2)


# -- the classifier --------------------------------------------------------------------------------


def red_or_blue(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy reddish (class 1) or bluish (class 2) uint8 images; class 0 is "<unknown>"."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, 3, (n,), generator=g)
    base = torch.where(targets[:, None] == 1, torch.tensor([0.8, 0.2, 0.2]), torch.tensor([0.2, 0.2, 0.8]))
    images = base[:, :, None, None] + 0.25 * torch.randn(n, 3, size, size, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), targets


def test_classifier_learns_a_trivially_separable_task_above_chance():
    images, targets = red_or_blue(48, seed=0)
    test_images, test_targets = red_or_blue(40, seed=1)
    trained = train_classifier(images, targets, 3, FAST)
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    assert accuracy(trained, test_images, test_targets) >= 0.9
    # Same seed, same data: the same weights.
    again = train_classifier(images, targets, 3, FAST)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))


def test_feature_extractor_is_trained_once_per_catalog_and_reports_held_out_accuracy(lake):
    build_catalog(lake, products_per_category=16)
    first = feature_extractor(lake, FAST)
    assert first.trained_now and lake.exists(first.key) and first.key == feature_extractor_key(first.fingerprint)
    assert first.labels[1:] == ["blue", "red"]
    # Held-out products (the test split): red discs and blue squares are easy, chance is ~0.5.
    assert first.test_images > 0 and first.test_accuracy > first.chance_accuracy
    second = feature_extractor(lake, FAST)
    assert not second.trained_now and second.key == first.key
    assert all(torch.equal(a, b) for a, b in zip(first.classifier.state_dict().values(),
                                                  second.classifier.state_dict().values()))
    # Other settings are another extractor, not a silent reuse.
    other = feature_extractor(lake, ClassifierSettings(image_size=16, steps=41, width=8))
    assert other.trained_now and other.key != first.key
    assert first.predict(torch.ones(2, 3, 16, 16) * torch.tensor([0.9, 0.1, 0.1])[:, None, None]) == ["red", "red"]
