"""A new model is one module with one decorator registration: nothing else is edited.

The toy model lives in a temporary folder, outside the package, as a user's own package would,
and reaches the pipeline the way a user's package does: through the `catalog_enhance.models`
entry point group (a dist-info folder beside it on PYTHONPATH). It is then ingested for, trained,
evaluated, gated and used for enhancement through the public command line, in fresh processes
that know nothing of it but the entry point.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from catalog_enhance.tasks.catalog.splits import assign_split
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.storage import Lake

CLI = str(Path(sys.executable).with_name("catalog-enhance"))

TOY_MODEL = '''
"""A toy SR network: one 3x3 conv to scale^2 sub-pixels over a bicubic base (ESPCN's idea, tiny)."""

import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models import register_model


class ToySR(nn.Module):
    upsamples_inside = True
    scale: int
    channels: int

    def __init__(self, scale: int = 2, channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.scale, self.channels = scale, channels
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, padding_mode="replicate"), nn.ReLU(),
                                  nn.Conv2d(width, channels * scale * scale, 3, padding=1, padding_mode="replicate"))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, lr):
        h, w = lr.shape[-2:]
        base = F.interpolate(lr, size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)
        return base + self.shuffle(self.body(lr))


@register_model("toy_sr", kind="sr", description="toy sub-pixel SR for the plugin test",
                presets={"tiny": {"steps": 40, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 20,
                                  "log_every": 10, "data": {"lr_patch": 12, "augment": False}}})
def build_toy_sr(*, scale: int = 2, channels: int = 1, width: int = 8) -> ToySR:
    return ToySR(scale, channels, width)
'''


def _plugin_folder(root: Path) -> Path:
    """The toy model's module and the dist-info that announces it, as `pip install` would leave."""
    folder = root / "site"
    folder.mkdir()
    (folder / "toy_sr_plugin.py").write_text(textwrap.dedent(TOY_MODEL))
    info = folder / "toy_sr_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-sr-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[catalog_enhance.models]\ntoy_sr = toy_sr_plugin\n")
    return folder


def _feed(root: Path) -> Path:
    """Photo crops as products, enough of them that the test split has a few."""
    folder = root / "shop"
    folder.mkdir()
    photos = [np.asarray(getattr(skdata, name)())[..., :3] for name in ("astronaut", "coffee", "chelsea", "rocket")]
    rows, test = [], 0
    for i in range(40):
        product = f"toy-{i}"
        test += assign_split(product) == "test"
        photo = photos[i % len(photos)]
        y, x = (40 + 37 * i) % (photo.shape[0] - 48), (60 + 53 * i) % (photo.shape[1] - 48)
        Image.fromarray(np.ascontiguousarray(photo[y : y + 48, x : x + 48])).save(folder / f"{i}.png")
        rows.append((f"sku-{i}", f"{i}.png", "photo", "studio", product))
    assert test >= 2, "the split of these product ids leaves too few test products"
    feed = folder / "feed.csv"
    with feed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "image_uri", "category", "style", "product_id"])
        writer.writerows(rows)
    return feed


def _run(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"catalog-enhance {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_a_model_in_its_own_module_trains_evaluates_and_enhances_through_the_cli(tmp_path):
    site = _plugin_folder(tmp_path)
    feed = _feed(tmp_path)
    lake_url = str(tmp_path / "lake")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "CE_LAKE_URL": lake_url, "COLUMNS": "200"}

    _run("ingest", "--feed", str(feed), env=env)
    _run("pairs", env=env)
    trained = _run("train", "toy_sr", "--preset", "tiny", env=env)
    assert "toy_sr" in trained
    _run("evaluate", "toy_sr", env=env)
    _run("enhance", "--model", "toy_sr", env=env)

    lake = Lake.from_url(lake_url)
    (version,) = list_versions(lake, "toy_sr")
    assert version["kind"] == "sr" and version["val_metric_name"] == "val_psnr_gain"
    decisions = [r for r in manifests.read(lake, "evaluations").to_pylist()
                 if r["record"] == "decision" and r["version"] == version["version"]]
    assert len(decisions) == 1 and decisions[0]["metric"] == "psnr_y_gain"  # gated on the SR kind's metric
    enhanced = manifests.read(lake, "enhancements").to_pylist()
    catalog = manifests.current_catalog(manifests.read(lake, "catalog"))
    assert {r["model_version"] for r in enhanced} == {version["version"]}
    assert len(enhanced) == catalog.num_rows
    for row in enhanced:
        assert (row["width"], row["height"]) == (2 * row["input_width"], 2 * row["input_height"])
        assert lake.exists(row["output_key"])
