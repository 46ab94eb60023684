"""Every manifest read and write goes through here: validated on the way in and out.

A manifest is a Parquet table at `layout.manifest_key(name)` meeting `MANIFEST_CONTRACTS[name]`.
Readers get the validated table (empty, with the contract's schema, before the first write).
Writers never write a table they read earlier: they pass a *change*, a function from the current
table to the new one (or None: nothing to write), and `commit` applies it to the manifest as it is
when the write happens. That one rule is what lets the commit protocol below change (a lock, a
compare-and-swap, append-only parts) without any stage changing.

Helpers for the manifests several stages share live here too: the current catalog, the
quarantine log's de-duplicated append, the one validated pairs reader.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from catalog_enhance.data_contracts.contracts import Contract
from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.data_contracts.manifests import MANIFEST_CONTRACTS
from catalog_enhance.tasks.lake.storage import Lake

Change = Callable[[pa.Table], pa.Table | None]

# Serialises read-change-write of one manifest between the threads of a process (Prefect's
# thread pool runs tasks of one flow side by side).
_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def contract_of(name: str) -> Contract:
    manifest_key(name)  # an unknown name is a KeyError listing the known manifests
    return MANIFEST_CONTRACTS[name]


def exists(lake: Lake, name: str) -> bool:
    return lake.exists(manifest_key(name))


def read(lake: Lake, name: str) -> pa.Table:
    """The manifest, validated against its contract; empty with the contract's schema if absent."""
    contract = contract_of(name)
    key = manifest_key(name)
    if not lake.exists(key):
        return contract.empty()
    return contract.check(lake.read_table(key))


def _lock(lake: Lake, name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((lake.root_uri, name), threading.Lock())


def commit(lake: Lake, name: str, change: Change) -> pa.Table | None:
    """Apply `change` to the manifest as it is now and write the result (validated, atomically);
    None when the change had nothing to write. Returns the table written."""
    contract = contract_of(name)
    with _lock(lake, name):
        updated = change(read(lake, name))
        if updated is None:
            return None
        table = contract.table(updated)
        lake.write_table(manifest_key(name), table)
        return table


def append(lake: Lake, name: str, rows: Sequence[Mapping] | pa.Table, *,
           key: Sequence[str] | None = None) -> int:
    """Append rows; with `key`, rows whose key columns are already in the manifest (or earlier in
    `rows`) are left out. Returns the number of rows appended (0: nothing written)."""
    contract = contract_of(name)
    new = contract.table(rows if isinstance(rows, pa.Table) else list(rows))
    added = 0

    def change(current: pa.Table) -> pa.Table | None:
        nonlocal added
        fresh = new if key is None else _new_keys(current, new, key)
        added = fresh.num_rows
        if not added:
            return None
        return pa.concat_tables([contract.table(current), fresh], promote_options="default")

    commit(lake, name, change)
    return added


def _new_keys(current: pa.Table, new: pa.Table, key: Sequence[str]) -> pa.Table:
    seen = set(zip(*(current.column(c).to_pylist() for c in key)))
    keep = []
    for values in zip(*(new.column(c).to_pylist() for c in key)):
        keep.append(values not in seen)
        seen.add(values)
    return new.filter(pa.array(keep, pa.bool_()))


def table_fingerprint(table: pa.Table) -> str:
    """sha256 (16 hex) of a manifest slice's rows in order: identifies the training data used."""
    digest = hashlib.sha256()
    digest.update(json.dumps(table.column_names).encode())
    for row in table.to_pylist():
        digest.update(json.dumps(row, sort_keys=True, default=str, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


# -- the catalog ----------------------------------------------------------------------------------


def current_catalog(table: pa.Table) -> pa.Table:
    """The latest version of every SKU (the catalog keeps all versions), sorted by SKU."""
    if table.num_rows == 0:
        return table
    latest = table.group_by("sku").aggregate([("version", "max")])
    keys = pc.binary_join_element_wise(table["sku"], pc.cast(table["version"], pa.string()), "\x00")
    wanted = pc.binary_join_element_wise(latest["sku"], pc.cast(latest["version_max"], pa.string()), "\x00")
    current = table.filter(pc.is_in(keys, value_set=wanted))
    return current.sort_by("sku")


def latest_by_sku(table: pa.Table) -> dict[str, dict]:
    return {row["sku"]: row for row in current_catalog(table).to_pylist()}


# -- quarantine -----------------------------------------------------------------------------------

QUARANTINE_KEY = ("stage", "sku", "feed_row", "image_uri", "reason", "detail")


def quarantine(lake: Lake, records: Iterable[Mapping], *, run_id: str | None, now: datetime) -> int:
    """Append problems to the append-only quarantine log. A problem already recorded (same stage,
    SKU, row, URI, reason, detail) is not recorded again, so re-running a feed with the same bad
    rows writes nothing. Returns how many records were new."""
    rows = [{**record, "run_id": run_id, "quarantined_at": now} for record in records]
    return append(lake, "quarantine", rows, key=QUARANTINE_KEY) if rows else 0


# -- pairs ----------------------------------------------------------------------------------------


def read_pairs(lake: Lake, *, split: str | None = None, scale: int | None = None,
               config_hash: str | None = None) -> pa.Table:
    """The pairs manifest (validated), optionally one split / scale / config's rows, by pair_id.
    FileNotFoundError when no pairs were ever made (the pairs stage must run first)."""
    if not exists(lake, "pairs"):
        raise FileNotFoundError(f"no pairs manifest at {lake.uri(manifest_key('pairs'))!r}: run the pairs stage first")
    table = read(lake, "pairs")
    mask = pa.array([True] * table.num_rows, pa.bool_())
    if split is not None:
        mask = pc.and_(mask, pc.equal(table["split"], split))
    if scale is not None:
        mask = pc.and_(mask, pc.equal(table["scale"], pa.scalar(scale, pa.int8())))
    if config_hash is not None:
        mask = pc.and_(mask, pc.equal(table["config_hash"], config_hash))
    if split is None and scale is None and config_hash is None:
        return table
    return table.filter(mask).sort_by([("pair_id", "ascending")])
