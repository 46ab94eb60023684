"""Which version is champion: read back from the evaluations manifest, where the gate records it.

The gate (`tasks.evaluate.gate`) decides and records; everything that only needs to know the
current champion (enhancement, `evaluate-sr`, reports) reads it here, below the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake


def read_evaluations(lake: Lake) -> pa.Table:
    """The evaluations manifest, validated; an empty table if nothing was recorded yet."""
    return manifests.read(lake, "evaluations")


@dataclass(frozen=True)
class Champion:
    model_name: str
    model_kind: str
    version: str
    metric: str
    value: float
    dataset_hash: str
    promoted_at: datetime
    reason: str


def current_champion(lake: Lake, model_name_or_kind: str) -> Champion | None:
    """The champion of a model kind ("sr": srcnn and espcn compete) or, given a model name, that
    model's latest promoted version; None if nothing was ever promoted. A name is taken as a kind
    when some decision was recorded for that kind."""
    decisions = [r for r in read_evaluations(lake).to_pylist() if r["record"] == "decision"]
    by = "model_kind" if any(r["model_kind"] == model_name_or_kind for r in decisions) else "model_name"
    rows = [r for r in decisions if r["promoted"] and r[by] == model_name_or_kind]
    if not rows:
        return None
    # Latest promotion wins; among equal timestamps, the one appended last.
    latest = max(enumerate(rows), key=lambda item: (item[1]["evaluated_at"], item[0]))[1]
    return Champion(
        model_name=latest["model_name"], model_kind=latest["model_kind"], version=latest["version"],
        metric=latest["metric"], value=latest["value"], dataset_hash=latest["dataset_hash"],
        promoted_at=latest["evaluated_at"], reason=latest["reason"],
    )
