"""SR training: aligned patches from the pairs manifest, losses that fall, SRCNN beating bicubic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sr_lake import build_sr_lake, photo_crops, write_sr_pairs

from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.imaging.resize import imresize, rgb_to_y
from catalog_enhance.tasks.runtime import select_runtime
from catalog_enhance.tasks.train.base import trainer_for
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.lake.checkpoints import load_checkpoint
from catalog_enhance.tasks.imaging.lake_images import LakeImages
from catalog_enhance.tasks.lake.manifests import read_pairs
from catalog_enhance.tasks.train.data import SRPairDataset, upscale_window
from catalog_enhance.tasks.train.loop import train_model
from catalog_enhance.tasks.runtime import seed_everything
from catalog_enhance.tasks.train.sr import learning_rate, validate



def _dataset(lake, rows, **kwargs) -> SRPairDataset:
    images = LakeImages(lake, [k for r in rows for k in (r["hr_key"], r["lr_key"])], preload=True)
    return SRPairDataset(rows, images, **{"scale": 2, "lr_patch": 8, **kwargs})


def test_read_pairs_filters_split_and_scale(lake):
    rows = write_sr_pairs(lake, photo_crops(3, 24), ["train", "val", "train"], scale=2)
    train = read_pairs(lake, split="train", scale=2)
    assert train["pair_id"].to_pylist() == [rows[0]["pair_id"], rows[2]["pair_id"]]
    assert read_pairs(lake, split="train", scale=3).num_rows == 0
    manifests.remove(lake, "pairs")
    with pytest.raises(FileNotFoundError, match="pairs stage"):
        read_pairs(lake, split="train", scale=2)


def test_patches_are_aligned_y_channel_and_reproducible(lake):
    rows = build_sr_lake(lake, train=2, val=0, size=32)
    espcn_data = _dataset(lake, rows, augment=False)
    source, target = espcn_data[(0, 123)]
    assert source.shape == (1, 8, 8) and target.shape == (1, 16, 16)
    # Y of MATLAB BT.601 lives in [16, 235] / 255.
    assert 16 / 255 - 1e-6 <= float(target.min()) and float(target.max()) <= 235 / 255 + 1e-6
    again = espcn_data[(0, 123)]
    assert torch.equal(source, again[0]) and torch.equal(target, again[1])
    other = espcn_data[(0, 124)]
    assert not torch.equal(target, other[1])

    # The target patch is the HR crop at the LR patch's position times the scale.
    hr = load_rgb(lake.read_bytes(rows[0]["hr_key"]))
    lr = load_rgb(lake.read_bytes(rows[0]["lr_key"]))
    hr_y = rgb_to_y(torch.from_numpy(hr).permute(2, 0, 1).float() / 255)
    lr_y = rgb_to_y(torch.from_numpy(lr).permute(2, 0, 1).float() / 255)
    found = [(t, l) for t in range(9) for l in range(9)
             if torch.equal(lr_y[:, t:t + 8, l:l + 8], source)]
    assert len(found) == 1
    t, l = found[0]
    assert torch.allclose(hr_y[:, 2 * t:2 * t + 16, 2 * l:2 * l + 16], target)

    # SRCNN's input: the MATLAB bicubic upscale of the LR, same size as the target.
    srcnn_data = _dataset(lake, rows, augment=False, upscale_input=True, channels=3)
    up, target3 = srcnn_data[(1, 5)]
    assert up.shape == target3.shape == (3, 16, 16)


def test_upscaling_a_window_equals_cropping_the_upscaled_image():
    lr = photo_crops(1, 20)[0]
    full = imresize(torch.from_numpy(lr).permute(2, 0, 1).double() / 255, 2)
    for top, left in [(0, 0), (5, 7), (12, 12), (3, 0)]:
        window = upscale_window(lr, 3, 2, top, left, 8)
        expected = full[:, 2 * top:2 * top + 16, 2 * left:2 * left + 16].float()
        assert torch.allclose(window, expected, atol=1e-5), (top, left)


def test_unusable_pairs_are_skipped_with_a_reason(lake):
    rows = build_sr_lake(lake, train=3, val=0, size=32)
    lake.write_bytes(rows[1]["lr_key"], b"not a png")
    rows[2] = {**rows[2], "hr_width": 30}  # the manifest disagrees with the scale
    data = _dataset(lake, rows)
    assert len(data) == 1
    reasons = dict(data.skipped)
    assert "undecodable" in reasons[rows[1]["pair_id"]] and "x2" in reasons[rows[2]["pair_id"]]
    with pytest.raises(ValueError, match="no usable SR pairs"):
        _dataset(lake, rows[1:])


def test_learning_rate_schedules():
    lr = lambda step, **k: learning_rate(step, base_lr=1.0, total_steps=100, **k)  # noqa: E731
    assert lr(0, schedule="cosine", warmup_steps=10) == pytest.approx(0.1)
    assert lr(10, schedule="cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr(99, schedule="cosine", min_lr_ratio=0.01) == pytest.approx(0.01, abs=1e-3)
    assert lr(50, schedule="step") == 1.0 and lr(60, schedule="step") == pytest.approx(0.1)
    assert lr(90, schedule="step") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr(0, schedule="wobbly")


def _trained(lake, model: str):
    """(trainer before training, its fixed-batch MSE, trainer after the tiny preset's steps)."""
    config = make_config(model, "tiny")
    runtime = select_runtime("cpu")
    seed_everything(config.seed)
    trainer = trainer_for(config, lake, runtime)
    trainer.setup()
    dataset = trainer.loader.dataset
    # A fixed batch: every training pair, with crops fixed by their seeds.
    source, target = (torch.stack(t) for t in zip(*(dataset[(i, 1000 + i)] for i in range(len(dataset)))))

    def fixed_batch_mse() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(trainer.model(source), target))

    before = fixed_batch_mse()
    losses = [trainer.train_step(step)["mse"] for step in range(config.steps)]
    return trainer, before, fixed_batch_mse(), losses


