"""Training infrastructure: device selection, config, checkpoints (and refusing crafted ones),
resumable batches, and kill-and-resume reproducing the uninterrupted run exactly on CPU."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from sr_lake import build_sr_lake

from catalog_enhance.data_contracts.layout import checkpoint_key
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.train.config import parse_overrides
from catalog_enhance.tasks.lake.checkpoints import (
    CheckpointError,
    latest_checkpoint_key,
    load_checkpoint,
    save_checkpoint,
)
from catalog_enhance.tasks.train.data import StepBatchSampler
from catalog_enhance.tasks.train.loop import train_model
from catalog_enhance.tasks.runtime import (
    Runtime,
    autocast,
    select_runtime,
    step_generator,
    to_device,
)



# -- runtime ---------------------------------------------------------------------------------------


def test_cpu_runtime_is_fp32_and_deterministic(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    runtime = select_runtime()
    assert runtime.device.type == "cpu"
    assert runtime.amp_dtype is None and not runtime.channels_last and runtime.deterministic
    with autocast(runtime):
        assert not torch.is_autocast_enabled("cpu")


def test_cuda_is_chosen_first_with_bf16_and_channels_last(monkeypatch):
    # No GPU here: pretend one exists and check the decision, without running any CUDA code.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    runtime = select_runtime()
    assert runtime.device.type == "cuda"
    assert runtime.amp_dtype is torch.bfloat16
    assert runtime.channels_last and not runtime.deterministic
    # An old GPU without bf16: fp32, still channels_last.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert select_runtime().amp_dtype is None
    # prefer="cpu" forces the CPU even with a GPU present.
    assert select_runtime("cpu").device.type == "cpu"


def test_mps_is_chosen_when_there_is_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    runtime = select_runtime()
    assert runtime.device.type == "mps" and runtime.amp_dtype is None and not runtime.deterministic


def test_requesting_a_missing_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_runtime("cuda")


def test_to_device_applies_channels_last_only_when_the_runtime_asks():
    x = torch.randn(2, 3, 8, 8)
    plain = Runtime(torch.device("cpu"), None, False, True)
    nhwc = Runtime(torch.device("cpu"), None, True, True)  # the CUDA layout, on the CPU
    assert not to_device(x, plain).is_contiguous(memory_format=torch.channels_last)
    assert to_device(x, nhwc).is_contiguous(memory_format=torch.channels_last)
    conv = to_device(torch.nn.Conv2d(3, 4, 3), nhwc)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert to_device(torch.randn(5, 3), nhwc).shape == (5, 3)  # non-4D tensors untouched


def test_step_generator_depends_only_on_seed_step_and_stream():
    draw = lambda *a: torch.rand(4, generator=step_generator(*a))  # noqa: E731
    assert torch.equal(draw(0, 7), draw(0, 7))
    assert not torch.equal(draw(0, 7), draw(0, 8))
    assert not torch.equal(draw(0, 7), draw(1, 7))
    assert not torch.equal(draw(0, 7, 0), draw(0, 7, 1))


def test_batches_depend_only_on_the_step_and_cover_each_epoch():
    full = StepBatchSampler(10, 4, seed=3, start_step=0, end_step=5)
    late = StepBatchSampler(10, 4, seed=3, start_step=3, end_step=5)
    batches = list(full)
    assert list(late) == batches[3:]  # a resumed sampler yields exactly the same batches
    indices = [i for batch in batches for i, _ in batch]
    assert sorted(indices[:10]) == list(range(10))  # epoch 0: every item once
    assert sorted(indices[10:20]) == list(range(10))
    assert indices[:10] != indices[10:20]  # a new permutation each epoch
    assert len({seed for batch in batches for _, seed in batch}) == 20  # per-sample crop seeds


# -- config ----------------------------------------------------------------------------------------


def test_make_config_applies_overrides_and_hashes_what_shapes_the_weights():
    base = make_config("srcnn", "tiny")
    cfg = make_config("srcnn", "tiny", steps=7, lr=None, **{"data.scale": 3, "model_kwargs.variant": "915"})
    assert (cfg.steps, cfg.lr, cfg.data["scale"], cfg.model_kwargs["variant"]) == (7, base.lr, 3, "915")
    assert cfg.data["lr_patch"] == base.data["lr_patch"]  # dotted keys merge into the preset
    merged = make_config("srcnn", "tiny", data={"scale": 4})
    assert merged.data["lr_patch"] == base.data["lr_patch"] and merged.data["scale"] == 4
    assert len(base.config_hash()) == 12
    assert base.config_hash() == make_config("srcnn", "tiny").config_hash()
    assert cfg.config_hash() != base.config_hash()
    assert make_config("srcnn", "tiny", log_every=1).config_hash() == base.config_hash()
    with pytest.raises(ValueError, match="bogus"):
        make_config("srcnn", "tiny", bogus=1)
    with pytest.raises(ValueError, match="steps"):
        make_config("srcnn", "tiny", steps=0)
    with pytest.raises(ValueError, match="no preset"):
        make_config("srcnn", "huge")


def test_cli_overrides_parse_as_json_when_they_can():
    overrides = parse_overrides(["steps=500", "lr=1e-3", "data.augment=false", "model_kwargs.variant=915"])
    assert overrides == {"steps": 500, "lr": 1e-3, "data.augment": False, "model_kwargs.variant": 915}
    assert make_config("srcnn", "tiny", **parse_overrides(['model_kwargs.variant="915"'])).model_kwargs["variant"] == "915"
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["steps"])


# -- checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_latest_key(lake):
    state = {
        "step": 12,
        "config": {"model": "srcnn", "lr": 1e-3, "data": {"scale": 2}},
        "weights": {"w": torch.randn(3, 4), "b": torch.arange(5)},
        "vocab": ["shoes", "hats"],
        "rng": torch.random.get_rng_state(),
    }
    assert latest_checkpoint_key(lake, "srcnn", "run1") is None
    key = checkpoint_key("srcnn", "run1", 12)
    save_checkpoint(lake, key, state)
    loaded = load_checkpoint(lake, key)
    assert loaded["step"] == 12 and loaded["config"] == state["config"] and loaded["vocab"] == state["vocab"]
    assert torch.equal(loaded["weights"]["w"], state["weights"]["w"])
    assert torch.equal(loaded["rng"], state["rng"])
    save_checkpoint(lake, checkpoint_key("srcnn", "run1", 3), state)
    assert latest_checkpoint_key(lake, "srcnn", "run1") == key  # the highest step, not the newest file
    save_checkpoint(lake, checkpoint_key("srcnn", "run1"), state)
    assert latest_checkpoint_key(lake, "srcnn", "run1") == checkpoint_key("srcnn", "run1")
    assert latest_checkpoint_key(lake, "srcnn", "other-run") is None


class _Payload:
    """Unpickling this creates a file: the shape of a checkpoint crafted to run code on load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_crafted_to_run_code_is_refused(lake, tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "evil": _Payload(marker)}, buffer)
    key = checkpoint_key("srcnn", "evil", 1)
    lake.write_bytes(key, buffer.getvalue())

    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(lake, key)
    assert not marker.exists()

    # The crafted file is live: an unsafe load would have run it.
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert marker.exists()


