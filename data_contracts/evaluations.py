"""The evaluations manifest (`manifest_key("evaluations")`): every measurement and every gate decision.

One table, two kinds of row (`record`):
- "evaluation": one metric of one model version on one scope ("overall", "category=shoes",
  "scale=2", ...), with the baseline's value on the same data and the dataset's hash;
- "decision": the quality gate's verdict on a version for its model kind's primary metric, with
  the champion it was compared to, whether it was promoted, and the reason (the numbers).
The current champion of a kind is the version of its latest decision row with `promoted` true.
"""

from __future__ import annotations

import math
import re

import pyarrow as pa

from catalog_enhance.data_contracts.contracts import TIMESTAMP, Contract, register

EVALUATION_RECORDS = frozenset({"evaluation", "decision"})


# The scopes a summary shows: the whole test set ("overall"), one scale ("scale=2", not
# "scale=2,category=hats") and the feature extractor's own figure.
_HEADLINE_SCOPE = re.compile(r"overall|feature_extractor|scale=\d+")


def is_headline_scope(scope: str) -> bool:
    """A scope worth a summary line or a history plot, rather than a per-label breakdown."""
    return _HEADLINE_SCOPE.fullmatch(scope) is not None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


EVALUATIONS = register(
    Contract(
        name="evaluations_manifest",
        version="1",
        schema=pa.schema(
            [
                pa.field("record", pa.string(), nullable=False),  # evaluation | decision
                pa.field("model_name", pa.string(), nullable=False),  # registry name: srcnn, espcn, gan...
                pa.field("model_kind", pa.string(), nullable=False),  # sr | gan | cgan | cyclegan
                pa.field("version", pa.string(), nullable=False),
                pa.field("metric", pa.string(), nullable=False),  # psnr_y, ssim_y, psnr_y_gain, fid, ...
                pa.field("scope", pa.string(), nullable=False),  # overall | category=x | scale=2 | ...
                pa.field("split", pa.string()),  # test, val, or a folder name for user photos
                pa.field("value", pa.float64()),  # NaN/None when the metric could not be computed
                pa.field("higher_is_better", pa.bool_(), nullable=False),
                pa.field("baseline", pa.string()),  # what the baseline is: bicubic, identity, ...
                pa.field("baseline_value", pa.float64()),
                # Decision rows: the champion it was compared with (None: there was none).
                pa.field("champion_version", pa.string()),
                pa.field("champion_value", pa.float64()),
                pa.field("promoted", pa.bool_()),
                pa.field("reason", pa.string()),
                pa.field("dataset_hash", pa.string(), nullable=False),
                pa.field("evaluated_at", TIMESTAMP, nullable=False),
                pa.field("run_id", pa.string()),
            ]
        ),
        required=("record", "model_name", "model_kind", "version", "metric", "scope",
                  "higher_is_better", "dataset_hash", "evaluated_at"),
        allowed={"record": EVALUATION_RECORDS},
        checks={
            "baseline_value": (_finite, "must be a finite number"),
            "champion_value": (_finite, "must be a finite number"),
        },
        allow_label_columns=False,
    )
)
