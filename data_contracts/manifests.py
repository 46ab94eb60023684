"""Which contract each manifest of the lake keeps: the one map from a manifest's name to its schema.

`layout.MANIFEST_KEYS` says where a manifest lives, this map what it holds; both are keyed by the
same names (`catalog`, `quarantine`, `pairs`, `models`, `training_curves`, `evaluations`,
`enhancements`), and an import-time check keeps them in step.
"""

from __future__ import annotations

from catalog_enhance.data_contracts.contracts import CATALOG, PAIRS, QUARANTINE, Contract
from catalog_enhance.data_contracts.enhancements import ENHANCEMENTS
from catalog_enhance.data_contracts.evaluations import EVALUATIONS
from catalog_enhance.data_contracts.layout import MANIFEST_KEYS
from catalog_enhance.data_contracts.model_registry import MODELS, TRAINING_CURVES

MANIFEST_CONTRACTS: dict[str, Contract] = {
    "catalog": CATALOG,
    "quarantine": QUARANTINE,
    "pairs": PAIRS,
    "models": MODELS,
    "training_curves": TRAINING_CURVES,
    "evaluations": EVALUATIONS,
    "enhancements": ENHANCEMENTS,
}

if set(MANIFEST_CONTRACTS) != set(MANIFEST_KEYS):  # pragma: no cover - a layout/contract mismatch is a bug
    raise RuntimeError(f"manifests without a contract or key: {sorted(set(MANIFEST_CONTRACTS) ^ set(MANIFEST_KEYS))}")

# Manifests whose rows can be updated: an update is appended as a new row with the same key, and
# readers keep the latest row per key (the catalog's refreshed rows: a SKU version whose image
# moved or was touched, same bytes). Every other manifest is append-only, rows never change.
SUPERSEDING_KEYS: dict[str, tuple[str, ...]] = {
    "catalog": ("sku", "version"),
}
# How a manifest's rows are ordered for readers (None: in commit order).
READ_ORDER: dict[str, tuple[str, ...]] = {
    "catalog": ("sku", "version"),
}
