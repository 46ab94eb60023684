"""GAN and conditional-GAN evaluation: FID/KID against the real test images, conditional accuracy.

Real images: the catalog's test split (the products training held out, `assign_split`), filtered
like the model's training data (`data.filters`, e.g. style=studio) and squared the same way at the
model's image size. Generated images: `n_fake` (at least as many as real ones) from fixed seeded
noise, so a version's figures are reproducible and versions are compared on the same z.

Features: the project's catalog classifier (`feature_extractor`); FID and KID via torchmetrics.
Baseline: an untrained generator of the same architecture and seed (what training must beat; the
gate's PRIMARY_METRIC baseline). For a CGAN also:
- conditional accuracy: how often the classifier's argmax category is the category the sample was
  conditioned on (labels drawn like the test images', so classes appear in test proportions);
- per-category FID: each category's real test images against the samples conditioned on it
  (NaN where a category has fewer than 2 real test images: FID needs a covariance).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from catalog_enhance.models import get_model
from catalog_enhance.models.protocols import GANPair
from catalog_enhance.tasks.evaluate.feature_extractor import FeatureExtractor, fid_kid
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.catalog.images import load_catalog_images
from catalog_enhance.tasks.catalog.labels import LabelVocabulary, filter_rows
from catalog_enhance.tasks.catalog.rows import (
    CatalogDataOptions,
    catalog_training_rows,
    latest_catalog,
    split_rows,
)
from catalog_enhance.tasks.inference.trained import TrainedModel

EVAL_SEED = 2024  # the evaluation noise: the same z for every version
MIN_FAKE = 100  # generated images per evaluation, at least (more if the test set is larger)
GENERATE_BATCH = 64
UNTRAINED = "untrained generator"


def data_options(trained: TrainedModel) -> CatalogDataOptions:
    """The catalog-data part of the model's training config (filters, image size, fit, split)."""
    fields = set(CatalogDataOptions.model_fields)
    return CatalogDataOptions(**{k: v for k, v in trained.config["data"].items() if k in fields})


def real_test_rows(lake: Lake, trained: TrainedModel) -> pa.Table:
    """The test-split catalog rows the model's training data would have included."""
    options = data_options(trained)
    return catalog_training_rows(lake, split="test", filters=options.filters, **options.split_options())


