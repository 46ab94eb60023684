"""Keeping append-only manifests small: compaction and vacuum (the nightly's housekeeping).

`compact` merges a manifest's parts into one, as a commit like any other (log entry N+1 by
put-if-absent): a compaction that loses the race re-reads and tries again a few times, then gives
up harmlessly (the parts are still there; the next night compacts). Readers of the snapshot it
replaced keep reading the old parts, which stay until `vacuum`. A legacy single-file manifest is
migrated by the same commit.

`vacuum` deletes what no recent snapshot names: log entries beyond the last `keep_log`, parts
named by none of the kept entries (orphans of killed writers, parts compacted away), and the
legacy file once migrated; only objects older than `older_than` (never less than twice the commit
window), so a reader or a commit still working on an older snapshot is not broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from catalog_enhance.data_contracts.layout import (
    MANIFEST_KEYS,
    legacy_manifest_key,
    manifest_key,
    manifest_log_key,
    manifest_parts_prefix,
)
from catalog_enhance.tasks.lake.manifests import store
from catalog_enhance.tasks.lake.storage import Lake

# A manifest with at least this many parts is compacted by `compact_all`.
COMPACT_MIN_PARTS = 16
COMPACT_ATTEMPTS = 5
# Log entries `vacuum` always keeps (the newest), whatever their age.
KEEP_LOG_ENTRIES = 10
VACUUM_OLDER_THAN = timedelta(hours=6)


@dataclass
class CompactResult:
    name: str
    compacted: bool
    parts_before: int
    parts_after: int
    rows: int
    reason: str = ""


def compact(lake: Lake, name: str, *, min_parts: int = COMPACT_MIN_PARTS,
            attempts: int = COMPACT_ATTEMPTS) -> CompactResult:
    """Merge the manifest's parts into one part (the latest row per key where rows are updated);
    a legacy single file is migrated into the log. Nothing is lost if another writer wins."""
    with store._lock(lake, name):
        snap = store.snapshot(lake, name)
        for attempt in range(1, attempts + 1):
            if snap.legacy:
                written: list[str] = []
                parts, part_rows = store._base_parts(lake, snap, written)
                committed = store.try_commit(lake, snap, parts, part_rows, rows=sum(part_rows), operation="migrate")
                if committed is not None:
                    return CompactResult(name, True, 1, 1, sum(part_rows), "migrated")
            else:
                if len(snap.parts) < max(2, min_parts):
                    return CompactResult(name, False, len(snap.parts), len(snap.parts), snap.rows,
                                         f"{len(snap.parts)} part(s), compacted from {max(2, min_parts)}")
                table = store.read_snapshot(lake, snap)
                part = store.write_part(lake, name, table)
                written = [part]
                committed = store.try_commit(lake, snap, [part], [table.num_rows], rows=table.num_rows,
                                             operation="compact")
                if committed is not None:
                    store._remember(lake, name, part, table)
                    return CompactResult(name, True, len(snap.parts), 1, table.num_rows, "compacted")
            store._discard(lake, written)
            store.backoff(attempt)
            snap = store.snapshot(lake, name)
        return CompactResult(name, False, len(snap.parts), len(snap.parts), snap.rows,
                             f"other writers committed first {attempts} times; left for the next run")


def compact_all(lake: Lake, *, min_parts: int = COMPACT_MIN_PARTS) -> list[CompactResult]:
    """Compact (and migrate) every manifest that needs it."""
    return [compact(lake, name, min_parts=min_parts) for name in MANIFEST_KEYS if store.exists(lake, name)]


@dataclass
class VacuumResult:
    name: str
    log_entries_deleted: list[str] = field(default_factory=list)
    parts_deleted: list[str] = field(default_factory=list)
    legacy_deleted: bool = False


def vacuum(lake: Lake, *, older_than: timedelta = VACUUM_OLDER_THAN, keep_log: int = KEEP_LOG_ENTRIES,
           now: datetime | None = None) -> list[VacuumResult]:
    """Delete unreferenced parts, old log entries and migrated legacy files of every manifest."""
    return [vacuum_manifest(lake, name, older_than=older_than, keep_log=keep_log, now=now)
            for name in MANIFEST_KEYS]


def vacuum_manifest(lake: Lake, name: str, *, older_than: timedelta = VACUUM_OLDER_THAN,
                    keep_log: int = KEEP_LOG_ENTRIES, now: datetime | None = None) -> VacuumResult:
    result = VacuumResult(name)
    now = now or datetime.now(timezone.utc)
    safe_age = max(older_than, timedelta(seconds=2 * store.COMMIT_WINDOW_SECONDS))
    cutoff = now - safe_age
    sequences = store.log_sequences(lake, name)
    if not sequences:
        return result  # nothing committed: a legacy file is the manifest itself
    raw = lake.read_many([manifest_log_key(name, n) for n in sequences])  # concurrent GETs on S3
    entries = {n: store.Snapshot.from_entry(name, raw[manifest_log_key(name, n)]) for n in sequences}
    newest = set(sequences[-max(1, keep_log):])
    # An entry goes when it is not among the newest and old enough (created_at is the commit's).
    doomed = [n for n in sequences if n not in newest and (entries[n].created() or now) < cutoff]
    kept = [entries[n] for n in sequences if n not in doomed]
    referenced = {key for entry in kept for key in entry.parts}
    for key in lake.list(manifest_parts_prefix(name)):
        written = store.part_written_at(key)
        if key not in referenced and written is not None and written < cutoff:
            lake.delete(key)
            result.parts_deleted.append(key)
    for n in doomed:  # oldest first: a reader listing the log never sees a gap below the newest
        key = manifest_log_key(name, n)
        lake.delete(key)
        result.log_entries_deleted.append(key)
    first = entries[sequences[0]]
    migrated_long_ago = sequences[0] > 0 or (first.created() or now) < cutoff
    legacy = legacy_manifest_key(name)
    if migrated_long_ago and legacy not in referenced and lake.exists(legacy):
        lake.delete(legacy)
        result.legacy_deleted = True
    return result


def remove(lake: Lake, name: str) -> None:
    """Delete the manifest entirely (log, parts, legacy file): the lake as if it was never
    written. For starting over (tests, benchmarks); not for use while anything writes to it."""
    store.contract_of(name)
    with store._lock(lake, name):
        for sequence in store.log_sequences(lake, name):  # oldest first: the latest goes last
            lake.delete(manifest_log_key(name, sequence))
        for key in lake.list(manifest_key(name)):
            lake.delete(key)
        lake.delete(legacy_manifest_key(name))
        with store._PARTS_GUARD:
            store._PARTS.pop((lake.root_uri, name), None)
