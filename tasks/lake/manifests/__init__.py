"""Every manifest read and write goes through here: validated on the way in and out.

A manifest is an append-only dataset at `layout.manifest_key(name)` meeting
`MANIFEST_CONTRACTS[name]`: immutable Parquet parts and a commit log (`store`: the protocol).
Readers get the validated table of the latest snapshot (empty, with the contract's schema, before
the first write). Writers never write a table they read earlier: they pass a *change*, a function
from the current table to the rows to append (or None: nothing to write), and `commit` applies it
to the manifest as it is when the write happens, again after losing a race to another writer.
`upkeep` compacts and vacuums; `rows` holds helpers for manifests several stages share.
"""

from catalog_enhance.tasks.lake.manifests.rows import (
    QUARANTINE_KEY,
    append,
    current_catalog,
    latest_by_sku,
    quarantine,
    read_pairs,
    table_fingerprint,
)
from catalog_enhance.tasks.lake.manifests.store import (
    Change,
    ManifestConflictError,
    Snapshot,
    commit,
    contract_of,
    exists,
    read,
    snapshot,
    snapshot_uris,
)
from catalog_enhance.tasks.lake.manifests.upkeep import compact, compact_all, remove, vacuum

__all__ = [
    "QUARANTINE_KEY", "Change", "ManifestConflictError", "Snapshot", "append", "commit", "compact",
    "compact_all", "contract_of", "current_catalog", "exists", "latest_by_sku", "quarantine", "read",
    "read_pairs", "remove", "snapshot", "snapshot_uris", "table_fingerprint", "vacuum",
]
