"""Append-only manifests: immutable Parquet parts plus a commit log, committed by put-if-absent.

A manifest `name` lives under `layout.manifest_key(name)`:

    parts/<utc time>-<random>.parquet   immutable; written once, never overwritten
    _log/<sequence, 20 digits>.json     entry N: the full snapshot after commit N (live part keys,
                                        row count, schema_version, created_at, writer, operation)

The protocol, in five lines:
1. read the latest log entry N (list `_log/`, take the largest) and the parts it names;
2. ask the caller's change for the rows to add to that table (None: nothing to write);
3. write those rows as one new part (a unique key: no two writers ever touch one object);
4. create log entry N+1 = N's parts + the new part with put-if-absent (`Lake.create`);
5. if N+1 already exists another writer committed first: drop the part, wait (backoff with
   jitter), re-read and recompute the change against the new table; bounded attempts.

So a commit that adds n rows writes one O(n) part and one small entry; writers race only on the
entry's key, and the result is the union of every writer's rows. A reader sees exactly one
snapshot (the parts named by one entry); parts are immutable and only removed by `vacuum` once no
recent entry names them and they are older than a safety age. A process killed between steps 3
and 4 leaves an orphan part that nothing names (vacuum removes it). Manifests whose rows can be
updated (`SUPERSEDING_KEYS`, the catalog) append the update and readers keep the latest row per
key. A lake written before this layout (one `manifests/<name>.parquet` rewritten per write) is read
as it is, and its first commit imports that file as the first part through the same log.

Why not Delta Lake (`deltalake`, delta-rs)? It is the same design (Parquet parts, a JSON log
committed by put-if-absent, checkpoints, vacuum) and would bring time travel and a standard
format, but delta-rs reaches storage through its own Rust object store: a second storage path
beside fsspec, with its own credentials, endpoint and retry settings to keep in step with ours,
and a large native dependency. What we need of it is this log protocol, which on the one fsspec
path the rest of the lake uses is a few hundred lines (README: "Manifests").
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog_enhance.data_contracts.contracts import Contract
from catalog_enhance.data_contracts.layout import (
    legacy_manifest_key,
    manifest_key,
    manifest_log_key,
    manifest_log_prefix,
    manifest_log_sequence,
    manifest_part_key,
)
from catalog_enhance.data_contracts.manifests import MANIFEST_CONTRACTS, READ_ORDER, SUPERSEDING_KEYS
from catalog_enhance.tasks.lake.storage import Lake

# What a change returns: the rows to append to the manifest as it is now, or None (nothing).
Change = Callable[[pa.Table], "pa.Table | Sequence[Mapping] | None"]

# A commit gives up after this many lost races (each one means another writer committed).
COMMIT_ATTEMPTS = 25
BACKOFF_FIRST_SECONDS = 0.02
BACKOFF_MAX_SECONDS = 1.0
# A commit attempt whose snapshot is older than this re-reads instead of committing on it, and
# cleanup never removes a log entry or a part younger than twice this: so cleanup can never
# delete what a commit in flight read or wrote (see `upkeep.vacuum`).
COMMIT_WINDOW_SECONDS = 300.0

# Serialises the commits of one manifest between the threads of a process: saves the threads of
# one flow pointless lost races. The guard between writers is the log's put-if-absent, not this.
_LOCKS: dict[tuple[str, str], threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class ManifestConflictError(RuntimeError):
    """A commit lost the race for the log entry `COMMIT_ATTEMPTS` times in a row."""


def contract_of(name: str) -> Contract:
    manifest_key(name)  # an unknown name is a KeyError listing the known manifests
    return MANIFEST_CONTRACTS[name]


def _lock(lake: Lake, name: str) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((lake.root_uri, name), threading.RLock())


def _writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- snapshots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """One committed state of a manifest: the parts that hold its rows."""

    name: str
    sequence: int  # the log entry's number; -1 before the first commit
    parts: tuple[str, ...]
    part_rows: tuple[int, ...] = ()
    rows: int = 0  # rows stored (an update of a superseding manifest counts as a row)
    schema_version: str | None = None
    created_at: str | None = None
    writer: str | None = None
    operation: str = "none"  # append | compact | migrate | none (no log yet)
    legacy: bool = False  # the pre-log single file, read as it is

    def entry(self) -> bytes:
        return json.dumps({
            "manifest": self.name,
            "sequence": self.sequence,
            "parts": list(self.parts),
            "part_rows": list(self.part_rows),
            "rows": self.rows,
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "writer": self.writer,
            "operation": self.operation,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_entry(cls, name: str, data: bytes) -> "Snapshot":
        raw = json.loads(data)
        return cls(name=name, sequence=int(raw["sequence"]), parts=tuple(raw["parts"]),
                   part_rows=tuple(int(n) for n in raw.get("part_rows", ())), rows=int(raw["rows"]),
                   schema_version=raw.get("schema_version"), created_at=raw.get("created_at"),
                   writer=raw.get("writer"), operation=raw.get("operation", "append"))

    def created(self) -> datetime | None:
        return datetime.fromisoformat(self.created_at) if self.created_at else None


def log_sequences(lake: Lake, name: str) -> list[int]:
    """The numbers of the log entries present, ascending."""
    found = (manifest_log_sequence(key) for key in lake.list(manifest_log_prefix(name)))
    return sorted(n for n in found if n is not None)


def _latest_sequence(lake: Lake, name: str) -> int | None:
    sequences = log_sequences(lake, name)
    if not sequences:
        return None
    latest = sequences[-1]
    # A listing can lag a commit made a moment ago (a cache, an eventually consistent store):
    # step past it, one existence check that normally finds nothing.
    while lake.exists(manifest_log_key(name, latest + 1)):
        latest += 1
    return latest


def read_entry(lake: Lake, name: str, sequence: int) -> Snapshot:
    return Snapshot.from_entry(name, lake.read_bytes(manifest_log_key(name, sequence)))


def snapshot(lake: Lake, name: str) -> Snapshot:
    """The manifest's latest committed snapshot (a legacy single file counts as one part)."""
    contract_of(name)
    latest = _latest_sequence(lake, name)
    if latest is not None:
        return read_entry(lake, name, latest)
    legacy = legacy_manifest_key(name)
    if lake.exists(legacy):
        return Snapshot(name=name, sequence=-1, parts=(legacy,), legacy=True, operation="legacy")
    return Snapshot(name=name, sequence=-1, parts=())


