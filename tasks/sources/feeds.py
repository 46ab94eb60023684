"""Catalog feeds: CSV, Parquet or JSON Lines, from a path or URL, read into typed rows.

A missing required column refuses the whole feed with one line naming the file and the column; a
row-level problem (a JSON line that does not parse, more fields than columns) is kept on the row
as `problem`, for the stage reading the feed to report. Every column beyond the contract's becomes
a free conditional label `label_<name>`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from catalog_enhance.data_contracts.contracts import FEED, FEED_KNOWN_COLUMNS, LABEL_PREFIX
from catalog_enhance.tasks.lake.settings import Settings
from catalog_enhance.tasks.sources import uris as sources

FEED_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class FeedError(ValueError):
    """The feed as a whole cannot be used (unreadable, unknown format, a required column missing)."""


# -- reading the feed ------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedRow:
    feed_row: int  # 1-based data row number (the first row after a CSV header is 1)
    sku: str | None
    image_uri: str | None
    category: str | None
    style: str | None
    product_id: str | None  # defaults to the SKU
    labels: tuple[tuple[str, str | None], ...] = ()  # (label_<name>, value), sorted by name
    problem: str | None = None  # the row could not be parsed at all (e.g. a bad JSON line)

    def conditions(self) -> dict[str, str | None]:
        """Everything that conditions the image: category, style, product and free labels."""
        return {"category": self.category, "style": self.style, "product_id": self.product_id, **dict(self.labels)}


def read_feed(feed: str, settings: Settings | None = None) -> tuple[list[FeedRow], str]:
    """Read a CSV, Parquet or JSON Lines feed (chosen by extension) from a path or URL.

    Returns the rows and the folder relative image paths are resolved against. A missing
    required column refuses the whole feed with one line naming the file and the column; a
    row-level problem is left for `plan_ingestion` to quarantine.
    """
    fmt = FEED_FORMATS.get(_extension(feed))
    if fmt is None:
        raise FeedError(f"{feed}: unknown feed format (use {', '.join(sorted(FEED_FORMATS))})")
    options = settings.s3_options() if settings is not None and urlsplit(feed).scheme == "s3" else {}
    try:
        with fsspec.open(feed, "rb", **options) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise FeedError(f"{feed}: feed not found") from None
    except Exception as exc:
        raise FeedError(f"{feed}: cannot read the feed: {type(exc).__name__}: {exc}") from None
    try:
        columns, records = {"csv": _parse_csv, "parquet": _parse_parquet, "jsonl": _parse_jsonl}[fmt](data)
    except FeedError as exc:
        raise FeedError(f"{feed}: {exc}") from None
    except Exception as exc:
        raise FeedError(f"{feed}: not a valid {fmt} feed: {type(exc).__name__}: {exc}") from None

    labels = _label_names(feed, [c for c in columns if c not in FEED_KNOWN_COLUMNS])
    # The FEED contract judges the columns (an empty table of them), before any row is looked at.
    names = [c for c in columns if c in FEED_KNOWN_COLUMNS] + list(labels.values())
    header = pa.table({name: pa.array([], pa.string()) for name in names})
    missing = [v.column for v in FEED.validate(header) if v.row is None and v.column in FEED.required]
    if missing:
        raise FeedError(
            f"{feed}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (found: {', '.join(columns) or 'none'})"
        )
    rows = []
    for number, record in enumerate(records, start=1):
        if isinstance(record, str):  # a line that could not be parsed; the text is the detail
            rows.append(FeedRow(number, None, None, None, None, None, problem=record))
            continue
        sku = record.get("sku")
        rows.append(
            FeedRow(
                feed_row=number,
                sku=sku,
                image_uri=record.get("image_uri"),
                category=record.get("category"),
                style=record.get("style"),
                product_id=record.get("product_id") or sku,
                labels=tuple(sorted((labels[c], record.get(c)) for c in labels)),
            )
        )
    return rows, sources.feed_folder(feed)


def _extension(feed: str) -> str:
    path = urlsplit(feed).path if "://" in feed else feed
    name = path.rsplit("/", 1)[-1].lower()
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _clean(value: object) -> str | None:
    """Feed cells as stripped strings; empty means missing."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    value = value.strip()
    return value or None


def _parse_csv(data: bytes) -> tuple[list[str], list[dict | str]]:
    text = data.decode("utf-8-sig")  # a spreadsheet's BOM is not part of the first column name
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return [], []
    columns = [c.strip() for c in header]
    records: list[dict | str] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            records.append(f"{len(cells)} fields for {len(columns)} columns (unquoted comma?)")
            continue
        records.append({c: _clean(v) for c, v in zip(columns, cells) if c})
    return [c for c in columns if c], records


def _parse_parquet(data: bytes) -> tuple[list[str], list[dict | str]]:
    table = pq.read_table(io.BytesIO(data))
    records: list[dict | str] = [{k.strip(): _clean(v) for k, v in row.items()} for row in table.to_pylist()]
    return [c.strip() for c in table.column_names], records


def _parse_jsonl(data: bytes) -> tuple[list[str], list[dict | str]]:
    columns: dict[str, None] = {}
    records: list[dict | str] = []
    for line_number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append(f"line {line_number} is not valid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            records.append(f"line {line_number} is a JSON {type(obj).__name__}, not an object")
            continue
        record = {str(k).strip(): _clean(v) for k, v in obj.items()}
        columns.update(dict.fromkeys(record))
        records.append(record)
    return list(columns), records


def _label_names(feed: str, extra: Sequence[str]) -> dict[str, str]:
    """Map extra feed columns to `label_<name>` columns (lower case, [a-z0-9_])."""
    names: dict[str, str] = {}
    for column in extra:
        base = column.removeprefix(LABEL_PREFIX) if column.lower().startswith(LABEL_PREFIX) else column
        slug = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_")
        if not slug:
            raise FeedError(f"{feed}: column {column!r} cannot be used as a label name")
        label = LABEL_PREFIX + slug
        if label in names.values():
            other = next(c for c, n in names.items() if n == label)
            raise FeedError(f"{feed}: columns {other!r} and {column!r} both become label {label!r}")
        names[column] = label
    return names
