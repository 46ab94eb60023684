"""Test helper: a lake with every kind of trained model, for the evaluation tests.

The catalog is `generative_catalog` (red discs and blue squares, a studio and a lifestyle shot per
product; 16 products per colour, so the test split holds 3 products: 1 red, 2 blue). SR pairs are
photo crops (`sr_lake`); their test split repeats the training crops, because these tests check the
evaluation and the gate's mechanics, not how a 100-step model generalises. One tiny version of
each model is trained and registered.

Building takes ~15 s, so it is done once per test session (`template_lake_dir`) and every test
works on its own copy (`copy_lake`).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
from generative_catalog import build_catalog
from sr_lake import photo_crops, write_sr_pairs

from catalog_enhance.tasks.lake.model_registry import register_version
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.train.loop import train_model

PRODUCTS_PER_CATEGORY = 16
# Fast feature-extractor settings for tests (the flow's `classifier` parameter).
TEST_CLASSIFIER = {"steps": 60, "width": 8}
MODELS = ("srcnn", "gan", "cgan", "cyclegan")


def train_and_register(lake: Lake, model: str, **overrides) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_model(make_config(model, "tiny", **overrides), lake)
    finally:
        torch.set_num_threads(threads)
    return register_version(lake, result)


@functools.lru_cache(maxsize=1)
def template_lake_dir() -> Path:
    """A lake with the catalog, SR pairs and one registered version of each model (never modified)."""
    root = Path(tempfile.mkdtemp(prefix="ce-eval-lake-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    lake = Lake.from_url(str(root / "lake"))
    build_catalog(lake, products_per_category=PRODUCTS_PER_CATEGORY)
    crops = photo_crops(6, 48, seed=0)
    write_sr_pairs(lake, crops + crops[:3], ["train"] * 6 + ["test"] * 3, scale=2)
    for model in MODELS:
        train_and_register(lake, model)
    return root / "lake"


def copy_lake(destination: Path) -> Lake:
    shutil.copytree(template_lake_dir(), destination)
    return Lake.from_url(str(destination))
