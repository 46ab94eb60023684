"""The efficient-SR candidates (EDSR at reduced width, RLFN): shapes, bicubic start, cost figures,
the SRNetwork protocol, opt-in training, and the trainer's L1 option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from catalog_enhance.models import get_model, get_spec
from catalog_enhance.models.protocols import SRNetwork, members
from catalog_enhance.tasks.kinds import default_models, trainable_models
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.train.loop import train_model

from sr_lake import build_sr_lake
from test_models import one_thread  # noqa: F401 - the same autouse fixture: one thread, seed 0

CANDIDATES = ("edsr", "rlfn")
SMALL = {"edsr": {"features": 8, "blocks": 2}, "rlfn": {"features": 8, "blocks": 2, "esa_channels": 4}}


@pytest.mark.parametrize("name", CANDIDATES)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_upscales_by_its_scale_and_meets_the_protocol(name, scale, channels):
    model = get_model(name, scale=scale, channels=channels, **SMALL[name])
    lr = torch.rand(2, channels, 17, 13)
    assert model(lr).shape == (2, channels, 17 * scale, 13 * scale)
    assert all(hasattr(model, attribute) for attribute in members(SRNetwork))
    assert (model.upsamples_inside, model.scale, model.channels) == (True, scale, channels)


@pytest.mark.parametrize("name", CANDIDATES)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_starts_as_exact_bicubic(name, scale):
    lr = torch.rand(1, 1, 16, 20)
    bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert torch.equal(get_model(name, scale=scale, **SMALL[name])(lr), bicubic)
        assert not torch.equal(get_model(name, scale=scale, zero_init_last=False, **SMALL[name])(lr), bicubic)


def test_rlfn_runs_on_inputs_smaller_than_its_pooling_window():
    model = get_model("rlfn", scale=2, **SMALL["rlfn"])
    assert model(torch.rand(1, 1, 5, 4)).shape == (1, 1, 10, 8)


@pytest.mark.parametrize("scale", [2, 4])
def test_edsr_macs_per_pixel_match_torch_flop_counter(scale):
    model = get_model("edsr", scale=scale, **SMALL["edsr"])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.rand(1, 1, 10, 12))
    assert counter.get_total_flops() // 2 == pytest.approx(model.macs_per_output_pixel() * out[0, 0].numel())


def test_rlfn_macs_count_esa_at_its_lower_resolution():
    model = get_model("rlfn", scale=2)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = model(torch.rand(1, 1, 64, 64))
    # ESA's strided and pooled convolutions only approach their nominal 1/4 and 1/36 on large inputs.
    assert counter.get_total_flops() // 2 == pytest.approx(model.macs_per_output_pixel() * out[0, 0].numel(), rel=0.03)


@pytest.mark.parametrize("name", CANDIDATES)
def test_candidates_are_trainable_by_name_but_not_by_default(name):
    assert name in trainable_models() and name not in default_models()
    assert {"espcn", "srcnn"} <= set(default_models())
    assert set(get_spec(name).presets) == {"tiny", "cpu", "gpu"}
    assert make_config(name, "cpu").data["loss"] == "l1"


def test_the_loss_option_leaves_existing_config_hashes_alone():
    mse = make_config("espcn", "cpu")
    assert mse.data["loss"] == "mse"
    assert make_config("espcn", "cpu", **{"data.loss": "mse"}).config_hash() == mse.config_hash()
    assert make_config("espcn", "cpu", **{"data.loss": "l1"}).config_hash() != mse.config_hash()


@pytest.mark.parametrize("name", CANDIDATES)
def test_tiny_preset_trains_with_l1_and_reports_val_psnr(lake, name):
    build_sr_lake(lake, train=2, val=1, size=48)
    result = train_model(make_config(name, "tiny", steps=4), lake)
    assert result.completed and set(result.final_losses) == {"l1"}
    assert "val_psnr_gain" in result.metrics
