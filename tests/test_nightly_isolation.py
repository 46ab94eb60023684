"""A real catalog must not break the night: the default nightly (every model, tiny presets) on a
catalog whose labels are not the sample catalog's, and on a studio-only catalog, enhances its
images; the models that cannot train there are skipped, each with its reason, in the summary, the
state message and the artifact. Plus the label configuration (CE_DOMAINS, CE_GAN_FILTERS) as the
models' filters."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sr_lake import photo_crops

from catalog_enhance.tasks.catalog.domains import LabelDomains
from catalog_enhance.tasks.catalog.splits import assign_split
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.settings import ConfigError, load_settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.config import label_overrides, make_config

OPTIONAL = ("gan", "cgan", "cyclegan")


def products_by_split(prefix: str, wanted: dict[str, int]) -> list[str]:
    """Product ids whose (hashed, fixed) split fills `wanted`, so every split has products."""
    chosen: dict[str, list[str]] = {split: [] for split in wanted}
    index = 0
    while any(len(chosen[s]) < n for s, n in wanted.items()):
        pid = f"{prefix}{index:03d}"
        split = assign_split(pid)
        if len(chosen[split]) < wanted[split]:
            chosen[split].append(pid)
        index += 1
    return sorted(p for ids in chosen.values() for p in ids)


def write_feed(folder: Path, rows: list[dict]) -> Path:
    feed = folder / "feed.csv"
    with feed.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return feed


def arbitrary_catalog(folder: Path) -> Path:
    """Produce, toys and art; styles `packshot`, `model shot`, `flat lay`; one shot per product."""
    folder.mkdir(parents=True)
    products = products_by_split("p", {"train": 6, "val": 1, "test": 2})
    crops = photo_crops(len(products), 64, seed=3)
    rows = []
    for i, (pid, crop) in enumerate(zip(products, crops)):
        Image.fromarray(crop).save(folder / f"{pid}.png")
        rows.append({"sku": f"{pid}-1", "product_id": pid, "image_uri": f"{pid}.png",
                     "category": ("produce", "toys", "art")[i % 3],
                     "style": ("packshot", "model shot", "flat lay")[i % 3]})
    return write_feed(folder, rows)


def studio_only_catalog(tmp_path: Path) -> Path:
    """What `catalog-enhance sample-catalog --source fashion-mnist` builds (28x28 greyscale, style
    studio only), from idx files written here (photo crops in greyscale: no download)."""
    from catalog_enhance.demo_data.sample_catalog import build_fashion_mnist_catalog

    data = tmp_path / "fashion-mnist"
    data.mkdir()
    grey = np.stack([c.mean(axis=2) for c in photo_crops(24, 28, seed=5)]).astype(np.uint8)
    for split, images in (("train", grey[:16]), ("t10k", grey[16:])):
        n = len(images)
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        with gzip.open(data / f"{split}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(header + images.tobytes())
        with gzip.open(data / f"{split}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + (np.arange(n) % 3).astype(np.uint8).tobytes())
    return build_fashion_mnist_catalog(data, tmp_path / "shop", seed=0, max_objects=24).feed_path


def run_night(feed: Path, lake_dir: Path, **options):
    from catalog_enhance.flows.nightly import nightly

    state = nightly(feed=str(feed), lake_url=str(lake_dir), preset="tiny", return_state=True, **options)
    assert state.is_completed(), state.message
    return state, state.result()


def assert_enhanced_everything(lake_dir: Path) -> None:
    lake = Lake.from_url(str(lake_dir))
    catalog = manifests.current_catalog(manifests.read(lake, "catalog"))
    enhanced = manifests.read(lake, "enhancements").to_pylist()
    assert {r["sku"] for r in enhanced} == set(catalog.column("sku").to_pylist())
    assert all(lake.exists(r["output_key"]) for r in enhanced)


@pytest.mark.slow
def test_a_catalog_with_other_labels_and_no_paired_shots_is_enhanced_and_says_what_it_skipped(
        tmp_path, prefect_harness):
    # The studio transform asked for too: no CycleGAN champion, so the images are enhanced without it.
    state, summary = run_night(arbitrary_catalog(tmp_path / "shop"), tmp_path / "lake", style_transform=True)
    assert_enhanced_everything(tmp_path / "lake")
    assert summary.skipped["studio transform"].startswith("no gated champion for cyclegan")
    assert {r["name"] for r in summary.training} == {"srcnn", "espcn", "espcn_restore"}
    assert summary.degraded_pairs["realistic"].pairs_written > 0  # what the restoration kind trains on
    # Every optional model is skipped with the reason this catalog gives (none has a studio or a
    # lifestyle shot), in the summary, its markdown and the state's message.
    assert set(summary.skipped) == {*OPTIONAL, "studio transform"} and not summary.failed
    assert summary.housekeeping is not None and summary.succeeded
    assert "no catalog rows for split='train', filters='style=studio'" in summary.skipped["gan"]
    assert "style=lifestyle" in summary.skipped["cyclegan"]
    markdown = summary.to_markdown()
    for model in OPTIONAL:
        assert f"skipped {model}: cannot train on this catalog" in markdown
        assert f"skipped {model}: {summary.skipped[model]}" in state.message
    print("\n".join(summary.verdicts()))


@pytest.mark.slow
def test_a_studio_only_catalog_is_enhanced_and_an_optional_models_failure_is_only_recorded(
        tmp_path, prefect_harness, monkeypatch):
    from catalog_enhance.tasks.train.gan import CGANTrainer

    def broken_step(self, step):  # an unexpected bug in an optional model
        raise RuntimeError("cgan step exploded")

    monkeypatch.setattr(CGANTrainer, "train_step", broken_step)
    state, summary = run_night(studio_only_catalog(tmp_path), tmp_path / "lake")
    assert_enhanced_everything(tmp_path / "lake")
    assert {r["name"] for r in summary.training} == {"srcnn", "espcn", "espcn_restore", "gan"}
    assert list(summary.skipped) == ["cyclegan"] and "style=lifestyle" in summary.skipped["cyclegan"]
    assert summary.failed == {"training cgan": "RuntimeError: cgan step exploded"} and summary.succeeded
    assert "failed training cgan: RuntimeError: cgan step exploded" in state.message
    assert "failed training cgan: RuntimeError: cgan step exploded" in summary.to_markdown()
    print("\n".join(summary.verdicts()))


@pytest.mark.slow
def test_a_restore_night_enhances_with_the_restoration_model_and_records_the_mode(tmp_path, prefect_harness):
    # Named, because the gate may refuse a 60-step model; without a name the night would skip
    # enhancement with "no gated champion for x2 restore" (as a fidelity night does).
    state, summary = run_night(studio_only_catalog(tmp_path), tmp_path / "lake", models=["espcn", "espcn_restore"],
                               enhance_mode="restore", enhance_model="espcn_restore")
    assert_enhanced_everything(tmp_path / "lake")
    assert summary.enhancement is not None and summary.succeeded
    rows = manifests.read(Lake.from_url(str(tmp_path / "lake")), "enhancements").to_pylist()
    assert {r["model_name"] for r in rows} == {"espcn_restore"}
    assert {json.loads(r["params_json"])["mode"] for r in rows} == {"restore"}


# -- the label configuration --------------------------------------------------------------------


def test_default_label_settings_keep_the_presets_and_their_hashes():
    settings = load_settings()
    for model in ("srcnn", "espcn", "gan", "cgan", "cyclegan"):
        for preset in ("tiny", "cpu"):
            overrides = label_overrides(model, preset, settings.domains, settings.gan_filters)
            assert make_config(model, preset, **overrides).config_hash() == make_config(model, preset).config_hash()


def test_ce_domains_and_gan_filters_become_the_models_filters(monkeypatch):
    monkeypatch.setenv("CE_DOMAINS", '{"column": "style", "x": ["model shot", "flat lay"], "y": ["packshot"]}')
    settings = load_settings()
    cyclegan = make_config("cyclegan", "tiny", **label_overrides("cyclegan", "tiny", settings.domains))
    assert (cyclegan.data["domain_x"], cyclegan.data["domain_y"]) == ("style=model shot|flat lay", "style=packshot")
    gan = make_config("gan", "cpu", **label_overrides("gan", "cpu", settings.domains, settings.gan_filters))
    assert gan.data["filters"] == "style=packshot"  # unset CE_GAN_FILTERS: domain y
    assert label_overrides("cgan", "cpu", settings.domains) == {}  # that preset filters nothing

    monkeypatch.setenv("CE_GAN_FILTERS", "category=toys|art")
    settings = load_settings()
    gan = make_config("gan", "tiny", **label_overrides("gan", "tiny", settings.domains, settings.gan_filters))
    assert gan.data["filters"] == "category=toys|art"
    monkeypatch.setenv("CE_GAN_FILTERS", "")  # every image
    settings = load_settings()
    assert make_config("gan", "tiny", **label_overrides("gan", "tiny", settings.domains, "")).data["filters"] == []


@pytest.mark.parametrize("value, message", [
    ('{"x": ["a"], "y": ["a"]}', "share the value"),
    ('{"x": [], "y": ["b"]}', "names no label value"),
    ('{"column": "style", "x": ["a|b"], "y": ["c"]}', "cannot hold"),
    ('{"x": ["a"], "y": ["b"], "z": 1}', "Extra inputs"),
])
def test_bad_domains_are_one_clear_error(monkeypatch, value, message):
    monkeypatch.setenv("CE_DOMAINS", value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_label_domains_filters():
    domains = LabelDomains(column="category", x=["produce"], y=["toys", "art"])
    assert (domains.x_filter, domains.y_filter) == ("category=produce", "category=toys|art")


# -- CycleGAN evaluation on an unpaired test split ------------------------------------------------


def test_cyclegan_evaluation_without_paired_test_products_records_what_it_can_and_refuses(tmp_path):
    from evaluation_lake import TEST_CLASSIFIER, train_and_register
    from generative_catalog import build_catalog, write_manifest

    from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings
    from catalog_enhance.tasks.evaluate.pipeline import evaluate_pending
    from catalog_enhance.tasks.lake.champions import read_evaluations

    lake = Lake.from_url(str(tmp_path / "lake"))
    rows = build_catalog(lake, products_per_category=16)
    test_products = sorted({r["product_id"] for r in rows if assign_split(r["product_id"]) == "test"})
    assert len(test_products) >= 2
    # Each test product keeps one shot only: lifestyle for the first, studio for the others.
    keep = [r for r in rows if r["product_id"] not in test_products
            or r["style"] == ("lifestyle" if r["product_id"] == test_products[0] else "studio")]
    write_manifest(lake, keep)
    version = train_and_register(lake, "cyclegan", steps=2)["version"]

    summary = evaluate_pending(lake, models=["cyclegan"], classifier=ClassifierSettings(**TEST_CLASSIFIER))
    assert summary.failures == [] and [r.version for r in summary.results] == [version]
    (result,) = summary.results
    assert not result.promoted and "no test product has both a 'style=lifestyle' and a 'style=studio' image" in (
        result.decision.reason)
    recorded = {r["metric"] for r in read_evaluations(lake).to_pylist()
                if r["version"] == version and r["record"] == "evaluation"}
    assert recorded == {"fid_to_studio", "kid_to_studio", "cycle_l1"}
