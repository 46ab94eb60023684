"""CycleGAN trainer: domains from label filters, cycle loss, exact kill-and-resume, inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from generative_catalog import build_catalog

from catalog_enhance.tasks.runtime import select_runtime
from catalog_enhance.tasks.train.base import trainer_for
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.catalog.images import crop_and_flip, load_paired_domains
from catalog_enhance.tasks.catalog.labels import CatalogDataError
from catalog_enhance.tasks.catalog.rows import latest_catalog
from catalog_enhance.tasks.lake.checkpoints import load_checkpoint
from catalog_enhance.tasks.train.cyclegan import linear_decay
from catalog_enhance.tasks.train.loop import train_model

CPU = select_runtime("cpu")



@pytest.fixture()
def catalog(lake):
    return build_catalog(lake, products_per_category=8)


def _cycle_loss(trainer, x: torch.Tensor, y: torch.Tensor) -> float:
    """L1 cycle loss of both directions on a FIXED batch of whole (uncropped) images."""
    m = trainer.model
    with torch.no_grad():
        return float(F.l1_loss(m.G_YX(m.G_XY(x)), x) + F.l1_loss(m.G_XY(m.G_YX(y)), y))


def test_domains_come_from_label_filters_and_keep_the_product_pairing(lake, catalog):
    trainer = trainer_for(make_config("cyclegan", "tiny"), lake, CPU)
    trainer.setup()
    d = trainer.domains
    assert set(d.x.rows.column("style").to_pylist()) == {"lifestyle"}
    assert set(d.y.rows.column("style").to_pylist()) == {"studio"}
    assert len(d.pairs) == len(d.x) == len(d.y)  # each product has one shot in each domain
    x_ids = d.x.rows.column("product_id").to_pylist()
    y_ids = d.y.rows.column("product_id").to_pylist()
    assert all(x_ids[i] == y_ids[j] for i, j in d.pairs)
    meta = trainer.metadata()
    assert (meta["domain_x"], meta["domain_y"], meta["crop_size"]) == ("style=lifestyle", "style=studio", 32)


def test_domain_errors_are_clear(lake, catalog):
    table = latest_catalog(lake)
    with pytest.raises(CatalogDataError, match="unknown label column 'look'"):
        load_paired_domains(lake, table, "look=lifestyle", "style=studio", 16)
    with pytest.raises(CatalogDataError, match=r"domain Y \('style=catalogue'\) matches no row"):
        load_paired_domains(lake, table, "style=lifestyle", "style=catalogue", 16)
    trainer = trainer_for(make_config("cyclegan", "tiny", **{"data.crop_size": 64}), lake, CPU)
    with pytest.raises(ValueError, match="crop_size 64 > data.image_size 36"):
        trainer.setup()


def test_cycle_loss_falls(lake, catalog):
    trainer = trainer_for(make_config("cyclegan", "tiny"), lake, CPU)
    trainer.setup()
    x = trainer.domains.x.batch(range(8))
    y = trainer.domains.y.batch(range(8))
    before = _cycle_loss(trainer, x, y)
    history = [trainer.train_step(step) for step in range(trainer.config.steps)]
    after = _cycle_loss(trainer, x, y)
    assert after < 0.7 * before
    assert sum(h["loss_cycle"] for h in history[-5:]) < 0.7 * sum(h["loss_cycle"] for h in history[:5])
    # Translation runs fully convolutionally on any size, not only on training crops.
    images = torch.rand(2, 3, 45, 62)
    out = trainer.translate(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert trainer.translate(images, "y_to_x").shape == images.shape


def test_lr_decays_linearly_to_zero_over_the_second_half():
    factor = linear_decay(100, 0.5)
    assert [factor(s) for s in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert factor(75) == pytest.approx(0.5) and factor(100) == 0.0
    assert all(factor(s) > factor(s + 1) for s in range(50, 100))


def test_training_crops_and_flips_come_from_the_sample_seed(lake, catalog):
    trainer = trainer_for(make_config("cyclegan", "tiny"), lake, CPU)
    trainer.setup()
    x = trainer.domains.x
    assert (x.crop_size, x.flip, x.image_size) == (32, True, 36)
    a, index = x[(3, 1234)]
    assert index == 3 and a.shape == (3, 32, 32)
    assert torch.equal(a, x[(3, 1234)][0])  # the same sample seed gives the same crop and mirror
    crops = {tuple(crop_and_flip(x.images[3], 32, True, torch.Generator().manual_seed(s)).flatten()[:64].tolist()) for s in range(8)}
    assert len(crops) > 1  # different seeds give different windows
    # Whole images (evaluation) are not cropped.
    assert x.batch([3]).shape == (1, 3, 36, 36)


def test_kill_and_resume_reproduces_the_uninterrupted_run_exactly(lake, catalog):
    config = make_config("cyclegan", "tiny")  # 30 steps, checkpoints every 10, pool of 8
    full = train_model(config, lake, run="uninterrupted", runtime=CPU)
    killed = train_model(config, lake, run="killed", runtime=CPU, stop_after=25)
    assert not killed.completed
    resumed = train_model(config, lake, run="killed", runtime=CPU)
    assert resumed.resumed_from_step == 20 and resumed.completed

    a = load_checkpoint(lake, full.checkpoint_key)["trainer"]
    b = load_checkpoint(lake, resumed.checkpoint_key)["trainer"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    # The history buffers (images and RNG) and the LR schedulers continued exactly too.
    for pool in ("pool_x", "pool_y"):
        assert len(a[pool]["images"]) == 8
        assert all(torch.equal(i, j) for i, j in zip(a[pool]["images"], b[pool]["images"]))
        assert torch.equal(a[pool]["rng_state"], b[pool]["rng_state"])
    assert a["sched_g"]["last_epoch"] == b["sched_g"]["last_epoch"] == 30
    assert b["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert resumed.final_losses == pytest.approx(full.final_losses)
