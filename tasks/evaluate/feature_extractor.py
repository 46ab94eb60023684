"""The project's own FID/KID feature extractor: a catalog category classifier, trained once per catalog.

No pretrained Inception weights are available here, so FID and KID (torchmetrics) use the pooled
features of `models.catalog_classifier`, trained on the catalog's train split (labels: `category`,
all styles) for a few hundred seeded CPU steps. Its held-out accuracy on the test split is measured
and stored with it: a feature space is only as meaningful as the classifier that made it, and an
accuracy near chance says the FID figures measure little.

Cache: the weights go to the lake under `feature_extractor_key(fingerprint)`, the fingerprint
hashing the training rows (`table_fingerprint`) and the settings, so the classifier is trained once
per catalog and every evaluation of every version uses the same features (FIDs stay comparable).

torchmetrics and custom extractors (torchmetrics 1.9, image/fid.py and image/kid.py): any
`nn.Module` may be passed as `feature`; images given to `update` go to it unchanged (`normalize`
only rescales for the built-in Inception, and only shapes the dummy probe otherwise), and it must
return (N, d). With an integer `num_features` attribute the module is not probed with a dummy
299x299 image. FID accumulates sums in float64 and casts the result to the features' dtype, so
`ClassifierFeatures` returns float64. KID draws its subsets with the global torch RNG: `fid_kid`
seeds it inside `torch.random.fork_rng`, leaving the caller's RNG untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from catalog_enhance.data_contracts.layout import feature_extractor_key
from catalog_enhance.models import get_model
from catalog_enhance.models.protocols import FeatureClassifier
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.catalog.images import load_catalog_images, prepare_image
from catalog_enhance.tasks.catalog.labels import UNKNOWN_LABEL, LabelVocabulary
from catalog_enhance.tasks.catalog.rows import catalog_training_rows
from catalog_enhance.tasks.lake.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

CLASSIFIER_MODEL = "catalog_classifier"
FEATURE_BATCH = 64  # images through the extractor at a time


@dataclass(frozen=True)
class ClassifierSettings:
    """How the feature extractor is trained (all of it enters the cache fingerprint)."""

    image_size: int = 32
    label: str = "category"
    fit: str = "pad"
    width: int = 16
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeatureExtractor:
    """The trained classifier (eval mode, frozen), its labels, and how well it classifies."""

    classifier: nn.Module
    labels: list[str]  # class index -> label (index 0 is UNKNOWN_LABEL, never a target)
    settings: ClassifierSettings
    fingerprint: str
    key: str
    data_hash: str
    train_images: int
    test_images: int  # held-out images whose label the classifier knows
    test_accuracy: float  # NaN without such images
    chance_accuracy: float  # share of the most common training label: what guessing reaches
    trained_now: bool = False
    features: nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.features = ClassifierFeatures(self.classifier, self.settings.image_size)

    @property
    def image_size(self) -> int:
        return self.settings.image_size

    def predict(self, images: torch.Tensor) -> list[str]:
        """The label the classifier gives each float (N, 3, H, W) image in [0, 1]."""
        with torch.no_grad():
            chunks = images.split(FEATURE_BATCH)
            logits = torch.cat([self.classifier(_resized(chunk, self.image_size)) for chunk in chunks])
        logits[:, 0] = -torch.inf  # index 0 is "<unknown>", never a real answer
        return [self.labels[i] for i in logits.argmax(1).tolist()]

    def describe(self) -> dict:
        return {
            "feature_extractor": self.key, "image_size": self.image_size, "classes": len(self.labels) - 1,
            "train_images": self.train_images, "test_images": self.test_images,
            "test_accuracy": self.test_accuracy, "chance_accuracy": self.chance_accuracy,
        }


class ClassifierFeatures(nn.Module):
    """The `feature` module handed to torchmetrics: images -> (N, d) float64 pooled features.

    Accepts float images in [0, 1] or uint8 in [0, 255], (N, 3, H, W); any other size than the
    classifier's is resized (bilinear, antialiased) first, so G(x) at full resolution and real
    images are measured in one feature space.
    """

    def __init__(self, classifier: nn.Module, image_size: int) -> None:
        super().__init__()
        self.classifier = classifier
        self.image_size = image_size
        self.num_features = int(cast(FeatureClassifier, classifier).num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return cast(FeatureClassifier, self.classifier).features(_resized(images, self.image_size)).double()


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images


# -- FID and KID ---------------------------------------------------------------------------------


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    features: nn.Module,
    *,
    kid_subsets: int = 50,
    kid_subset_size: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID (mean and std over subsets) of `fake` against `real` through `features`.

    Images: float (N, 3, H, W) in [0, 1] (or uint8). KID's subset size is capped at the smaller
    set (KID is unbiased, so small subsets only add variance). Either set with fewer than 2
    images gives NaN for everything (neither metric is defined).
    """
    n_real, n_fake = len(real), len(fake)
    if min(n_real, n_fake) < 2:
        return {"fid": float("nan"), "kid": float("nan"), "kid_std": float("nan")}
    fid = FrechetInceptionDistance(feature=features, reset_real_features=True)
    with warnings.catch_warnings():  # KID's note that it keeps every feature in memory
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=features, subsets=kid_subsets,
                                      subset_size=min(kid_subset_size, n_real, n_fake))
    for metric in (fid, kid):
        for chunk in real.split(FEATURE_BATCH):
            metric.update(chunk, real=True)
        for chunk in fake.split(FEATURE_BATCH):
            metric.update(chunk, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


# -- training and caching ------------------------------------------------------------------------


def classifier_fingerprint(train_rows: pa.Table, settings: ClassifierSettings) -> str:
    payload = json.dumps({"data": table_fingerprint(train_rows), "settings": settings.as_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_classifier(
    images: torch.Tensor, targets: torch.Tensor, num_classes: int, settings: ClassifierSettings
) -> nn.Module:
    """Train a fresh classifier on uint8 (N, 3, S, S) images and class indices (pure: no I/O).

    Seeded (initialisation, batches, flips), so the same data gives the same weights on CPU; the
    caller's global RNG is left as it was. Returns the classifier in eval mode, frozen.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = get_model(CLASSIFIER_MODEL, num_classes=num_classes, width=settings.width)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=settings.steps)
    model.train()
    n = len(images)
    for _ in range(settings.steps):
        index = torch.randint(0, n, (min(settings.batch_size, n),), generator=generator)
        batch = images[index].float() / 255.0
        flip = torch.rand(len(index), generator=generator) < 0.5  # products look alike mirrored
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        loss = F.cross_entropy(model(batch), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    model.requires_grad_(False)
    return model


def accuracy(classifier: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of uint8 images whose argmax class (never index 0, "<unknown>") is the target."""
    if len(images) == 0:
        return float("nan")
    with torch.no_grad():
        logits = torch.cat([classifier(chunk.float() / 255.0) for chunk in images.split(FEATURE_BATCH)])
    logits[:, 0] = -torch.inf
    return float((logits.argmax(1) == targets).float().mean())


def feature_extractor(
    lake: Lake, settings: ClassifierSettings | None = None, *, split_options: dict | None = None
) -> FeatureExtractor:
    """The catalog's feature extractor for `settings`: loaded from the lake if this catalog's train
    split already trained one, else trained now (and stored, with its held-out accuracy).

    `split_options` (`fractions`, `salt` of `assign_split`): only if the pairs run used non-default ones.
    """
    settings = settings or ClassifierSettings()
    split_options = split_options or {}
    train_rows = catalog_training_rows(lake, split="train", **split_options)
    fingerprint = classifier_fingerprint(train_rows, settings)
    key = feature_extractor_key(fingerprint)
    if lake.exists(key):
        try:
            return _from_state(load_checkpoint(lake, key), settings, fingerprint, key)
        except (CheckpointError, KeyError, RuntimeError) as error:  # unreadable: train it again
            log.warning("feature extractor %s unusable (%s); training it again", key, error)

    train = load_catalog_images(lake, train_rows, settings.image_size, settings.fit)
    vocabulary = LabelVocabulary.from_table(train.rows, [settings.label])
    targets = vocabulary.encode(train.rows)[:, 0]
    known = targets > 0  # a training row without a label teaches nothing
    if int(known.sum()) == 0 or len(vocabulary.labels[0]) < 3:
        raise ValueError(
            f"the feature extractor needs at least 2 {settings.label!r} labels in the train split, "
            f"found {len(vocabulary.labels[0]) - 1}"
        )
    labels = list(vocabulary.labels[0])
    log.info("training the feature extractor on %d images, %d classes", int(known.sum()), len(labels) - 1)
    classifier = train_classifier(train.images[known], targets[known], len(labels), settings)

    test_images, test_targets = _held_out(lake, vocabulary, settings, split_options)
    counts = torch.bincount(targets[known], minlength=len(labels))
    state = {
        "model": classifier.state_dict(),
        "model_kwargs": {"num_classes": len(labels), "width": settings.width},
        "labels": labels,
        "settings": settings.as_dict(),
        "data_hash": table_fingerprint(train_rows),
        "train_images": int(known.sum()),
        "test_images": len(test_targets),
        "test_accuracy": accuracy(classifier, test_images, test_targets),
        "chance_accuracy": float(counts.max() / counts.sum()),
    }
    save_checkpoint(lake, key, state)
    extractor = _from_state(state, settings, fingerprint, key)
    extractor.trained_now = True
    return extractor


def _held_out(lake: Lake, vocabulary: LabelVocabulary, settings: ClassifierSettings,
              split_options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-split images whose label the classifier was trained on, with their class indices."""
    try:
        rows = catalog_training_rows(lake, split="test", **split_options)
    except ValueError:  # CatalogDataError: no test products at all
        size = settings.image_size
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    test = load_catalog_images(lake, rows, settings.image_size, settings.fit)
    targets = vocabulary.encode(test.rows, unknown="unknown")[:, 0]
    keep = targets > 0
    return test.images[keep], targets[keep]


def _from_state(state: dict, settings: ClassifierSettings, fingerprint: str, key: str) -> FeatureExtractor:
    classifier = get_model(CLASSIFIER_MODEL, **state["model_kwargs"])
    classifier.load_state_dict(state["model"])
    classifier.eval()
    classifier.requires_grad_(False)
    return FeatureExtractor(
        classifier=classifier, labels=list(state["labels"]), settings=settings, fingerprint=fingerprint, key=key,
        data_hash=state["data_hash"], train_images=int(state["train_images"]), test_images=int(state["test_images"]),
        test_accuracy=float(state["test_accuracy"]), chance_accuracy=float(state["chance_accuracy"]),
    )


# -- images in the extractor's space -------------------------------------------------------------


def square_images(arrays: list[np.ndarray], size: int, fit: str = "pad") -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> uint8 (N, 3, size, size), squared exactly as catalog images are
    for training (`catalog_data.prepare_image`: Lanczos, padded with the border colour)."""
    if not arrays:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    squared = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
        squared.append(prepare_image(buffer.getvalue(), size, fit))
    return torch.from_numpy(np.stack(squared))


__all__ = [
    "ClassifierFeatures", "ClassifierSettings", "FeatureExtractor", "UNKNOWN_LABEL", "accuracy",
    "classifier_fingerprint", "feature_extractor", "fid_kid", "square_images", "train_classifier",
]
