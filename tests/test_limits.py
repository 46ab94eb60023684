"""Time limits and retries (flows/limits.py): every flow and task has a timeout, a hung stage ends
the night instead of holding it, and a refused checkpoint is never retried."""

from __future__ import annotations

import csv
import importlib
import io
import pkgutil
import threading
import time

import pytest
import torch
from PIL import Image
from prefect import Flow, Task
from prefect.states import Failed
from prefect.task_engine import TaskRunTimeoutError
from sr_lake import build_sr_lake, photo_crops

import catalog_enhance.flows
from catalog_enhance.data_contracts.layout import checkpoint_key
from catalog_enhance.flows.limits import TIMEOUTS, retry_unless_refused, retryable, timeout
from catalog_enhance.tasks.catalog.labels import NotTrainableHere
from catalog_enhance.tasks.lake.checkpoints import CheckpointError
from catalog_enhance.tasks.lake.settings import ConfigError, load_settings
from catalog_enhance.tasks.train.config import make_config


def flows_and_tasks() -> dict[str, Flow | Task]:
    found = {}
    for info in pkgutil.iter_modules(catalog_enhance.flows.__path__):
        module = importlib.import_module(f"catalog_enhance.flows.{info.name}")
        found.update({obj.name: obj for obj in vars(module).values() if isinstance(obj, Flow | Task)})
    return found


def test_every_flow_and_task_has_its_time_limit():
    found = flows_and_tasks()
    assert len(found) >= 10 and set(found) <= set(TIMEOUTS)
    for name, item in found.items():
        assert item.timeout_seconds == TIMEOUTS[name], name
    # A night ends before the next one is due (daily schedule, ENQUEUE limit).
    assert TIMEOUTS["nightly-enhancement"] < 24 * 3600


def test_ce_timeouts_override_and_are_checked(monkeypatch):
    monkeypatch.setenv("CE_TIMEOUTS", '{"train-model": 60}')
    settings = load_settings()
    assert timeout("train-model", settings) == 60 and timeout("make-pairs", settings) == TIMEOUTS["make-pairs"]
    monkeypatch.setenv("CE_TIMEOUTS", '{"train-modle": 60}')
    with pytest.raises(ConfigError, match="unknown stage.*train-modle"):
        timeout("train-model", load_settings())
    monkeypatch.setenv("CE_TIMEOUTS", '{"train-model": 0}')
    with pytest.raises(ConfigError, match="must be positive"):
        timeout("train-model", load_settings())


def test_what_is_retried():
    refused = CheckpointError("checkpoint 'x' refused: it holds objects other than tensors")
    wrapped = RuntimeError("training failed")
    wrapped.__cause__ = refused
    for error in (refused, wrapped, NotTrainableHere("gan", "no rows"), TaskRunTimeoutError("Scope timed out")):
        assert not retryable(error), error
        assert not retry_unless_refused(None, None, Failed(data=error))
    for error in (ConnectionResetError(), OSError("slow down"), RuntimeError("CUDA error: unspecified launch failure")):
        assert retryable(error) and retry_unless_refused(None, None, Failed(data=error))


class _Payload:
    """Unpickling this would create a file: a checkpoint crafted to run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_refused_resume_checkpoint_fails_training_once_and_is_not_retried(lake, tmp_path, prefect_harness,
                                                                            monkeypatch):
    from catalog_enhance.flows.train import train_models
    from catalog_enhance.tasks.train import loop

    build_sr_lake(lake, train=4, val=2, size=32)
    run = make_config("srcnn", "tiny").config_hash()  # the run the task resumes
    buffer = io.BytesIO()
    torch.save({"step": 1, "evil": _Payload(tmp_path / "pwned")}, buffer)
    lake.write_bytes(checkpoint_key("srcnn", run, 1), buffer.getvalue())
    loads = []

    def counting(lake_, key):
        loads.append(key)
        return real(lake_, key)

    real = loop.load_checkpoint
    monkeypatch.setattr(loop, "load_checkpoint", counting)
    summary = train_models(models=["srcnn"], preset="tiny", lake_url=lake.root, fail_on_error=False)
    assert summary.trained == [] and "refused" in summary.failed["srcnn"]
    assert loads == [checkpoint_key("srcnn", run, 1)]  # one attempt: the task has a retry, not for this
    assert not (tmp_path / "pwned").exists()


def tiny_feed(shop) -> str:
    shop.mkdir()
    with (shop / "feed.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "image_uri", "category", "style"])
        for i, crop in enumerate(photo_crops(2, 48)):
            Image.fromarray(crop).save(shop / f"{i}.png")
            writer.writerow([f"sku-{i}", f"{i}.png", "toys", "studio"])
    return str(shop / "feed.csv")


def test_a_hung_stage_times_out_and_fails_the_night_without_a_retry(tmp_path, prefect_harness, monkeypatch):
    from catalog_enhance.flows import pairs
    from catalog_enhance.flows.nightly import nightly

    shop = tmp_path / "shop"
    feed = tiny_feed(shop)
    monkeypatch.setenv("CE_TIMEOUTS", '{"make-pairs": 3}')
    calls, release = [], threading.Event()

    def hang(*args, **kwargs):  # a stage that never returns (a stuck mount, a dead socket...)
        calls.append(time.monotonic())
        while not release.wait(0.05):
            pass

    monkeypatch.setattr(pairs, "plan_pairs", hang)
    started = time.monotonic()
    try:
        state = nightly(feed=feed, lake_url=str(tmp_path / "lake"), models=["srcnn"], preset="tiny",
                        return_state=True)
    finally:
        release.set()
    assert state.is_failed(), state.message
    assert "night failed: pairs failed: time limit exceeded (Scope timed out after 3.0 second(s)." in state.message
    assert len(calls) == 1  # a stage that hung once is not run again
    print(f"night failed {time.monotonic() - started:.1f} s after it started: {state.message}")


def test_a_stage_that_failed_on_a_passing_error_is_run_again_and_the_night_goes_on(tmp_path, prefect_harness,
                                                                                    monkeypatch):
    from catalog_enhance.flows import nightly as nightly_module, pairs

    monkeypatch.setattr(nightly_module, "RETRY_DELAY_SECONDS", 0)
    real, calls = pairs.plan_pairs, []

    def flaky(*args, **kwargs):  # the lake's endpoint dropped the connection once
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("connection reset by peer")
        return real(*args, **kwargs)

    monkeypatch.setattr(pairs, "plan_pairs", flaky)
    state = nightly_module.nightly(feed=tiny_feed(tmp_path / "shop"), lake_url=str(tmp_path / "lake"),
                                   models=["srcnn"], preset="tiny", return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert len(calls) == 2 and summary.pairs.pairs_written > 0 and [r["name"] for r in summary.training] == ["srcnn"]
