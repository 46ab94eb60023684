"""CycleGAN evaluation: G(lifestyle) against the TRUE studio shot of the same product.

The catalog pairs each lifestyle image with the studio image of the same `product_id` (the pairing
training never sees, `catalog_data.product_pairs`); on the test split's products this gives:

- `psnr_vs_studio` / `ssim_vs_studio`: G_XY(x) against the studio shot y (PSNR/SSIM on MATLAB
  BT.601 luma, `sr_metrics`, no border shaved: translation does not lose the edge), with the
  identity baseline (doing nothing: x against y) as the value to beat (the gate's primary metric);
- `cycle_l1`: mean |G_YX(G_XY(x)) - x| on [0, 1] pixel values (how much of x the cycle keeps);
- `fid_to_studio` / `kid_to_studio`: G_XY(X) against every studio test image through the catalog
  classifier's features, baseline FID/KID of X itself (the untranslated lifestyle shots);
- `psnr_vs_studio_at_trained_size` / `ssim_...`: the first two on both shots squared to the model's
  training image size (as training saw them), which tells a model that translates badly from one
  that does not carry over to full resolution (a model trained on 36 px thumbnails, say).

Resolution: inference runs at FULL resolution through `tasks.inference.translate` (one pass up
to 512 px a side, tiled beyond: what enhancement runs in production) whenever x and y
have the same size; a pair whose two shots differ in size is compared at the model's trained image
size instead (both squared like training images). `resolution` in the result says which was used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pyarrow as pa

from catalog_enhance.models.protocols import Translator
from catalog_enhance.tasks.inference.translate import translate_full_resolution
from catalog_enhance.tasks.evaluate.feature_extractor import FeatureExtractor, fid_kid, square_images
from catalog_enhance.tasks.evaluate.gan_eval import data_options
from catalog_enhance.tasks.imaging.metrics import psnr_y, ssim_y
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.catalog.rows import catalog_training_rows, domain_rows, product_pairs
from catalog_enhance.tasks.inference.trained import TrainedModel

IDENTITY = "identity"
FULL = "full resolution"
TRAINED_SIZE = "trained image size"


@dataclass
class TranslatedPair:
    product_id: str
    sku: str
    category: str
    lifestyle: np.ndarray  # uint8 (H, W, 3)
    translated: np.ndarray  # G_XY(lifestyle)
    studio: np.ndarray  # the true studio shot
    reconstructed: np.ndarray  # G_YX(G_XY(lifestyle))
    resolution: str  # FULL or TRAINED_SIZE
    # The same pair squared to the model's training image size, and G_XY of that square.
    lifestyle_small: np.ndarray
    translated_small: np.ndarray
    studio_small: np.ndarray


@dataclass
class CycleGANEvaluation:
    model_name: str
    version: str
    dataset_hash: str
    pairs: list[TranslatedPair]
    metrics: dict[str, float]
    baseline: dict[str, float]
    extractor: dict = field(default_factory=dict)
    kind: str = "cyclegan"
    # Why the gate cannot judge it (no test product with both shots: no paired metric); the
    # unpaired figures are still recorded.
    refusal: str | None = None

    @property
    def primary(self) -> float:
        return self.metrics.get("psnr_vs_studio", float("nan"))

    @property
    def primary_baseline(self) -> float:
        return self.baseline.get("psnr_vs_studio", float("nan"))

    @property
    def resolution(self) -> str:
        modes = sorted({p.resolution for p in self.pairs})
        return " + ".join(modes) if modes else "none"

    def rows(self) -> list[dict]:
        higher = {"psnr_vs_studio": True, "ssim_vs_studio": True, "cycle_l1": False, "fid_to_studio": False,
                  "kid_to_studio": False, "psnr_vs_studio_at_trained_size": True,
                  "ssim_vs_studio_at_trained_size": True}
        rows = []
        for metric, value in self.metrics.items():
            base = self.baseline.get(metric)
            rows.append({
                "model_name": self.model_name, "model_kind": self.kind, "version": self.version,
                "metric": metric, "scope": "overall", "split": "test",
                "value": _finite_or_none(value), "higher_is_better": higher[metric],
                "baseline": IDENTITY if base is not None else None,
                "baseline_value": _finite_or_none(base), "dataset_hash": self.dataset_hash,
            })
        return rows


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def translate_pairs(lake: Lake, trained: TrainedModel, x_rows: pa.Table, y_rows: pa.Table,
                    limit: int | None = None) -> list[TranslatedPair]:
    """G_XY and the cycle for the first lifestyle shot of every product with a studio shot (the
    first `limit` products only, if given)."""
    model = cast(Translator, trained.module)  # a CycleGAN: its kind's protocol
    size = int(trained.metadata["image_size"])
    fit = data_options(trained).fit
    xs, ys = x_rows.to_pylist(), y_rows.to_pylist()
    out = []
    for i, j in product_pairs(x_rows, y_rows)[:limit]:
        x = load_rgb(lake.read_bytes(xs[i]["image_key"]))
        y = load_rgb(lake.read_bytes(ys[j]["image_key"]))
        resolution = FULL
        if x.shape != y.shape:  # not pixel-comparable: compare both as the model saw images in training
            x, y = (square.permute(1, 2, 0).numpy() for square in square_images([x, y], size, fit))
            resolution = TRAINED_SIZE
        translated = translate_full_resolution(x, model.G_XY)
        x_small, y_small = (s.permute(1, 2, 0).numpy() for s in square_images([x, y], size, fit))
        out.append(TranslatedPair(
            product_id=xs[i]["product_id"], sku=xs[i]["sku"], category=xs[i]["category"], lifestyle=x,
            translated=translated, studio=y, reconstructed=translate_full_resolution(translated, model.G_YX),
            resolution=resolution, lifestyle_small=x_small, studio_small=y_small,
            translated_small=translate_full_resolution(x_small, model.G_XY),
        ))
    return out


def _unpaired_evaluation(lake: Lake, trained: TrainedModel, extractor: FeatureExtractor, x_rows: pa.Table,
                         y_rows: pa.Table, fit: str) -> CycleGANEvaluation:
    """FID/KID of G(X) against Y (baseline: X itself) and the cycle's L1, on a test split where no
    product has both shots; `refusal` says why the paired primary metric is missing."""
    model = cast(Translator, trained.module)
    size = extractor.image_size
    xs = [load_rgb(lake.read_bytes(k)) for k in x_rows.column("image_key").to_pylist()]
    translated = [translate_full_resolution(x, model.G_XY) for x in xs]
    cycled = [translate_full_resolution(t, model.G_YX) for t in translated]
    studio = square_images([load_rgb(lake.read_bytes(k)) for k in y_rows.column("image_key").to_pylist()],
                           size, fit).float() / 255.0
    ours = fid_kid(studio, square_images(translated, size, fit).float() / 255.0, extractor.features)
    identity = fid_kid(studio, square_images(xs, size, fit).float() / 255.0, extractor.features)
    metrics = {"fid_to_studio": ours["fid"], "kid_to_studio": ours["kid"],
               "cycle_l1": float(np.mean([np.abs(c.astype(np.float64) - x).mean() / 255.0 for c, x in zip(cycled, xs)]))}
    baseline = {"fid_to_studio": identity["fid"], "kid_to_studio": identity["kid"]}
    payload = json.dumps([table_fingerprint(x_rows), table_fingerprint(y_rows), extractor.fingerprint])
    reason = (f"no test product has both a {trained.metadata['domain_x']!r} and a {trained.metadata['domain_y']!r} "
              f"image ({x_rows.num_rows} and {y_rows.num_rows} test image(s)), so psnr_vs_studio cannot be measured; "
              "the unpaired fid_to_studio, kid_to_studio and cycle_l1 are recorded")
    return CycleGANEvaluation(
        model_name=trained.name, version=trained.version,
        dataset_hash=hashlib.sha256(payload.encode()).hexdigest()[:16], pairs=[], metrics=metrics,
        baseline=baseline, extractor=extractor.describe(), refusal=reason,
    )


def evaluate_cyclegan(lake: Lake, trained: TrainedModel, extractor: FeatureExtractor) -> CycleGANEvaluation:
    """All CycleGAN figures of one version on the test split's products (see the module notes)."""
    if trained.kind != "cyclegan":
        raise ValueError(f"{trained.version}: not a CycleGAN (kind {trained.kind!r})")
    options = data_options(trained)
    rows = catalog_training_rows(lake, split="test", filters=options.filters, **options.split_options())
    x_rows, y_rows = domain_rows(rows, trained.metadata["domain_x"], trained.metadata["domain_y"])
    pairs = translate_pairs(lake, trained, x_rows, y_rows)
    if not pairs:  # an unpaired catalog: what needs no pairing is measured, the gate is told why not more
        return _unpaired_evaluation(lake, trained, extractor, x_rows, y_rows, options.fit)

    def mean(values) -> float:
        return float(np.mean(list(values)))

    metrics = {
        "psnr_vs_studio": mean(psnr_y(p.translated, p.studio, 0) for p in pairs),
        "ssim_vs_studio": mean(ssim_y(p.translated, p.studio, 0) for p in pairs),
        "cycle_l1": mean(np.abs(p.reconstructed.astype(np.float64) - p.lifestyle).mean() / 255.0 for p in pairs),
    }
    baseline = {
        "psnr_vs_studio": mean(psnr_y(p.lifestyle, p.studio, 0) for p in pairs),
        "ssim_vs_studio": mean(ssim_y(p.lifestyle, p.studio, 0) for p in pairs),
    }
    # The same comparison on the images the model saw in training (squared to its image size):
    # separates "the model translates badly" from "the model does not carry over to full resolution".
    metrics.update(
        psnr_vs_studio_at_trained_size=mean(psnr_y(p.translated_small, p.studio_small, 0) for p in pairs),
        ssim_vs_studio_at_trained_size=mean(ssim_y(p.translated_small, p.studio_small, 0) for p in pairs),
    )
    baseline.update(
        psnr_vs_studio_at_trained_size=mean(psnr_y(p.lifestyle_small, p.studio_small, 0) for p in pairs),
        ssim_vs_studio_at_trained_size=mean(ssim_y(p.lifestyle_small, p.studio_small, 0) for p in pairs),
    )
    # FID to the studio domain: every test studio image against G(every translated lifestyle shot).
    size = extractor.image_size
    studio = square_images([load_rgb(lake.read_bytes(k)) for k in y_rows.column("image_key").to_pylist()],
                           size, options.fit).float() / 255.0
    translated = square_images([p.translated for p in pairs], size, options.fit).float() / 255.0
    lifestyle = square_images([p.lifestyle for p in pairs], size, options.fit).float() / 255.0
    ours, identity = fid_kid(studio, translated, extractor.features), fid_kid(studio, lifestyle, extractor.features)
    metrics.update(fid_to_studio=ours["fid"], kid_to_studio=ours["kid"])
    baseline.update(fid_to_studio=identity["fid"], kid_to_studio=identity["kid"])

    payload = json.dumps([table_fingerprint(x_rows), table_fingerprint(y_rows), extractor.fingerprint])
    dataset_hash = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return CycleGANEvaluation(
        model_name=trained.name, version=trained.version, dataset_hash=dataset_hash,
        pairs=pairs, metrics=metrics, baseline=baseline, extractor=extractor.describe(),
    )