@pytest.mark.parametrize("model", ["srcnn", "espcn"])
def test_sr_loss_falls_clearly_on_a_small_fixed_dataset(lake, model):
    build_sr_lake(lake, train=4, val=1, size=32)
    _, before, after, losses = _trained(lake, model)
    assert all(np.isfinite(losses))
    # ESPCN starts out exactly as bicubic, SRCNN (residual) close to it: both must do clearly better.
    assert after < 0.8 * before, (before, after)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_srcnn_beats_bicubic_on_its_own_training_patches(lake):
    build_sr_lake(lake, train=4, val=1, size=32)
    trainer, _, _, _ = _trained(lake, "srcnn")
    scores = validate(trainer.model, lake, scale=2, channels=1, split="train")
    assert scores["train_images"] == 4
    assert scores["train_psnr"] > scores["train_psnr_bicubic"] + 0.3, scores


def test_train_model_reports_val_psnr_against_bicubic(lake):
    build_sr_lake(lake, train=4, val=2, size=32)
    result = train_model(make_config("espcn", "tiny", steps=5), lake)
    assert result.metadata == {
        "model_kwargs": {"channels": 1, "scale": 2, **make_config("espcn", "tiny").model_kwargs},
        "scale": 2, "channels": 1, "colour": "Y (BT.601, MATLAB rgb2ycbcr)", "input": "LR",
    }
    assert result.metrics["val_images"] == 2
    assert result.metrics["val_psnr_gain"] == pytest.approx(
        result.metrics["val_psnr"] - result.metrics["val_psnr_bicubic"])
    assert 20 < result.metrics["val_psnr_bicubic"] < 60


def test_rgb_option_trains_on_three_channels(lake):
    build_sr_lake(lake, train=2, val=1, size=32)
    result = train_model(make_config("espcn", "tiny", steps=3, **{"data.channels": 3}), lake)
    weights = load_checkpoint(lake, result.checkpoint_key)["trainer"]["model"]
    assert weights["body.0.weight"].shape[1] == 3
    assert result.metadata["channels"] == 3 and np.isfinite(result.metrics["val_psnr"])


def test_training_without_pairs_at_the_scale_fails_clearly(lake):
    build_sr_lake(lake, train=2, val=1, size=32)
    with pytest.raises(ValueError, match="no train pairs at x3"):
        train_model(make_config("espcn", "tiny", **{"data.scale": 3}), lake)
