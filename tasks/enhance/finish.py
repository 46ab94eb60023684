"""Finishing a run: the chunks' rows appended to the enhancements manifest, their records to
the quarantine log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from catalog_enhance.data_contracts.enhancements import ENHANCEMENT_KEY_COLUMNS
from catalog_enhance.tasks.enhance.chunk import ChunkResult
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake


@dataclass
class FinishResult:
    total: ChunkResult
    rows_added: int
    manifest_written: bool
    quarantine_appended: int


def finish_enhancement(lake: Lake, results: Iterable[ChunkResult], *, run_id: str,
                       now: datetime | None = None) -> FinishResult:
    """Merge the chunks: append their rows to the manifest (validated, written atomically, only
    when there is something new) and their records to the quarantine log (de-duplicated)."""
    total = ChunkResult()
    for result in results:
        total.extend(result)
    added = manifests.append(lake, "enhancements", total.rows, key=ENHANCEMENT_KEY_COLUMNS) if total.rows else 0
    appended = 0
    if total.quarantine:
        appended = manifests.quarantine(lake, total.quarantine, run_id=run_id, now=now or datetime.now(timezone.utc))
    return FinishResult(total, added, added > 0, appended)
