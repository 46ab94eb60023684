"""Housekeeping of the lake: what killed runs leave behind.

A local lake writes every object to a temporary key under `_tmp/` first and renames it onto its
final key (`storage.Lake.write_bytes`); a run killed between the two leaves the temporary object
behind, and nothing else ever reads or removes it. `remove_stale_temporaries` deletes those older
than a given age (a day by default, `CE_TMP_MAX_AGE_HOURS`): a younger one may belong to a write
still in progress in another process, so it is left alone.

`housekeep` is the nightly's whole pass: those temporaries, then the manifests' upkeep (merge
small parts into one, then delete parts and log entries no recent snapshot needs; see
`tasks/lake/manifests/upkeep.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from catalog_enhance.data_contracts.layout import TMP_PREFIX
from catalog_enhance.tasks.lake.manifests.upkeep import CompactResult, VacuumResult, compact_all, vacuum
from catalog_enhance.tasks.lake.storage import Lake

log = logging.getLogger(__name__)


@dataclass
class TmpCleanup:
    """What one pass over `_tmp/` found and removed."""

    removed: list[str] = field(default_factory=list)  # paths under the lake root
    kept: int = 0  # younger than the age limit (possibly a write in progress)
    bytes_removed: int = 0
    errors: list[str] = field(default_factory=list)  # "path: reason" (already gone, no permission...)

    def counts(self) -> dict[str, int]:
        return {"temporaries removed": len(self.removed), "temporaries kept (recent)": self.kept,
                "bytes removed": self.bytes_removed, "removal errors": len(self.errors)}


def _modified(info: dict) -> datetime | None:
    """The modification time fsspec reports: `mtime` (local, seconds) or `LastModified` (S3)."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def remove_stale_temporaries(lake: Lake, max_age: timedelta, *, now: datetime | None = None) -> TmpCleanup:
    """Delete every object under the lake's `_tmp/` last modified more than `max_age` before `now`."""
    if max_age < timedelta(0):
        raise ValueError(f"max_age must not be negative, got {max_age}")
    now = now or datetime.now(UTC)
    result = TmpCleanup()
    base = f"{lake.root}/{TMP_PREFIX}"
    if not lake.fs.exists(base):
        return result
    for path, info in sorted(lake.fs.find(base, detail=True).items()):
        modified = _modified(info)
        if modified is None or now - modified <= max_age:  # unknown age: never guess it is stale
            result.kept += 1
            continue
        try:
            lake.fs.rm_file(path)
        except (FileNotFoundError, PermissionError, OSError) as error:  # another cleaner, or not ours
            result.errors.append(f"{path}: {type(error).__name__}: {error}")
            continue
        result.removed.append(path)
        result.bytes_removed += int(info.get("size") or 0)
    if result.removed:
        log.info("removed %d temporary object(s) older than %s from %s/%s", len(result.removed), max_age,
                 lake.root_uri, TMP_PREFIX)
    return result


@dataclass
class Housekeeping:
    """One nightly pass: stale temporaries removed, manifests compacted and vacuumed."""

    temporaries: TmpCleanup
    compacted: list[CompactResult] = field(default_factory=list)
    vacuumed: list[VacuumResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            **self.temporaries.counts(),
            "manifests compacted": sum(r.compacted for r in self.compacted),
            "manifest parts deleted": sum(len(r.parts_deleted) for r in self.vacuumed),
            "manifest log entries deleted": sum(len(r.log_entries_deleted) for r in self.vacuumed),
        }


def housekeep(lake: Lake, tmp_max_age: timedelta, *, now: datetime | None = None) -> Housekeeping:
    """Remove stale temporaries, then compact every manifest with many parts and vacuum them all."""
    temporaries = remove_stale_temporaries(lake, tmp_max_age, now=now)
    return Housekeeping(temporaries, compact_all(lake), vacuum(lake, now=now))
