"""The enhancement manifest (`manifest_key("enhancements")`): the lineage of every enhanced image.

One row per (catalog SKU, model version, params_hash, input image): which normalised input
(`input_sha256`, `input_key`, the SKU's `catalog_version`) was enhanced by which model version
with which parameters (`params_json`, whose hash `params_hash` is also a part of `output_key`),
optionally followed by which CycleGAN version (`style_model_*`, null when no style transform
ran), into which output (key, sha256, size, mode), how long it took and on what device.

`(model_version, params_hash, input_sha256, sku)` identifies a row: the enhancement flow does
the work for a current catalog image only when its row is missing, so a re-run writes nothing
and a new champion version (or new parameters) enhances everything again for itself only.
Several SKUs with the same image share one output object, each with its own row.
"""

from __future__ import annotations

import pyarrow as pa

from catalog_enhance.data_contracts.contracts import POSITIVE, SHA_CHECK, TIMESTAMP, Contract, register
from catalog_enhance.data_contracts.model_registry import JSON_OBJECT

ENHANCEMENT_KEY_COLUMNS = ("model_version", "params_hash", "input_sha256", "sku")


ENHANCEMENTS = register(
    Contract(
        name="enhancements_manifest",
        version="1",
        schema=pa.schema(
            [
                pa.field("sku", pa.string(), nullable=False),
                pa.field("catalog_version", pa.int32(), nullable=False),
                pa.field("input_sha256", pa.string(), nullable=False),  # the normalised PNG's sha256
                pa.field("input_key", pa.string(), nullable=False),
                pa.field("model_name", pa.string(), nullable=False),  # the SR model: srcnn, espcn
                pa.field("model_version", pa.string(), nullable=False),
                pa.field("params_hash", pa.string(), nullable=False),  # of params_json; a part of output_key
                pa.field("params_json", pa.string(), nullable=False),  # scale/target, tiling, style version
                pa.field("style_model_name", pa.string()),  # CycleGAN studio transform, null if none ran
                pa.field("style_model_version", pa.string()),
                pa.field("output_key", pa.string(), nullable=False),
                pa.field("output_sha256", pa.string(), nullable=False),
                pa.field("width", pa.int32(), nullable=False),  # of the output
                pa.field("height", pa.int32(), nullable=False),
                pa.field("mode", pa.string(), nullable=False),  # RGB | RGBA (alpha kept)
                pa.field("input_width", pa.int32(), nullable=False),
                pa.field("input_height", pa.int32(), nullable=False),
                pa.field("seconds", pa.float64(), nullable=False),  # decode + enhance + encode of the image
                pa.field("device", pa.string(), nullable=False),
                pa.field("created_at", TIMESTAMP, nullable=False),
                pa.field("run_id", pa.string()),
            ]
        ),
        required=(
            "sku", "catalog_version", "input_sha256", "input_key", "model_name", "model_version",
            "params_hash", "params_json", "output_key", "output_sha256", "width", "height", "mode",
            "input_width", "input_height", "seconds", "device", "created_at",
        ),
        allowed={"mode": frozenset({"RGB", "RGBA"})},
        checks={
            "input_sha256": SHA_CHECK,
            "output_sha256": SHA_CHECK,
            "params_json": JSON_OBJECT,
            "catalog_version": POSITIVE,
            "width": POSITIVE,
            "height": POSITIVE,
            "input_width": POSITIVE,
            "input_height": POSITIVE,
            "seconds": (lambda v: v >= 0, "must be >= 0"),
        },
        allow_label_columns=False,
    )
)