def snapshot_uris(lake: Lake, name: str) -> list[str]:
    """The URIs of the Parquet files holding the manifest's latest snapshot, for other readers:
    `pyarrow.parquet.read_table(uris)`, `pandas.read_parquet`, duckdb `read_parquet(uris,
    union_by_name=true)`. For the catalog keep the latest row per (sku, version) (an update is a
    later row; compaction leaves one), or use `read`."""
    return [lake.uri(key) for key in snapshot(lake, name).parts]


def exists(lake: Lake, name: str) -> bool:
    """Whether the manifest was ever written (in either layout)."""
    contract_of(name)
    return bool(log_sequences(lake, name)) or lake.exists(legacy_manifest_key(name))


# -- reading --------------------------------------------------------------------------------------

# Parts are immutable, so a decoded part can be reused for as long as a snapshot names it: each
# process keeps the parts of the last snapshot it read of each manifest (one copy per manifest),
# and a re-read after a lost race fetches only the parts that are new. A manifest bigger than
# this many rows is not kept (memory stays bounded whatever the catalog's size).
CACHE_MAX_ROWS = 250_000
_PARTS: dict[tuple[str, str], dict[str, pa.Table]] = {}
_PARTS_GUARD = threading.Lock()


def _decode(name: str, data: bytes) -> pa.Table:
    return contract_of(name).check(pq.read_table(pa.BufferReader(data)))


def _parts_of(lake: Lake, snap: Snapshot) -> list[pa.Table]:
    if snap.legacy:  # the old single file can still be rewritten in place: never cached
        return [_decode(snap.name, lake.read_bytes(snap.parts[0]))]
    cache_key = (lake.root_uri, snap.name)
    with _PARTS_GUARD:
        cached = dict(_PARTS.get(cache_key, {}))
    missing = [key for key in snap.parts if key not in cached]
    for key, data in lake.read_many(missing).items():
        cached[key] = _decode(snap.name, data)
    tables = [cached[key] for key in snap.parts]
    with _PARTS_GUARD:
        if sum(t.num_rows for t in tables) <= CACHE_MAX_ROWS:
            _PARTS[cache_key] = {key: cached[key] for key in snap.parts}
        else:
            _PARTS.pop(cache_key, None)
    return tables


def _remember(lake: Lake, name: str, key: str, table: pa.Table) -> None:
    with _PARTS_GUARD:
        cached = _PARTS.get((lake.root_uri, name))
        if cached is not None and sum(t.num_rows for t in cached.values()) + table.num_rows <= CACHE_MAX_ROWS:
            cached[key] = table


def combine(name: str, tables: Sequence[pa.Table]) -> pa.Table:
    """One manifest table from its parts (each already validated), in commit order: the label
    columns unified, the latest row per key kept where rows can be updated, readers' order."""
    contract = contract_of(name)
    labels = contract.label_columns({n for t in tables for n in t.column_names})
    schema = contract.full_schema(labels)
    if not tables:
        return schema.empty_table()
    aligned = []
    for table in tables:
        for missing in (n for n in schema.names if n not in table.column_names):
            table = table.append_column(missing, pa.nulls(table.num_rows, schema.field(missing).type))
        aligned.append(table.select(schema.names).cast(schema))
    table = pa.concat_tables(aligned)
    keys = SUPERSEDING_KEYS.get(name)
    if keys and table.num_rows:
        table = latest_rows(table, keys)
    order = READ_ORDER.get(name)
    if order and table.num_rows:
        table = table.sort_by([(c, "ascending") for c in order])
    return table.replace_schema_metadata(contract.metadata)


