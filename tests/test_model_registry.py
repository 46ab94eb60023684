"""The model-version registry and its loss curves; the train-models flow registering a version."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from PIL import Image
from sr_lake import build_sr_lake

from catalog_enhance.data_contracts.contracts import CONTRACTS, ContractError
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.data_contracts.layout import report_key
from catalog_enhance.data_contracts.model_registry import MODELS, TRAINING_CURVES
from catalog_enhance.tasks.lake.model_registry import (
    code_version,
    latest_version,
    list_versions,
    read_curves,
    read_registry,
    register_version,
)
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.lake.checkpoints import load_checkpoint
from catalog_enhance.tasks.train.loop import LossCurve, train_model



@pytest.fixture()
def sr_lake(lake):
    build_sr_lake(lake, train=3, val=1, size=32)
    return lake


def test_contracts_are_registered():
    assert CONTRACTS["model_registry"] is MODELS and CONTRACTS["training_curves"] is TRAINING_CURVES


def test_register_read_back_and_latest(sr_lake):
    lake = sr_lake
    assert read_registry(lake).num_rows == 0 and latest_version(lake, "espcn") is None
    result = train_model(make_config("espcn", "tiny", steps=6), lake)
    created = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    row = register_version(lake, result, created=created)

    assert row["version"] == f"espcn-20261127120000-{result.config.config_hash()[:6]}"
    assert (row["name"], row["kind"], row["preset"], row["steps"], row["status"]) == ("espcn", "sr", "tiny", 6, "trained")
    assert row["checkpoint_key"] == result.checkpoint_key and lake.exists(row["checkpoint_key"])
    assert row["data_manifest_hash"] == result.data_manifest_hash and row["code_version"] == code_version()
    assert json.loads(row["config_json"]) == result.config.model_dump(mode="json")
    assert json.loads(row["final_losses"]).keys() == {"mse"}
    assert row["val_metric_name"] == "val_psnr_gain"
    assert row["val_metric"] == pytest.approx(result.metrics["val_psnr_gain"])
    assert json.loads(row["metadata_json"])["scale"] == 2
    # The checkpoint the row points at is the trained model.
    assert load_checkpoint(lake, row["checkpoint_key"])["step"] == 6

    stored = manifests.read(lake, "models")
    assert MODELS.validate(stored) == [] and MODELS.stored_version(stored) == MODELS.version
    curves = read_curves(lake, "espcn", row["version"])
    assert TRAINING_CURVES.validate(manifests.read(lake, "training_curves")) == []
    assert curves["step"].to_pylist() == list(range(6)) and set(curves["loss"].to_pylist()) == {"mse"}

    # Registering the same finished run again (a retried task) does not add a version.
    assert register_version(lake, result)["version"] == row["version"]
    assert read_registry(lake).num_rows == 1 and read_curves(lake).num_rows == 6

    # A new run of another config is a new, later version.
    other = train_model(make_config("espcn", "tiny", steps=4), lake)
    later = register_version(lake, other, created=datetime(2026, 11, 28, tzinfo=timezone.utc))
    assert [r["version"] for r in list_versions(lake, "espcn")] == [row["version"], later["version"]]
    assert latest_version(lake, "espcn")["version"] == later["version"]
    assert latest_version(lake, "srcnn") is None
    assert read_curves(lake).num_rows == 10


def test_unfinished_runs_are_not_registered(sr_lake):
    killed = train_model(make_config("espcn", "tiny", steps=6), sr_lake, stop_after=2)
    with pytest.raises(ValueError, match="did not complete"):
        register_version(sr_lake, killed)
    assert read_registry(sr_lake).num_rows == 0


def test_the_contract_rejects_bad_rows():
    good = {
        "name": "srcnn", "version": "srcnn-20261127120000-abcdef", "kind": "sr",
        "created": datetime(2026, 11, 27, tzinfo=timezone.utc), "preset": "cpu", "run": "abcdef123456",
        "config_hash": "abcdef123456", "config_json": "{}", "data_manifest_hash": "00ff",
        "code_version": "git:e5d8a16", "steps": 10, "final_losses": '{"mse": 0.1}', "metrics": "{}",
        "val_metric_name": None, "val_metric": None, "metadata_json": "{}",
        "checkpoint_key": "checkpoints/srcnn/abcdef123456/final.pt", "curve_key": None,
        "train_seconds": 1.5, "device": "cpu (fp32)", "status": "trained",
    }
    assert MODELS.table([good]).num_rows == 1
    for column, bad, reason in [
        ("status", "shiny", "not in"),
        ("final_losses", "mse=0.1", "JSON"),
        ("version", "../escape", "key part"),
        ("steps", 0, "> 0"),
        ("kind", "sr/..", "key part"),
        ("checkpoint_key", "", "missing"),
    ]:
        with pytest.raises(ContractError, match=reason):
            MODELS.table([{**good, column: bad}])
    with pytest.raises(ContractError, match="missing column"):
        MODELS.check(pa.table({"name": ["srcnn"]}))


def test_train_models_flow_trains_and_registers(prefect_harness, tmp_path):
    from catalog_enhance.flows.train import train_models

    lake_url = str(tmp_path / "flow-lake")
    lake = Lake.from_url(lake_url)
    build_sr_lake(lake, train=3, val=1, size=32)
    rows = train_models(models=["srcnn"], preset="tiny", steps=20, lake_url=lake_url).trained
    assert [r["name"] for r in rows] == ["srcnn"] and rows[0]["steps"] == 20
    assert latest_version(lake, "srcnn")["version"] == rows[0]["version"]
    plot = lake.read_bytes(report_key(rows[0]["version"], "loss_curve.png"))
    assert Image.open(io.BytesIO(plot)).format == "PNG"

    # One model this catalog cannot train (no pairs at x3) fails the flow, after the others ran and
    # registered; the nightly's `fail_on_error=False` gets the same as a summary instead.
    with pytest.raises(Exception, match="training failed for 1 of 2 model.*espcn skipped: the pairs manifest has no train pairs at x3"):
        train_models(models=["espcn", "srcnn"], preset="tiny", steps=5, lake_url=lake_url,
                     overrides={"espcn": {"data.scale": 3}})
    assert len(list_versions(lake, "srcnn")) == 2 and list_versions(lake, "espcn") == []
    summary = train_models(models=["espcn"], preset="tiny", steps=5, lake_url=lake_url,
                           overrides={"espcn": {"data.scale": 3}}, fail_on_error=False)
    assert (summary.trained, summary.failed) == ([], {})
    assert summary.skipped == {"espcn": "the pairs manifest has no train pairs at x3 with the bicubic degradation "
                                       "(catalog-enhance pairs --degradation bicubic)"}


def test_flow_rejects_unknown_models_and_bad_overrides_before_training(prefect_harness, tmp_path):
    from catalog_enhance.flows.train import train_models

    with pytest.raises(ValueError, match="unknown model"):
        train_models(models=["srcnn", "nope"], preset="tiny", lake_url=str(tmp_path / "l"))
    with pytest.raises(ValueError, match="bogus"):
        train_models(models=["srcnn"], preset="tiny", lake_url=str(tmp_path / "l"), overrides={"bogus": 1})


def test_curve_table_and_plot_helpers():
    from catalog_enhance.flows.train import artifact_key, curve_frame, curve_table
    from catalog_enhance.tasks.report.plots import figure_png, plot_training_curves

    curve = LossCurve()
    for step in range(200):
        curve.add(step, {"mse": 1.0 / (step + 1), "d_loss": 0.5})
    table = curve_table(curve, max_rows=20)
    assert len(table) == 20 and table[-1]["step"] == 200
    assert table[0]["mse"] > table[-1]["mse"] and all(r["d_loss"] == 0.5 for r in table)
    assert Image.open(io.BytesIO(figure_png(plot_training_curves(curve_frame(curve, "m", "v1"))))).size[0] > 100
    assert artifact_key("train", "CGAN_v2", "loss curve") == "train-cgan-v2-loss-curve"
