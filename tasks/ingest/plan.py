"""Ingestion planning: which feed rows to ingest, which to quarantine before any I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from catalog_enhance.data_contracts.contracts import CONDITION_COLUMNS, FEED
from catalog_enhance.tasks.sources.feeds import FeedRow

STAGE = "ingest"


@dataclass(frozen=True)
class WorkItem:
    row: FeedRow
    previous: dict | None  # the latest catalog row of this SKU, None for a new SKU


@dataclass
class Plan:
    items: list[WorkItem]
    quarantined: list[dict]  # quarantine records (without run_id / time yet)
    duplicates_dropped: int = 0  # identical repeated rows, silently merged


def quarantine_record(row: FeedRow, reason: str, detail: str) -> dict:
    return {
        "stage": STAGE,
        "sku": row.sku,
        "feed_row": row.feed_row,
        "image_uri": row.image_uri,
        "reason": reason,
        "detail": detail,
    }


def plan_ingestion(rows: Iterable[FeedRow], current: Mapping[str, dict]) -> Plan:
    """Quarantine rows that cannot be ingested, merge identical duplicates, attach each SKU's
    latest catalog row (`current`, from `latest_by_sku`) for the incremental check."""
    quarantined: list[dict] = []
    valid: dict[str, list[FeedRow]] = defaultdict(list)
    for row in rows:
        where = f"row {row.feed_row}"
        if row.problem:
            quarantined.append(quarantine_record(row, "malformed_row", f"{where}: {row.problem}"))
            continue
        missing = [c for c in FEED.required if getattr(row, c) is None]
        fields = [c for c in missing if c not in CONDITION_COLUMNS]
        if fields:
            quarantined.append(quarantine_record(row, "missing_field", f"{where}: missing {', '.join(fields)}"))
        elif missing:
            quarantined.append(
                quarantine_record(row, "missing_label", f"{where} (SKU {row.sku}): missing {', '.join(missing)}")
            )
        else:
            assert row.sku is not None  # a required field: a row without one is quarantined above
            valid[row.sku].append(row)

    items: list[WorkItem] = []
    dropped = 0
    for sku, group in valid.items():
        distinct = {(r.image_uri, tuple(sorted(r.conditions().items()))) for r in group}
        if len(distinct) > 1:
            differ = [
                name for name in ("image_uri", *group[0].conditions())
                if len({r.image_uri if name == "image_uri" else r.conditions().get(name) for r in group}) > 1
            ]
            numbers = ", ".join(str(r.feed_row) for r in group)
            for r in group:
                quarantined.append(quarantine_record(
                    r, "duplicate_conflict", f"SKU {sku} is in rows {numbers} with different {', '.join(differ)}"
                ))
            continue
        dropped += len(group) - 1
        items.append(WorkItem(group[0], current.get(sku)))
    return Plan(items=items, quarantined=quarantined, duplicates_dropped=dropped)