def test_a_plain_pickle_and_garbage_are_refused(lake):
    lake.write_bytes("checkpoints/x/r/step-00000001.pt", pickle.dumps({"a": 1}, protocol=2))
    lake.write_bytes("checkpoints/x/r/step-00000002.pt", b"not a checkpoint at all")
    for step in (1, 2):
        with pytest.raises(CheckpointError):
            load_checkpoint(lake, checkpoint_key("x", "r", step))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(lake, checkpoint_key("x", "r", 3))


# -- the loop: kill and resume ---------------------------------------------------------------------


def _final_weights(lake, result) -> dict[str, torch.Tensor]:
    return load_checkpoint(lake, result.checkpoint_key)["trainer"]["model"]


def test_kill_and_resume_reproduces_the_uninterrupted_run(lake):
    build_sr_lake(lake, train=4, val=1, size=32)
    config = make_config("espcn", "tiny", steps=8, checkpoint_every=3, log_every=2)

    straight = train_model(config, lake, run="straight")
    assert straight.completed and straight.resumed_from_step is None

    killed = train_model(config, lake, run="killed", stop_after=5)
    assert not killed.completed and killed.checkpoint_key is None and killed.steps_done == 5
    assert latest_checkpoint_key(lake, "espcn", "killed") == checkpoint_key("espcn", "killed", 3)

    # Steps 3 and 4 are redone after the resume: they must come out the same.
    resumed = train_model(config, lake, run="killed")
    assert resumed.completed and resumed.resumed_from_step == 3 and resumed.steps_done == 8

    a, b = _final_weights(lake, straight), _final_weights(lake, resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.curve.rows() == straight.curve.rows()
    # ... and training changed the weights at all (the comparison is not vacuous).
    fresh = make_config("espcn", "tiny", steps=1)
    initial = train_model(fresh, lake, run="initial")
    assert not all(torch.equal(a[k], _final_weights(lake, initial)[k]) for k in a)


def test_a_finished_run_resumes_to_its_result_and_a_changed_config_is_refused(lake):
    build_sr_lake(lake, train=3, val=1, size=32)
    config = make_config("espcn", "tiny", steps=4, checkpoint_every=2)
    events = []
    first = train_model(config, lake, on_log=events.append)
    assert first.run == config.config_hash()
    assert [e.step for e in events] == [4]  # log_every 10 > steps: only the last step logs
    again = train_model(config, lake)
    assert again.resumed_from_step == 4 and again.checkpoint_key == first.checkpoint_key
    assert again.final_losses == first.final_losses and again.seconds == first.seconds

    with pytest.raises(CheckpointError, match="different config"):
        train_model(make_config("espcn", "tiny", steps=6), lake, run=first.run)
    restarted = train_model(make_config("espcn", "tiny", steps=6), lake, run=first.run, resume=False)
    assert restarted.resumed_from_step is None and restarted.steps_done == 6