def latest_rows(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The last row of each key (rows in commit order: the last one is the latest)."""
    position = "__position"
    indexed = table.append_column(position, pa.array(range(table.num_rows), pa.int64()))
    last = indexed.group_by(list(keys), use_threads=False).aggregate([(position, "max")])
    positions = last[f"{position}_max"]
    return table.take(positions.take(pc.sort_indices(positions)))  # kept rows stay in commit order


def read_snapshot(lake: Lake, snap: Snapshot) -> pa.Table:
    return combine(snap.name, _parts_of(lake, snap))


def read(lake: Lake, name: str) -> pa.Table:
    """The manifest's latest snapshot, validated; empty with the contract's schema if absent."""
    return read_snapshot(lake, snapshot(lake, name))


# -- committing -----------------------------------------------------------------------------------


def _new_part_id() -> str:
    return f"{_now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:16]}"


def part_written_at(key: str) -> datetime | None:
    """When a part was written, from its key (None for a key not made by `_new_part_id`)."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def write_part(lake: Lake, name: str, table: pa.Table) -> str:
    """Write rows as a new immutable part (schema_version in its Parquet metadata); its key."""
    key = manifest_part_key(name, _new_part_id())
    lake.write_table(key, table.replace_schema_metadata(contract_of(name).metadata))
    return key


def _import_legacy(lake: Lake, name: str) -> tuple[str, int]:
    """Copy the legacy single file, bytes as they are (schema_version included), into a part."""
    data = lake.read_bytes(legacy_manifest_key(name))
    key = manifest_part_key(name, _new_part_id())
    lake.write_bytes(key, data)
    return key, pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows


def backoff(attempt: int) -> None:
    """Wait before retry `attempt` (1, 2, ...): exponential, capped, with full jitter so racing
    writers spread out instead of colliding again."""
    time.sleep(random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** attempt)))


def try_commit(lake: Lake, base: Snapshot, parts: Sequence[str], part_rows: Sequence[int], *,
               rows: int, operation: str) -> Snapshot | None:
    """Create log entry `base.sequence + 1` naming `parts`; None when another writer has it."""
    entry = Snapshot(
        name=base.name, sequence=base.sequence + 1, parts=tuple(parts), part_rows=tuple(part_rows),
        rows=rows, schema_version=contract_of(base.name).version, created_at=_now().isoformat(),
        writer=_writer_id(), operation=operation,
    )
    return entry if lake.create(manifest_log_key(base.name, entry.sequence), entry.entry()) else None


def _discard(lake: Lake, keys: Iterable[str]) -> None:
    for key in keys:  # nothing names them: removing them now only saves vacuum the work
        try:
            lake.delete(key)
        except OSError:
            pass


def _base_parts(lake: Lake, snap: Snapshot, written: list[str]) -> tuple[list[str], list[int]]:
    """The parts a commit on `snap` keeps: the snapshot's, or the imported legacy file."""
    if not snap.legacy:
        rows = list(snap.part_rows) if len(snap.part_rows) == len(snap.parts) else [0] * len(snap.parts)
        return list(snap.parts), rows
    key, count = _import_legacy(lake, snap.name)
    written.append(key)
    return [key], [count]


def commit(lake: Lake, name: str, change: Change, *, attempts: int = COMMIT_ATTEMPTS) -> pa.Table | None:
    """Append the rows `change(current)` returns to the manifest; returns them (validated), or
    None when the change had nothing to add.

    `change` gets the manifest as it is at commit time and may be called more than once: when
    another writer commits first, the manifest is re-read and `change` asked again, so anything
    it derives from the table (de-duplication, version numbers) is recomputed against the
    other writer's rows. Raises ManifestConflictError after `attempts` lost races."""
    contract = contract_of(name)
    with _lock(lake, name):
        for attempt in range(1, attempts + 1):
            read_at = time.monotonic()
            snap = snapshot(lake, name)
            rows = change(read_snapshot(lake, snap))
            if rows is None:
                return None
            added = contract.table(rows if isinstance(rows, pa.Table) else list(rows))
            if added.num_rows == 0:
                return None
            written: list[str] = []
            parts, part_rows = _base_parts(lake, snap, written)
            part = write_part(lake, name, added)
            written.append(part)
            committed = None
            if time.monotonic() - read_at < COMMIT_WINDOW_SECONDS:
                committed = try_commit(lake, snap, [*parts, part], [*part_rows, added.num_rows],
                                       rows=sum(part_rows) + added.num_rows, operation="append")
            if committed is not None:
                _remember(lake, name, part, added)
                return added
            _discard(lake, written)
            backoff(attempt)
    raise ManifestConflictError(
        f"manifest {name!r} at {lake.uri(manifest_key(name))}: another writer committed first "
        f"{attempts} times in a row; nothing was written, run again"
    )
