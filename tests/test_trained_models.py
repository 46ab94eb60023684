"""A registered version comes back from the lake as the same module, whatever its kind."""

from __future__ import annotations

import io

import pytest
import torch

from catalog_enhance.tasks.lake.model_registry import register_version
from catalog_enhance.tasks.inference.trained import find_version, load_trained
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.train.loop import train_model
from sr_lake import build_sr_lake


@pytest.mark.parametrize("model", ["srcnn", "espcn"])
def test_registered_sr_version_reloads_identically(lake, model):
    torch.set_num_threads(1)
    build_sr_lake(lake, train=4, val=2, size=32)
    result = train_model(make_config(model, "tiny", steps=4), lake)
    row = register_version(lake, result)

    trained = load_trained(lake, row)
    assert (trained.name, trained.version, trained.kind) == (model, row["version"], "sr")
    assert not trained.module.training
    assert trained.metadata["scale"] == 2 and trained.metadata["channels"] == 1

    state = torch.load(io.BytesIO(lake.read_bytes(row["checkpoint_key"])), weights_only=True)
    for name, tensor in trained.module.state_dict().items():
        assert torch.equal(tensor.cpu(), state["trainer"]["model"][name].cpu()), name

    assert find_version(lake, model)["version"] == row["version"]
    assert find_version(lake, row["version"])["version"] == row["version"]
    with pytest.raises(KeyError, match="no registered model or version"):
        find_version(lake, "nope")
