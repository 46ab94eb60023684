"""Super-resolution on the held-out test split: every SR version and the classical baselines, per scale.

The test pairs are the pairs manifest's `split == "test"` rows of the CURRENT pairs config (one
config's crops and degradation; an older config's pairs, if the manifest still holds them, are a
different test set). Each registered SR version was trained for one scale (`metadata["scale"]`)
and is scored at that scale only; the classical baselines (MATLAB-bicubic, +unsharp, +histeq,
+denoise; `enhancers.classical_enhancers`) at every scale. Scoring is `sr_eval.evaluate_sr`: PSNR
and SSIM on quantised MATLAB BT.601 luma with `scale` pixels shaved, overall and per category and
style, each with the gain over bicubic and the share of images where bicubic is better.

Bicubic here is MATLAB's `imresize` (a = -0.5, antialiased when downscaling), `tasks.resize`: the
one published SR figures use, so our numbers compare with papers' bicubic rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from catalog_enhance.tasks.imaging.degrade import DegradationConfig
from catalog_enhance.tasks.imaging.degradation_config import degradation_json, named_degradation
from catalog_enhance.tasks.inference.enhancers import Enhancer, classical_enhancers, model_enhancer
from catalog_enhance.tasks.lake.champions import current_champion
from catalog_enhance.tasks.evaluate.sr_eval import REFERENCE, evaluate_sr, sr_evaluation_rows, summarize
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.tasks.lake.manifests import read_pairs
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.lake.manifests import table_fingerprint
from catalog_enhance.tasks.inference.trained import TrainedModel, find_version

log = logging.getLogger(__name__)

SCALES = (2, 3, 4)
TEST_SPLIT = "test"
BASELINE_VERSION = "classical"  # the `version` of the baselines' evaluation rows


def current_pairs_config_hash(pairs: pa.Table, degradation: str = "bicubic") -> str | None:
    """The pairs config `pairs` are evaluated on: the default config's with the named
    `degradation` (what the pairs stage makes) when present, otherwise the config of the most
    recently made pair; None if empty."""
    if pairs.num_rows == 0:
        return None
    hashes = set(pairs.column("config_hash").to_pylist())
    default = PairsConfig(degradation=named_degradation(degradation)).config_hash
    if default in hashes:
        return default
    latest = pairs.sort_by([("created_at", "descending")]).slice(0, 1)
    return latest.column("config_hash")[0].as_py()


def degradation_config_hash(lake: Lake, degradation: str) -> str:
    """The pairs config whose test split judges models trained on the named `degradation`: the
    current config (`current_pairs_config_hash`) among the pairs made with that degradation; ""
    (no pairs) when none was made with it."""
    pairs = read_pairs(lake, degradation=degradation_json(degradation))
    return current_pairs_config_hash(pairs, degradation) or ""


def test_pairs(lake: Lake, scale: int, *, config_hash: str | None = None, split: str = TEST_SPLIT) -> pa.Table:
    """The test-split pairs at `scale` of `config_hash` (default: the current config), by pair_id."""
    if config_hash is None:
        config_hash = current_pairs_config_hash(read_pairs(lake))
    return read_pairs(lake, split=split, scale=scale, config_hash=config_hash or "")


def pairs_degradation(lake: Lake) -> DegradationConfig:
    """The degradation of the current pairs config (how its LR images were made); default if none."""
    try:
        pairs = read_pairs(lake)
    except FileNotFoundError:
        return DegradationConfig()
    config_hash = current_pairs_config_hash(pairs)
    rows = pairs.filter(pc.equal(pairs["config_hash"], config_hash or "")).slice(0, 1).to_pylist()
    if not rows:
        return DegradationConfig()
    try:
        return DegradationConfig.model_validate_json(rows[0]["degradation"])
    except ValueError as error:
        log.warning("pairs config %s: degradation %r is not a DegradationConfig (%s); using the default",
                    config_hash, rows[0]["degradation"], str(error).splitlines()[0])
        return DegradationConfig()


META_COLUMNS = ("pair_id", "sku", "product_id", "category", "style")


def pair_images(lake: Lake, rows: pa.Table) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """(hr uint8, lr float [0, 1], meta) per pair row, read lazily from the lake."""
    for row in rows.to_pylist():
        hr = load_rgb(lake.read_bytes(row["hr_key"]))
        lr = load_rgb(lake.read_bytes(row["lr_key"])).astype(np.float64) / 255.0
        yield hr, lr, {name: row[name] for name in META_COLUMNS}


def sr_enhancer(trained: TrainedModel) -> Enhancer:
    """The production inference path of a trained SR version, as an enhancer at its own scale."""
    return model_enhancer(trained.module, int(trained.metadata["scale"]), int(trained.metadata["channels"]))


@dataclass
class SRScaleResult:
    """Every enhancer scored on one scale's test pairs."""

    scale: int
    dataset_hash: str  # fingerprint of the test pairs used
    per_image: pd.DataFrame
    summary: pd.DataFrame

    @property
    def n_images(self) -> int:
        return int(self.per_image["image"].nunique()) if len(self.per_image) else 0

    def rows_for(self, enhancer: str, *, model_name: str, version: str, kind: str = "sr") -> list[dict]:
        """Evaluation-manifest rows (`sr_eval.sr_evaluation_rows`) of one enhancer, as `kind`'s."""
        return sr_evaluation_rows(self.summary, enhancer, model_name=model_name, version=version,
                                  dataset_hash=self.dataset_hash, split=TEST_SPLIT, kind=kind)

    def baseline_rows(self, kind: str = "sr") -> list[dict]:
        """Rows of every classical baseline (model_name = its enhancer name, version "classical")."""
        names = [n for n in classical_enhancers() if n in set(self.summary["enhancer"])]
        return [row for name in names
                for row in self.rows_for(name, model_name=name, version=BASELINE_VERSION, kind=kind)]

    def best_baseline(self) -> tuple[str, float]:
        """The classical baseline with the highest overall PSNR-Y gain over bicubic, and that gain
        (bicubic itself: 0)."""
        overall = self.summary[(self.summary["scope"] == "overall")
                               & self.summary["enhancer"].isin(list(classical_enhancers()))]
        best = overall.loc[overall["psnr_gain"].idxmax()]
        return str(best["enhancer"]), float(best["psnr_gain"])


