"""Catalog labels as data: label columns, `column=value` filters, and label vocabularies.

Labels: ``LabelVocabulary`` maps condition columns (``category``, ``style``, ``label_<name>``) to
indices; it is built from the training manifest and stored with the checkpoint as lists of
strings. Filters such as ``"style=lifestyle"`` (or ``"category=food|hats"``) select rows, for a
model's training data, a CycleGAN's domains, or the images a studio transform applies to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import torch

from catalog_enhance.data_contracts.contracts import LABEL_PREFIX, MISSING_VALUES

# Index 0 of every vocabulary column: a missing (null/empty) label, and, on request, a label the
# vocabulary has never seen. Reserving it keeps `encode` total for rows with a missing label_*.
UNKNOWN_LABEL = "<unknown>"


def is_missing_label(value: object) -> bool:
    """None, empty, or a spelling of "no value" (NaN, null, None, N/A): feeds read these as missing
    since issue 11; a catalog ingested before may still hold them as text."""
    return value is None or not str(value).strip() or str(value).strip().lower() in MISSING_VALUES


class CatalogDataError(ValueError):
    """The catalog cannot provide what training asked for (no manifest, no rows, bad filter...)."""


class NotTrainableHere(CatalogDataError):
    """A model cannot train on this catalog (its labels, too few images...): found by the data check
    before training starts. Not a bug and not worth a retry: the nightly skips the model with the reason."""

    def __init__(self, model: str, reason: str):
        super().__init__(f"{model} cannot train on this catalog: {reason}")
        self.model, self.reason = model, reason

    def __reduce__(self):  # pickled across processes (Dask, Prefect results) with both fields
        return type(self), (self.model, self.reason)


class NotEvaluableHere(CatalogDataError):
    """A version cannot be evaluated on this catalog's test split (no matching images...): it stays
    pending, with the reason, and the other versions are evaluated."""

    def __init__(self, version: str, reason: str):
        super().__init__(f"{version} cannot be evaluated on this catalog: {reason}")
        self.version, self.reason = version, reason

    def __reduce__(self):
        return type(self), (self.version, self.reason)



# -- label columns and filters ---------------------------------------------------------------
def resolve_label_column(table: pa.Table, name: str) -> str:
    """``category``/``style``/``label_x`` as given, or ``x`` meaning ``label_x``; clear error otherwise."""
    name = name.strip()
    for candidate in (name, LABEL_PREFIX + name):
        if candidate in table.column_names and (candidate in ("category", "style") or candidate.startswith(LABEL_PREFIX)):
            return candidate
    known = ["category", "style"] + sorted(n for n in table.column_names if n.startswith(LABEL_PREFIX))
    raise CatalogDataError(f"unknown label column {name!r}; the catalog has: {', '.join(known)}")


@dataclass(frozen=True)
class LabelFilter:
    """``column=value`` (or ``column=a|b`` for any of several values)."""

    column: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "LabelFilter":
        column, sep, values = text.partition("=")
        parsed = tuple(v.strip() for v in values.split("|") if v.strip())
        if not sep or not column.strip() or not parsed:
            raise CatalogDataError(f"bad label filter {text!r}: expected 'column=value' (e.g. 'style=lifestyle')")
        return cls(column.strip(), parsed)

    def __str__(self) -> str:
        return f"{self.column}={'|'.join(self.values)}"


def parse_filters(filters: str | Sequence[str] | None) -> list[LabelFilter]:
    """A filter string (several joined by ',') or a list of them; all are ANDed."""
    if filters is None:
        return []
    items = filters.split(",") if isinstance(filters, str) else [p for f in filters for p in f.split(",")]
    return [LabelFilter.parse(item) for item in items if item.strip()]


def filter_rows(table: pa.Table, filters: str | Sequence[str] | None) -> pa.Table:
    """Rows matching every filter, e.g. ``filter_rows(t, "style=lifestyle")`` or
    ``filter_rows(t, ["category=food|hats", "colour=red"])`` (``colour`` means ``label_colour``).
    A null label matches nothing; an unknown column is a ``CatalogDataError`` naming the known ones.
    """
    mask = pa.array([True] * table.num_rows, pa.bool_())
    for item in parse_filters(filters):
        column = table.column(resolve_label_column(table, item.column))
        matches = pc.is_in(column, value_set=pa.array(item.values, column.type))
        mask = pc.and_(mask, pc.fill_null(matches, False))
    return table.filter(mask)


# -- label vocabulary ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelVocabulary:
    """Condition columns and, per column, its labels; index 0 is ``UNKNOWN_LABEL``.

    Stored with checkpoints as plain lists of strings (``to_state``/``from_state``), so a model
    trained on one catalog generates with the same label indices later.
    """

    columns: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    _index: tuple[dict[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.labels):
            raise ValueError(f"{len(self.columns)} columns but {len(self.labels)} label lists")
        for column, labels in zip(self.columns, self.labels):
            if not labels or labels[0] != UNKNOWN_LABEL or len(set(labels)) != len(labels):
                raise ValueError(f"vocabulary column {column!r}: labels must start with {UNKNOWN_LABEL!r} and be unique")
        object.__setattr__(self, "_index", tuple({label: i for i, label in enumerate(ls)} for ls in self.labels))

    @classmethod
    def from_table(cls, table: pa.Table, columns: Sequence[str]) -> "LabelVocabulary":
        """The sorted labels of ``columns`` (names as in ``filter_rows``) found in ``table``."""
        if not columns:
            raise CatalogDataError("a label vocabulary needs at least one condition column")
        resolved = tuple(resolve_label_column(table, c) for c in columns)
        labels = []
        for column in resolved:
            seen = {v for v in table.column(column).to_pylist() if not is_missing_label(v)}
            labels.append((UNKNOWN_LABEL, *sorted(seen - {UNKNOWN_LABEL})))
        return cls(resolved, tuple(labels))

    @property
    def sizes(self) -> list[int]:
        """Number of classes per column (``<unknown>`` included): the models' ``num_classes``."""
        return [len(labels) for labels in self.labels]

    def encode(self, rows: pa.Table | Sequence[Mapping[str, object]], *, unknown: str = "raise") -> torch.Tensor:
        """LongTensor [N, n_conditions]. A missing label is index 0; a label not in the vocabulary
        raises (``unknown="raise"``) or maps to index 0 (``unknown="unknown"``, its embedding is
        not trained on real labels: for previews, never for training)."""
        if unknown not in ("raise", "unknown"):
            raise ValueError(f"unknown must be 'raise' or 'unknown', not {unknown!r}")
        if isinstance(rows, pa.Table):
            missing = [c for c in self.columns if c not in rows.column_names]
            if missing:
                raise CatalogDataError(f"rows lack the condition column(s) {missing}")
            values = [rows.column(c).to_pylist() for c in self.columns]
        else:
            values = [[row.get(c) for row in rows] for c in self.columns]
        n = len(values[0]) if values else 0
        codes = torch.zeros((n, len(self.columns)), dtype=torch.long)
        for j, (column, index, column_values) in enumerate(zip(self.columns, self._index, values)):
            for i, value in enumerate(column_values):
                if is_missing_label(value):
                    continue
                code = index.get(value)
                if code is None:
                    if unknown == "raise":
                        known = ", ".join(self.labels[j][1:])
                        raise CatalogDataError(f"row {i}: {column}={value!r} is not in the vocabulary ({known})")
                    continue
                codes[i, j] = code
        return codes

    def decode(self, codes: torch.Tensor) -> list[dict[str, str]]:
        """Inverse of ``encode``: one {column: label} dict per row."""
        return [
            {column: self.labels[j][int(code)] for j, (column, code) in enumerate(zip(self.columns, row))}
            for row in codes.tolist()
        ]

    def to_state(self) -> dict[str, list]:
        return {"columns": list(self.columns), "labels": [list(ls) for ls in self.labels]}

    @classmethod
    def from_state(cls, state: Mapping[str, list]) -> "LabelVocabulary":
        return cls(tuple(state["columns"]), tuple(tuple(ls) for ls in state["labels"]))
