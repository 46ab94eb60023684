"""Data contracts: the pyarrow schema of every manifest, with its version and its row rules.

A `Contract` is enforced at every boundary: `contract.table(rows)` builds a conforming table
(with `schema_version` in the Parquet metadata) and `contract.validate(table)` reports each
violation by row, column and reason. Free conditional labels travel as extra string columns
named `label_<name>` beside the first-class `category` and `style`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

LABEL_PREFIX = "label_"
CONDITION_COLUMNS = ("category", "style")
TIMESTAMP = pa.timestamp("us", tz="UTC")


class ContractError(ValueError):
    """Data does not meet its contract; `violations` says where and why."""

    def __init__(self, contract: str, violations: list["Violation"]):
        self.contract = contract
        self.violations = violations
        shown = "; ".join(str(v) for v in violations[:5])
        more = f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"{contract}: {len(violations)} violation(s): {shown}{more}")


@dataclass(frozen=True)
class Violation:
    row: int | None  # None: the whole table (a missing column, a wrong type)
    column: str
    reason: str

    def __str__(self) -> str:
        where = "table" if self.row is None else f"row {self.row}"
        return f"{where}, column {self.column!r}: {self.reason}"


@dataclass(frozen=True)
class Contract:
    name: str
    version: str
    schema: pa.Schema
    # Columns that must hold a non-empty value in every row.
    required: tuple[str, ...] = ()
    allowed: Mapping[str, frozenset] = field(default_factory=dict)
    # Per-row checks: column -> (predicate on the python value, reason when it fails). The value
    # is never None and has the python type of the column's schema type (hence `Any`).
    checks: Mapping[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)
    allow_label_columns: bool = True

    @property
    def metadata(self) -> dict[bytes, bytes]:
        return {b"contract": self.name.encode(), b"schema_version": self.version.encode()}

    def label_columns(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in names if n.startswith(LABEL_PREFIX)) if self.allow_label_columns else []

    def full_schema(self, label_columns: Iterable[str] = ()) -> pa.Schema:
        extra = [pa.field(n, pa.string()) for n in label_columns if n not in self.schema.names]
        return pa.schema(list(self.schema) + extra, metadata=self.metadata)

    def empty(self, label_columns: Iterable[str] = ()) -> pa.Table:
        return self.full_schema(label_columns).empty_table()

    def table(self, rows: list[dict] | pa.Table) -> pa.Table:
        """Build a table of this contract from row dicts (or cast a table), validated."""
        if isinstance(rows, pa.Table):
            names = rows.column_names
        else:
            names = sorted({k for row in rows for k in row})
        schema = self.full_schema(self.label_columns(names))
        if isinstance(rows, pa.Table):
            missing = [n for n in schema.names if n not in rows.column_names]
            for name in missing:
                rows = rows.append_column(name, pa.nulls(rows.num_rows, schema.field(name).type))
            table = rows.select(schema.names).cast(schema)
        else:
            table = pa.Table.from_pylist(rows, schema=schema)
        self.check(table)
        return table.replace_schema_metadata(self.metadata)

    def validate(self, table: pa.Table) -> list[Violation]:
        violations: list[Violation] = []
        for f in self.schema:
            if f.name not in table.column_names:
                violations.append(Violation(None, f.name, "missing column"))
            elif not table.schema.field(f.name).type.equals(f.type):
                violations.append(
                    Violation(None, f.name, f"type {table.schema.field(f.name).type} is not {f.type}")
                )
        extra = [
            n for n in table.column_names
            if n not in self.schema.names and n not in self.label_columns([n])
        ]
        violations += [Violation(None, n, "column not in the contract") for n in extra]
        if violations:
            return violations
        for name in self.required:
            column = table.column(name)
            empty = pc.is_null(column)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                empty = pc.or_(empty, pc.equal(pc.utf8_trim_whitespace(column), ""))
            for row in pc.indices_nonzero(pc.fill_null(empty, True)).to_pylist():
                violations.append(Violation(row, name, "missing value"))
        for name, values in self.allowed.items():
            for row, value in enumerate(table.column(name).to_pylist()):
                if value is not None and value not in values:
                    violations.append(Violation(row, name, f"{value!r} not in {sorted(values)}"))
        for name, (predicate, reason) in self.checks.items():
            for row, value in enumerate(table.column(name).to_pylist()):
                if value is not None and not predicate(value):
                    violations.append(Violation(row, name, f"{value!r}: {reason}"))
        return violations

    def check(self, table: pa.Table) -> pa.Table:
        violations = self.validate(table)
        if violations:
            raise ContractError(self.name, violations)
        return table

    def stored_version(self, table: pa.Table) -> str | None:
        meta = table.schema.metadata or {}
        value = meta.get(b"schema_version")
        return value.decode() if value else None


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


SHA_CHECK = (_is_sha256, "not a sha256 hex digest")
POSITIVE = (_positive, "must be > 0")

# -- catalog feed (input) --------------------------------------------------------------------
# Columns a feed must have; any other column becomes a free label (`label_<name>`).
FEED = Contract(
    name="catalog_feed",
    version="1",
    schema=pa.schema(
        [
            pa.field("sku", pa.string()),
            pa.field("image_uri", pa.string()),
            pa.field("category", pa.string()),
            pa.field("style", pa.string()),
            # Groups images of one physical product (e.g. its studio and lifestyle shots); splits
            # are made by product so no product leaks between train and test. Defaults to sku.
            pa.field("product_id", pa.string()),
        ]
    ),
    required=("sku", "image_uri", "category", "style"),
)
FEED_KNOWN_COLUMNS = frozenset(FEED.schema.names)
# Feed cells that spreadsheets and pandas write for "no value" (compared lower-cased, stripped):
# missing, like an empty cell, never a category or label named "NaN".
MISSING_VALUES = frozenset({"nan", "null", "none", "n/a", "<na>", "#n/a"})

# -- catalog manifest ------------------------------------------------------------------------
CATALOG = Contract(
    name="catalog_manifest",
    version="1",
    schema=pa.schema(
        [
            pa.field("sku", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("product_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("style", pa.string(), nullable=False),
            pa.field("source_uri", pa.string(), nullable=False),
            # Cheap change detector taken without reading the image (size+mtime, ETag, ...).
            pa.field("source_fingerprint", pa.string()),
            pa.field("source_sha256", pa.string(), nullable=False),
            pa.field("source_format", pa.string(), nullable=False),
            pa.field("source_bytes", pa.int64(), nullable=False),
            pa.field("original_key", pa.string(), nullable=False),
            pa.field("image_key", pa.string(), nullable=False),
            pa.field("image_sha256", pa.string(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("mode", pa.string(), nullable=False),
            pa.field("has_alpha", pa.bool_(), nullable=False),
            pa.field("exif_orientation", pa.int8()),
            pa.field("icc_profile", pa.string()),
            pa.field("sharpness", pa.float64(), nullable=False),
            pa.field("ingested_at", TIMESTAMP, nullable=False),
            pa.field("run_id", pa.string()),
        ]
    ),
    required=(
        "sku", "version", "product_id", "category", "style", "source_uri", "source_sha256",
        "original_key", "image_key", "image_sha256", "width", "height", "mode",
    ),
    allowed={"mode": frozenset({"RGB", "RGBA"})},
    checks={
        "source_sha256": SHA_CHECK,
        "image_sha256": SHA_CHECK,
        "width": POSITIVE,
        "height": POSITIVE,
        "version": POSITIVE,
    },
)

# -- quarantine manifest ---------------------------------------------------------------------
QUARANTINE_REASONS = frozenset(
    {
        "unknown_scheme",
        "unsafe_path",
        "not_found",
        "fetch_error",
        "empty",
        "too_large",
        "decompression_bomb",
        "not_an_image",
        "truncated",
        "corrupt",
        "missing_label",
        "missing_field",
        "duplicate_conflict",
        "malformed_row",
        "unsupported_image",
        "enhancement_failed",
    }
)
QUARANTINE = Contract(
    name="quarantine_manifest",
    version="1",
    schema=pa.schema(
        [
            pa.field("stage", pa.string(), nullable=False),
            pa.field("sku", pa.string()),
            pa.field("feed_row", pa.int64()),
            pa.field("image_uri", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("detail", pa.string(), nullable=False),
            pa.field("run_id", pa.string()),
            pa.field("quarantined_at", TIMESTAMP, nullable=False),
        ]
    ),
    required=("stage", "reason", "detail"),
    allowed={"reason": QUARANTINE_REASONS, "stage": frozenset({"ingest", "pairs", "enhance"})},
    allow_label_columns=False,
)

# -- pairs manifest --------------------------------------------------------------------------
SPLITS = frozenset({"train", "val", "test"})
PAIRS = Contract(
    name="pairs_manifest",
    version="1",
    schema=pa.schema(
        [
            pa.field("pair_id", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
            pa.field("sku", pa.string(), nullable=False),
            pa.field("product_id", pa.string(), nullable=False),
            pa.field("catalog_version", pa.int32(), nullable=False),
            pa.field("image_sha256", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("scale", pa.int8(), nullable=False),
            pa.field("crop_index", pa.int16(), nullable=False),
            pa.field("crop_x", pa.int32(), nullable=False),
            pa.field("crop_y", pa.int32(), nullable=False),
            pa.field("hr_key", pa.string(), nullable=False),
            pa.field("lr_key", pa.string(), nullable=False),
            pa.field("hr_width", pa.int32(), nullable=False),
            pa.field("hr_height", pa.int32(), nullable=False),
            pa.field("lr_width", pa.int32(), nullable=False),
            pa.field("lr_height", pa.int32(), nullable=False),
            pa.field("degradation", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("style", pa.string(), nullable=False),
            pa.field("created_at", TIMESTAMP, nullable=False),
        ]
    ),
    required=("pair_id", "config_hash", "sku", "product_id", "image_sha256", "split", "hr_key", "lr_key"),
    allowed={"split": SPLITS},
    checks={
        "image_sha256": SHA_CHECK,
        # 1: same-size pairs (the input degraded, not shrunk) for restoration models.
        "scale": (lambda v: v in (1, 2, 3, 4), "scale must be 1, 2, 3 or 4"),
        "hr_width": POSITIVE,
        "hr_height": POSITIVE,
        "lr_width": POSITIVE,
        "lr_height": POSITIVE,
    },
)

CONTRACTS = {c.name: c for c in (FEED, CATALOG, QUARANTINE, PAIRS)}


def register(contract: Contract) -> Contract:
    """Add a contract (later issues' manifests live beside these, one home)."""
    CONTRACTS[contract.name] = contract
    return contract