def evaluate_sr_scale(
    lake: Lake,
    scale: int,
    models: Mapping[str, Enhancer] | None = None,
    *,
    config_hash: str | None = None,
    max_images: int | None = None,
) -> SRScaleResult:
    """Score the classical baselines and `models` ({enhancer name: enhancer}, each for this
    `scale`) on the test pairs at `scale`. Empty frames when the split has no pairs there."""
    rows = test_pairs(lake, scale, config_hash=config_hash)
    if max_images is not None:
        rows = rows.slice(0, max_images)
    enhancers = {**classical_enhancers(), **dict(models or {})}
    if REFERENCE not in enhancers:
        raise ValueError(f"the {REFERENCE!r} reference enhancer is missing")
    per_image = evaluate_sr(pair_images(lake, rows), enhancers, scale)
    return SRScaleResult(scale=scale, dataset_hash=table_fingerprint(rows), per_image=per_image,
                         summary=summarize(per_image))


def dataset_hash(lake: Lake, scale: int, *, config_hash: str | None = None) -> str:
    """The fingerprint `evaluate_sr_scale` would record, without scoring anything."""
    return table_fingerprint(test_pairs(lake, scale, config_hash=config_hash))



def choose_sr_model(lake: Lake, scale: int, model: str | None = None, *, scale_from: str | None = None,
                    kind: str = "sr") -> dict | None:
    """The registry row of the `kind` model (super-resolution, or restoration) to score at
    `scale`: `model` (a name: its newest version; or an exact version), else the kind's champion
    if it was trained for `scale`, else the kind's newest version trained for `scale`; None if
    there is none. A named model of another kind or scale is an error naming both; `scale_from`
    says where `scale` came from when it was not --scale."""
    def trained_scale(row: dict) -> int | None:
        return json.loads(row["metadata_json"]).get("scale")

    if model:
        row = find_version(lake, model)
        if row["kind"] != kind:
            raise ValueError(f"{row['version']} is a {row['kind']} model, not a {kind} model")
        if trained_scale(row) != scale:
            advice = (f"pass --scale {trained_scale(row)} or another model" if scale_from is None
                      else f"{scale_from} are x{scale}; pass another model")
            raise ValueError(f"{row['version']} is trained for x{trained_scale(row)}, not x{scale}; {advice}")
        return row
    sr_rows = [r for r in list_versions(lake) if r["kind"] == kind and trained_scale(r) == scale]
    champion = current_champion(lake, kind)
    if champion is not None:
        for row in sr_rows:
            if (row["name"], row["version"]) == (champion.model_name, champion.version):
                return row
    return sr_rows[-1] if sr_rows else None