def untrained_twin(trained: TrainedModel) -> nn.Module:
    """The same architecture, freshly initialised with the training seed, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(trained.config["seed"]))
        module = get_model(trained.name, **trained.metadata["model_kwargs"])
    module.eval()
    module.requires_grad_(False)
    return module.to(_device(trained.module))


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def generate(module: nn.Module, n: int, *, labels: torch.Tensor | None = None, seed: int = EVAL_SEED) -> torch.Tensor:
    """`n` images from `module.generator` (eval mode) with seeded noise: float (n, 3, S, S) in [0, 1],
    on the CPU. `labels` (LongTensor (n, K)) for a conditional generator."""
    gan = cast(GANPair, module)  # a GAN or conditional GAN: its kind's protocol
    generator = gan.generator
    z = torch.randn(n, gan.z_dim, generator=torch.Generator().manual_seed(seed))
    device = _device(module)
    out = []
    for start in range(0, n, GENERATE_BATCH):
        zb = z[start:start + GENERATE_BATCH].to(device)
        if labels is None:
            images = generator(zb)
        else:
            images = generator(zb, labels[start:start + GENERATE_BATCH].to(device))
        out.append(images.float().cpu())
    return torch.cat(out).add_(1.0).div_(2.0).clamp_(0.0, 1.0) if out else torch.zeros(0, 3, 1, 1)


def to_uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """Float (N, 3, H, W) in [0, 1] -> list of uint8 (H, W, 3) (for reports)."""
    return list((images.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


@dataclass
class GANEvaluation:
    model_name: str
    version: str
    kind: str  # gan | cgan
    dataset_hash: str
    n_real: int
    n_fake: int
    metrics: dict[str, float]  # fid, kid, kid_std (+ conditional_accuracy for a cgan)
    baseline: dict[str, float]  # the same figures of the untrained generator
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)  # cgan: fid, baseline_fid, real, fake
    extractor: dict = field(default_factory=dict)

    @property
    def primary(self) -> float:
        return self.metrics["fid"]

    @property
    def primary_baseline(self) -> float:
        return self.baseline["fid"]

    def rows(self) -> list[dict]:
        """Rows for the evaluations manifest (`gate.record_evaluation`)."""
        def row(metric: str, scope: str, value: float, baseline_value: float | None, higher: bool,
                baseline: str = UNTRAINED) -> dict:
            return {
                "model_name": self.model_name, "model_kind": self.kind, "version": self.version,
                "metric": metric, "scope": scope, "split": "test", "value": _finite_or_none(value),
                "higher_is_better": higher, "baseline": baseline,
                "baseline_value": _finite_or_none(baseline_value), "dataset_hash": self.dataset_hash,
            }

        rows = [row(m, "overall", v, self.baseline.get(m), m == "conditional_accuracy")
                for m, v in self.metrics.items()]
        for category, figures in sorted(self.per_category.items()):
            rows.append(row("fid", f"category={category}", figures["fid"], figures["baseline_fid"], False))
        if self.extractor:
            rows.append(row("classifier_test_accuracy", "feature_extractor", self.extractor["test_accuracy"],
                            self.extractor["chance_accuracy"], True, baseline="majority class"))
        return rows


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _dataset_hash(real_rows: pa.Table, extractor: FeatureExtractor, n_fake: int) -> str:
    payload = json.dumps([table_fingerprint(real_rows), extractor.fingerprint, n_fake, EVAL_SEED])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def evaluate_gan(lake: Lake, trained: TrainedModel, extractor: FeatureExtractor) -> GANEvaluation:
    """FID/KID of a (conditional) GAN version and of its untrained twin against the real test images."""
    if trained.kind not in ("gan", "cgan"):
        raise ValueError(f"{trained.version}: not a GAN (kind {trained.kind!r})")
    options = data_options(trained)
    rows = real_test_rows(lake, trained)
    real_data = load_catalog_images(lake, rows, int(trained.metadata["image_size"]), options.fit)
    real = real_data.images.float() / 255.0
    rows = real_data.rows  # rows whose image loaded
    n_fake = max(MIN_FAKE, len(real))
    dataset_hash = _dataset_hash(rows, extractor, n_fake)
    twin = untrained_twin(trained)

    if trained.kind == "gan":
        metrics = fid_kid(real, generate(trained.module, n_fake), extractor.features)
        baseline = fid_kid(real, generate(twin, n_fake), extractor.features)
        per_category: dict = {}
    else:
        vocabulary = LabelVocabulary.from_state(trained.metadata["vocabulary"])
        labels, conditioned = conditioning_labels(vocabulary, rows, n_fake)
        fakes, twin_fakes = generate(trained.module, n_fake, labels=labels), generate(twin, n_fake, labels=labels)
        metrics = fid_kid(real, fakes, extractor.features)
        baseline = fid_kid(real, twin_fakes, extractor.features)
        metrics["conditional_accuracy"] = conditional_accuracy(extractor, fakes, conditioned)
        baseline["conditional_accuracy"] = conditional_accuracy(extractor, twin_fakes, conditioned)
        real_categories = rows.column("category").to_pylist()
        per_category = {}
        for category in sorted(set(real_categories)):
            real_c = real[[c == category for c in real_categories]]
            pick = torch.tensor([c == category for c in conditioned], dtype=torch.bool)
            per_category[category] = {
                "fid": fid_kid(real_c, fakes[pick], extractor.features)["fid"],
                "baseline_fid": fid_kid(real_c, twin_fakes[pick], extractor.features)["fid"],
                "real": float(len(real_c)), "fake": float(int(pick.sum())),
            }
    return GANEvaluation(
        model_name=trained.name, version=trained.version, kind=trained.kind, dataset_hash=dataset_hash,
        n_real=len(real), n_fake=n_fake, metrics=metrics, baseline=baseline, per_category=per_category,
        extractor=extractor.describe(),
    )


def conditioning_labels(vocabulary: LabelVocabulary, rows: pa.Table, n: int) -> tuple[torch.Tensor, list[str | None]]:
    """`n` label rows for generation, cycling through the test rows whose labels the model knows
    (so classes come in test proportions), and the category each is conditioned on (None if the
    model is not conditioned on category). No known test row: cycle through every known class."""
    codes = vocabulary.encode(rows, unknown="unknown")
    known = codes[(codes > 0).all(dim=1)]
    if len(known) == 0:
        sizes = vocabulary.sizes
        known = torch.stack([torch.arange(n) % (s - 1) + 1 for s in sizes], dim=1)
    labels = known[torch.arange(n) % len(known)]
    if "category" not in vocabulary.columns:
        return labels, [None] * n
    column = vocabulary.columns.index("category")
    return labels, [vocabulary.labels[column][int(code)] for code in labels[:, column]]


def conditional_accuracy(extractor: FeatureExtractor, fakes: torch.Tensor, conditioned: Sequence[str | None]) -> float:
    """Share of samples the classifier assigns to the category they were conditioned on, over
    samples whose category the classifier knows; NaN if there are none."""
    knows = set(extractor.labels[1:])
    keep = [i for i, c in enumerate(conditioned) if c in knows]
    if not keep:
        return float("nan")
    predicted = extractor.predict(fakes[keep])
    return float(np.mean([predicted[j] == conditioned[i] for j, i in enumerate(keep)]))


# -- sample grids for the report -----------------------------------------------------------------


def gan_sample_grid(trained: TrainedModel, rows: int = 2, columns: int = 8) -> list[list[np.ndarray]]:
    images = to_uint8_images(generate(trained.module, rows * columns))
    return [images[r * columns:(r + 1) * columns] for r in range(rows)]


def cgan_sample_grid(lake: Lake, trained: TrainedModel, columns: int = 8) -> tuple[list[str], list[list[np.ndarray]]]:
    """One row per category of the model's vocabulary: (row labels, rows of samples). Other
    condition columns take the most common value among the catalog's products of that category."""
    vocabulary = LabelVocabulary.from_state(trained.metadata["vocabulary"])
    if "category" not in vocabulary.columns:
        raise ValueError(f"{trained.version} is not conditioned on category ({', '.join(vocabulary.columns)})")
    column = vocabulary.columns.index("category")
    options = data_options(trained)
    catalog = filter_rows(split_rows(latest_catalog(lake), None), options.filters)
    codes = vocabulary.encode(catalog, unknown="unknown")
    labels, grid = [], []
    for index, category in enumerate(vocabulary.labels[column]):
        if index == 0:
            continue
        matching = codes[codes[:, column] == index]
        row = [index if k == column else _most_common(matching[:, k]) for k in range(len(vocabulary.columns))]
        y = torch.tensor([row] * columns, dtype=torch.long)
        grid.append(to_uint8_images(generate(trained.module, columns, labels=y, seed=EVAL_SEED + index)))
        labels.append(category)
    return labels, grid


def _most_common(codes: torch.Tensor) -> int:
    counts = Counter(int(c) for c in codes if int(c) > 0)
    return counts.most_common(1)[0][0] if counts else 1
