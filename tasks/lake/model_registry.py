"""The model-version registry: one Parquet manifest of trained versions, plus their loss curves.

`register_version(lake, result)` appends a row for a finished `TrainResult` (and its every-step
losses to the training-curves manifest), validated against the contracts in
`data_contracts/model_registry.py`; both are append-only manifests (`lake.manifests`: a part and
a log entry committed by compare-and-swap, so concurrent registrations all land).
Registering the same finished run again (a Prefect retry after the training completed) returns
the existing row instead of adding a duplicate.

What is registered is any finished run with the attributes of `FinishedRun` (the trainer's
`TrainResult` is one), so this plumbing never imports the training stage. Both manifests are
written through `lake.manifests`, as changes applied to the manifest as it is at write time.
"""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import datetime, timezone
from collections.abc import Set
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from catalog_enhance.data_contracts.model_registry import MODELS, TRAINING_CURVES
from catalog_enhance.models import get_spec
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake

# The registry's comparable figure, first one a trainer reports: SR gain over bicubic (dB), ...
VAL_METRIC_PREFERENCE = ("val_psnr_gain", "val_fid", "val_kid")
# One registration at a time per process: the version name is chosen against the registry as read.
_LOCK = threading.Lock()


class RunConfig(Protocol):
    model: str
    preset: str

    def config_hash(self) -> str: ...

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


class RunCurve(Protocol):
    steps: list[int]
    names: list[str]
    values: list[float]


class FinishedRun(Protocol):
    """What registering a run needs of it (train.loop.TrainResult has all of it)."""

    # Read-only (properties): a run may hold any config and curve that have these members.
    @property
    def config(self) -> RunConfig: ...

    run: str
    completed: bool
    steps_done: int
    final_losses: dict[str, float]
    checkpoint_key: str | None
    seconds: float

    @property
    def curve(self) -> RunCurve: ...

    curve_key: str | None
    metrics: dict[str, float]
    metadata: dict
    data_manifest_hash: str
    device: str


@lru_cache(maxsize=1)
def code_version() -> str:
    """`git describe --always --dirty` of the source tree if it is a git checkout, else the
    installed package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        )
        if out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"catalog-enhance=={importlib_metadata.version('catalog-enhance')}"
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def new_version(name: str, config_hash: str, created: datetime, taken: Set[str] = frozenset()) -> str:
    base = f"{name}-{created.astimezone(timezone.utc):%Y%m%d%H%M%S}-{config_hash[:6]}"
    version, n = base, 1
    while version in taken:  # two registrations of one config within a second
        n += 1
        version = f"{base}-{n}"
    return version


def read_registry(lake: Lake) -> pa.Table:
    """The whole registry (validated); empty with the contract's schema if none exists yet."""
    return manifests.read(lake, "models")


def read_curves(lake: Lake, name: str | None = None, version: str | None = None) -> pa.Table:
    table = manifests.read(lake, "training_curves")
    if name is not None:
        table = table.filter(pc.equal(table["model"], name))
    if version is not None:
        table = table.filter(pc.equal(table["version"], version))
    return table


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _val_metric(metrics: dict[str, float]) -> tuple[str | None, float | None]:
    for name in VAL_METRIC_PREFERENCE:
        if name in metrics:
            return name, float(metrics[name])
    return None, None


def register_version(lake: Lake, result: FinishedRun, *, status: str = "trained",
                     created: datetime | None = None) -> dict:
    """Append a version row for a completed training run (and its loss curve); returns the row."""
    if not result.completed or result.checkpoint_key is None:
        raise ValueError(f"{result.config.model}: run {result.run} did not complete; only finished runs are registered")
    config = result.config
    def registered(registry: pa.Table) -> dict | None:  # idempotent: the same finished run is one version
        for row in registry.to_pylist():
            if (row["name"], row["run"], row["checkpoint_key"], row["steps"]) == (
                config.model, result.run, result.checkpoint_key, result.steps_done
            ) and abs(row["train_seconds"] - result.seconds) < 1e-6:
                return row
        return None

    with _LOCK:
        registry = read_registry(lake)
        if (row := registered(registry)) is not None:
            return row
        created = created or datetime.now(timezone.utc)
        version = new_version(config.model, config.config_hash(), created, set(registry["version"].to_pylist()))
        metric_name, metric = _val_metric(result.metrics)
        row = {
            "name": config.model,
            "version": version,
            "kind": get_spec(config.model).kind,
            "created": created,
            "preset": config.preset,
            "run": result.run,
            "config_hash": config.config_hash(),
            "config_json": _json(config.model_dump(mode="json")),
            "data_manifest_hash": result.data_manifest_hash,
            "code_version": code_version(),
            "steps": result.steps_done,
            "final_losses": _json(result.final_losses),
            "metrics": _json(result.metrics),
            "val_metric_name": metric_name,
            "val_metric": metric,
            "metadata_json": _json(result.metadata),
            "checkpoint_key": result.checkpoint_key,
            "curve_key": result.curve_key,
            "train_seconds": float(result.seconds),
            "device": result.device,
            "status": status,
        }
        new_row = MODELS.table([row])
        # Curves first: a registered version always has its curve (an orphan curve is harmless).
        curve = result.curve
        curve_rows = TRAINING_CURVES.table(
            pa.table({
                "model": pa.array([config.model] * len(curve.steps), pa.string()),
                "version": pa.array([version] * len(curve.steps), pa.string()),
                "step": pa.array(curve.steps, pa.int64()),
                "loss": pa.array(curve.names, pa.string()),
                "value": pa.array(curve.values, pa.float64()),
            })
        )
        manifests.append(lake, "training_curves", curve_rows)
        already: list[dict] = []

        def change(current: pa.Table) -> pa.Table | None:
            # Checked again at commit time: another process (a retry of this task elsewhere)
            # may have registered this very run meanwhile.
            already[:] = [r for r in [registered(current)] if r is not None]
            return None if already else new_row

        manifests.commit(lake, "models", change)
        return already[0] if already else new_row.to_pylist()[0]


def list_versions(lake: Lake, name: str | None = None) -> list[dict]:
    """Registered versions, oldest first (optionally of one model)."""
    table = read_registry(lake)
    if name is not None:
        table = table.filter(pc.equal(table["name"], name))
    return table.sort_by([("created", "ascending"), ("version", "ascending")]).to_pylist()


def latest_version(lake: Lake, name: str, *, status: str | None = None) -> dict | None:
    """The newest registered version of `name` (optionally only with `status`), else None."""
    rows = [r for r in list_versions(lake, name) if status is None or r["status"] == status]
    return rows[-1] if rows else None
