"""Contracts of the model-version registry and of the training loss curves.

`models` (manifest_key("models")): one row per registered model version. A version is
`<model>-<UTC YYYYmmddHHMMSS>-<config_hash[:6]>` (e.g. `srcnn-20261127130405-d8d1e6`): sortable by
time within a model, says which config made it at a glance, and is a valid lake key part.
`training_curves` (manifest_key("training_curves")): every step's losses of every version.
"""

from __future__ import annotations

import json

import pyarrow as pa

from catalog_enhance.data_contracts.contracts import POSITIVE, TIMESTAMP, Contract, register
from catalog_enhance.data_contracts.layout import KEY_PART_RE

MODEL_STATUSES = frozenset({"trained", "promoted", "retired"})


def _is_json_object(value: object) -> bool:
    try:
        return isinstance(json.loads(value), dict)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


JSON_OBJECT = (_is_json_object, "not a JSON object")
KEY_PART = (lambda v: isinstance(v, str) and bool(KEY_PART_RE.match(v)), "not a valid key part")

MODELS = register(
    Contract(
        name="model_registry",
        version="1",
        schema=pa.schema(
            [
                pa.field("name", pa.string(), nullable=False),  # model registry name: srcnn, espcn, ...
                pa.field("version", pa.string(), nullable=False),
                pa.field("kind", pa.string(), nullable=False),  # the model kind: sr, gan, cgan, cyclegan, ...
                pa.field("created", TIMESTAMP, nullable=False),
                pa.field("preset", pa.string(), nullable=False),
                pa.field("run", pa.string(), nullable=False),  # checkpoint folder (config hash by default)
                pa.field("config_hash", pa.string(), nullable=False),
                pa.field("config_json", pa.string(), nullable=False),
                pa.field("data_manifest_hash", pa.string(), nullable=False),
                pa.field("code_version", pa.string(), nullable=False),
                pa.field("steps", pa.int64(), nullable=False),
                pa.field("final_losses", pa.string(), nullable=False),  # JSON {loss: value}
                pa.field("metrics", pa.string(), nullable=False),  # JSON {metric: value}, may be {}
                # The one figure to compare versions by: SR = val PSNR gain over bicubic (dB).
                pa.field("val_metric_name", pa.string()),
                pa.field("val_metric", pa.float64()),
                pa.field("metadata_json", pa.string(), nullable=False),  # vocabularies, scale, channels...
                pa.field("checkpoint_key", pa.string(), nullable=False),
                pa.field("curve_key", pa.string()),
                pa.field("train_seconds", pa.float64(), nullable=False),
                pa.field("device", pa.string(), nullable=False),
                pa.field("status", pa.string(), nullable=False),
            ]
        ),
        required=(
            "name", "version", "kind", "created", "preset", "run", "config_hash", "config_json",
            "data_manifest_hash", "code_version", "final_losses", "checkpoint_key", "device", "status",
        ),
        allowed={"status": MODEL_STATUSES},
        checks={
            "version": KEY_PART,
            "kind": KEY_PART,  # a model kind's name (tasks.kinds); any kind a plugin adds
            "config_json": JSON_OBJECT,
            "final_losses": JSON_OBJECT,
            "metrics": JSON_OBJECT,
            "metadata_json": JSON_OBJECT,
            "steps": POSITIVE,
            "train_seconds": (lambda v: v >= 0, "must be >= 0"),
        },
        allow_label_columns=False,
    )
)

TRAINING_CURVES = register(
    Contract(
        name="training_curves",
        version="1",
        schema=pa.schema(
            [
                pa.field("model", pa.string(), nullable=False),
                pa.field("version", pa.string(), nullable=False),
                pa.field("step", pa.int64(), nullable=False),
                pa.field("loss", pa.string(), nullable=False),
                pa.field("value", pa.float64(), nullable=False),
            ]
        ),
        required=("model", "version", "loss"),
        checks={"step": (lambda v: v >= 0, "must be >= 0")},
        allow_label_columns=False,
    )
)
