"""Catalog-image data for the generative models, and the GAN / conditional-GAN trainers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from generative_catalog import build_catalog, catalog_row, png_bytes, product_image, write_manifest
from PIL import Image

from catalog_enhance.data_contracts.layout import checkpoint_key
from catalog_enhance.tasks.catalog.splits import assign_split
from catalog_enhance.tasks.runtime import select_runtime
from catalog_enhance.tasks.train.base import trainer_for
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.catalog.images import load_catalog_images, prepare_image
from catalog_enhance.tasks.catalog.labels import UNKNOWN_LABEL, CatalogDataError, LabelVocabulary, filter_rows
from catalog_enhance.tasks.catalog.rows import catalog_training_rows, latest_catalog
from catalog_enhance.tasks.lake.checkpoints import load_checkpoint
from catalog_enhance.tasks.train.loop import train_model

CPU = select_runtime("cpu")



@pytest.fixture()
def catalog(lake):
    return build_catalog(lake, products_per_category=12)


# -- manifest rows, splits, filters ----------------------------------------------------------
def test_latest_catalog_keeps_the_latest_version_of_each_sku(lake):
    rng = np.random.default_rng(0)
    old = catalog_row(lake, "sku-1", "p1", "red", "studio", product_image("red", "studio", rng, (20, 20)))
    new = catalog_row(lake, "sku-1", "p1", "blue", "studio", product_image("blue", "studio", rng, (20, 20)), version=2)
    other = catalog_row(lake, "sku-0", "p0", "red", "lifestyle", product_image("red", "lifestyle", rng, (20, 20)))
    write_manifest(lake, [new, old, other])
    table = latest_catalog(lake)
    assert table.column("sku").to_pylist() == ["sku-0", "sku-1"]
    assert table.column("version").to_pylist() == [1, 2]
    assert table.column("category").to_pylist() == ["red", "blue"]


def test_missing_catalog_manifest_is_a_clear_error(lake):
    with pytest.raises(CatalogDataError, match="no catalog manifest.*run ingestion"):
        latest_catalog(lake)


def test_training_rows_are_the_train_split_of_the_pairs_module(lake, catalog):
    rows = catalog_training_rows(lake, split="train")
    products = set(rows.column("product_id").to_pylist())
    assert products and all(assign_split(p) == "train" for p in products)
    held_out = {r["product_id"] for r in catalog} - products
    assert held_out and all(assign_split(p) != "train" for p in held_out)
    # Both shots of a training product are in; none of a held-out product.
    assert rows.num_rows == 2 * len(products)


def test_filter_rows_by_column_and_label_and_anded(lake, catalog):
    table = latest_catalog(lake)
    lifestyle = filter_rows(table, "style=lifestyle")
    assert lifestyle.num_rows == 24 and set(lifestyle.column("style").to_pylist()) == {"lifestyle"}
    # `finish` means the free label column `label_finish`; two filters are ANDed.
    both = filter_rows(table, ["style=studio", "finish=matte"])
    assert both.num_rows == 12
    assert set(both.column("label_finish").to_pylist()) == {"matte"}
    assert filter_rows(table, "style=studio, label_finish=matte").equals(both)
    assert filter_rows(table, "category=red|blue").num_rows == table.num_rows
    assert filter_rows(table, "category=green").num_rows == 0


def test_filter_rows_unknown_column_and_bad_syntax_are_clear_errors(lake, catalog):
    table = latest_catalog(lake)
    with pytest.raises(CatalogDataError, match=r"unknown label column 'colour'.*category, style, label_finish"):
        filter_rows(table, "colour=red")
    with pytest.raises(CatalogDataError, match="bad label filter 'style'"):
        filter_rows(table, "style")
    # Non-label columns are not filterable labels.
    with pytest.raises(CatalogDataError, match="unknown label column 'sku'"):
        filter_rows(table, "sku=red-00-studio")


# -- label vocabulary ------------------------------------------------------------------------
def test_vocabulary_encodes_decodes_and_round_trips_through_a_checkpoint(lake, catalog):
    table = latest_catalog(lake)
    vocab = LabelVocabulary.from_table(table, ["category", "style", "finish"])
    assert vocab.columns == ("category", "style", "label_finish")
    assert vocab.labels[0] == (UNKNOWN_LABEL, "blue", "red")
    assert vocab.sizes == [3, 3, 3]
    codes = vocab.encode(table)
    assert codes.dtype == torch.long and codes.shape == (table.num_rows, 3)
    assert bool((codes > 0).all())  # every label is known, none maps to <unknown>
    decoded = vocab.decode(codes)
    assert decoded == [{c: r[c] for c in vocab.columns} for r in table.to_pylist()]

    # Stored as plain lists of strings: JSON- and weights_only-safe, and equal after the trip.
    state = vocab.to_state()
    assert json.loads(json.dumps(state)) == state
    buffer = io.BytesIO()
    torch.save({"vocabulary": state}, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["vocabulary"]
    restored = LabelVocabulary.from_state(loaded)
    assert restored == vocab
    assert torch.equal(restored.encode(table), codes)


def test_vocabulary_unknown_and_missing_labels(lake, catalog):
    vocab = LabelVocabulary.from_table(latest_catalog(lake), ["category", "finish"])
    with pytest.raises(CatalogDataError, match=r"category='green' is not in the vocabulary \(blue, red\)"):
        vocab.encode([{"category": "green", "label_finish": "matte"}])
    lenient = vocab.encode([{"category": "green", "label_finish": "matte"}], unknown="unknown")
    assert lenient.tolist() == [[0, vocab.labels[1].index("matte")]]
    # A missing label (None / empty) is the reserved index 0, never an error.
    assert vocab.encode([{"category": "red", "label_finish": None}]).tolist() == [[2, 0]]
    with pytest.raises(CatalogDataError, match="unknown label column 'size'"):
        LabelVocabulary.from_table(latest_catalog(lake), ["size"])


# -- images ----------------------------------------------------------------------------------
def test_prepare_image_composites_alpha_on_white_and_pads_with_the_border_colour():
    image = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent black...
    image.paste((200, 0, 0, 255), (15, 5, 25, 15))  # ...with an opaque red square in the middle
    out = prepare_image(png_bytes(image), 16, "pad")
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert out[:, 0, 0].tolist() == [255, 255, 255]  # pad and transparent pixels are white, not black
    assert out[:, 8, 8].astype(int).tolist() == pytest.approx([200, 0, 0], abs=30)  # product intact, centred
    # A lifestyle-like image: the pad continues its own (green) border, not white.
    scene = Image.new("RGB", (40, 20), (30, 120, 40))
    assert prepare_image(png_bytes(scene), 16, "pad")[:, 0, 0].tolist() == [30, 120, 40]
    # Blue ends on a wide image: "pad" keeps them, "crop" (the centre square) cuts them off.
    wide = Image.new("RGB", (40, 20), (255, 255, 255))
    wide.paste((0, 0, 255), (0, 0, 8, 20))
    wide.paste((0, 0, 255), (32, 0, 40, 20))
    blue = lambda a: int(((a[2].astype(int) - a[0]) > 100).sum())  # noqa: E731
    assert blue(prepare_image(png_bytes(wide), 16, "pad")) > 20
    assert blue(prepare_image(png_bytes(wide), 16, "crop")) == 0


def test_load_catalog_images_leaves_out_a_broken_image_and_goes_on(lake, catalog):
    table = latest_catalog(lake)
    broken_key = table.column("image_key")[3].as_py()
    lake.write_bytes(broken_key, b"not a png")
    images = load_catalog_images(lake, table, 24)
    assert len(images) == table.num_rows - 1
    assert images.images.shape == (table.num_rows - 1, 3, 24, 24)
    assert images.skipped and images.skipped[0][0] == table.column("sku")[3].as_py()
    batch = images.batch([0, 1])
    assert batch.min() >= -1 and batch.max() <= 1 and batch.dtype == torch.float32


# -- GAN / CGAN training ---------------------------------------------------------------------
def _colour_layout(images01: torch.Tensor) -> torch.Tensor:
    """A simple feature: the mean 4x4 colour layout of a set of images."""
    return F.adaptive_avg_pool2d(images01, 4).mean(0)


@pytest.mark.parametrize("model", ["gan", "cgan"])
def test_discriminator_learns_and_samples_move_towards_the_data(lake, catalog, model):
    """Both halves of the min-max game make progress within the tiny preset.

    D: its loss on the batches it trains on falls well below its untrained value (2 ln 2 when it
    cannot tell real from generated); a D update with the wrong sign or no effect keeps it there.
    G: its samples (the fixed noise batch) move towards the data in a simple feature, the mean
    4x4 colour layout: an untrained generator paints mid-grey, the studio shots are mostly white.
    """
    trainer = trainer_for(make_config(model, "tiny"), lake, CPU)
    trainer.setup()
    real = (trainer.data.batch(range(len(trainer.data))) + 1) / 2
    initial_samples = trainer.sample(16)
    gap_before = (_colour_layout(initial_samples) - _colour_layout(real)).abs().mean()

    history = [trainer.train_step(step) for step in range(trainer.config.steps)]
    assert all(np.isfinite(v) for losses in history for v in losses.values())
    d_first = history[0]["loss_d"]
    d_last = np.mean([losses["loss_d"] for losses in history[-25:]])
    assert d_first > 1.0  # an untrained D: about 2 ln 2
    assert d_last < 0.75 * d_first

    samples = trainer.sample(16)
    gap_after = (_colour_layout(samples) - _colour_layout(real)).abs().mean()
    assert gap_after < 0.7 * gap_before
    assert samples.shape == (16, 3, 32, 32) and samples.min() >= 0 and samples.max() <= 1
    assert torch.equal(samples, trainer.sample(16))  # the fixed noise batch: same samples
    assert not torch.equal(samples, trainer.sample(16, seed=7))


def test_changing_the_condition_changes_the_cgan_output(lake, catalog):
    trainer = trainer_for(make_config("cgan", "tiny"), lake, CPU)
    trainer.setup()
    for step in range(trainer.config.steps):
        trainer.train_step(step)
    red = trainer.sample(16, y={"category": "red"})  # same z (the fixed noise batch)...
    blue = trainer.sample(16, y={"category": "blue"})  # ...other condition
    assert (red - blue).abs().mean() > 0.02
    redness = lambda images: float((images[:, 0] - images[:, 2]).mean())  # noqa: E731
    assert redness(red) - redness(blue) > 0.05  # and it changes the way the labels say
    with pytest.raises(CatalogDataError, match="not in the vocabulary"):
        trainer.sample(4, y={"category": "green"})


def test_cgan_on_two_conditions_stores_its_vocabulary(lake, catalog):
    config = make_config("cgan", "tiny", steps=4, **{"data.conditions": ["category", "style"], "data.filters": []})
    trainer = trainer_for(config, lake, CPU)
    trainer.setup()
    trainer.train_step(0)
    assert trainer.model_kwargs["num_classes"] == [3, 3]
    assert trainer.metadata()["vocabulary"] == {
        "columns": ["category", "style"],
        "labels": [[UNKNOWN_LABEL, "blue", "red"], [UNKNOWN_LABEL, "lifestyle", "studio"]],
    }
    images = trainer.sample(2, y=[{"category": "red", "style": "lifestyle"}, {"category": "blue", "style": "studio"}])
    assert images.shape == (2, 3, 32, 32)


def test_bad_data_option_is_a_clear_error_before_any_run():
    # Refused when the config is made, before a trainer exists; the valid options are listed.
    with pytest.raises(ValueError, match=r"invalid training config for gan/tiny: unknown option\(s\) data.imagesize "
                                         r"\(valid data options: .*image_size"):
        make_config("gan", "tiny", **{"data.imagesize": 32})
    with pytest.raises(ValueError, match="data.label_smoothing"):
        make_config("gan", "tiny", **{"data.label_smoothing": 0.9})


def test_cgan_kill_and_resume_reproduces_the_uninterrupted_run(lake, catalog):
    config = make_config("cgan", "tiny", steps=30, checkpoint_every=10)
    full = train_model(config, lake, run="uninterrupted", runtime=CPU)
    killed = train_model(config, lake, run="killed", runtime=CPU, stop_after=25)
    assert not killed.completed and killed.checkpoint_key is None
    resumed = train_model(config, lake, run="killed", runtime=CPU)
    assert resumed.resumed_from_step == 20 and resumed.completed
    a = load_checkpoint(lake, full.checkpoint_key)
    b = load_checkpoint(lake, resumed.checkpoint_key)
    assert b["metadata"]["vocabulary"] == a["metadata"]["vocabulary"]
    for name, tensor in a["trainer"]["model"].items():
        assert torch.equal(tensor, b["trainer"]["model"][name]), name
    assert resumed.final_losses == pytest.approx(full.final_losses)
    assert lake.exists(checkpoint_key("cgan", "killed", 20))
