"""Appending rows (optionally de-duplicated), and helpers for the manifests several stages share:
the current catalog, the quarantine log's de-duplicated append, the one validated pairs reader,
a slice's fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.lake.manifests.store import commit, contract_of, exists, read
from catalog_enhance.tasks.lake.storage import Lake


def append(lake: Lake, name: str, rows: Sequence[Mapping] | pa.Table, *,
           key: Sequence[str] | None = None) -> int:
    """Append rows; with `key`, rows whose key columns are already in the manifest (or earlier in
    `rows`) are left out. Returns the number of rows appended (0: nothing written)."""
    contract = contract_of(name)
    new = contract.table(rows if isinstance(rows, pa.Table) else list(rows))

    def change(current: pa.Table) -> pa.Table | None:
        fresh = new if key is None else new_keys(current, new, key)
        return fresh if fresh.num_rows else None

    added = commit(lake, name, change)
    return 0 if added is None else added.num_rows


def new_keys(current: pa.Table, new: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows of `new` whose key is neither in `current` nor earlier in `new`."""
    seen: set[tuple[Any, ...]] = set(zip(*(current.column(c).to_pylist() for c in key)))
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
               config_hash: str | None = None, degradation: str | None = None) -> pa.Table:
    """The pairs manifest (validated), optionally one split / scale / config / degradation's rows
    (`degradation`: the canonical JSON the pairs record), by pair_id. FileNotFoundError when no
    pairs were ever made (the pairs stage must run first)."""
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
    if degradation is not None:
        mask = pc.and_(mask, pc.equal(table["degradation"], degradation))
    if split is None and scale is None and config_hash is None and degradation is None:
        return table
    return table.filter(mask).sort_by([("pair_id", "ascending")])
