"""Catalog feeds: CSV, Parquet or JSON Lines, from a path or URL, read into typed rows.

A feed that cannot be used as a whole (missing, empty, not UTF-8 text, a required column missing)
is refused with one `FeedError` line naming the file and the reason; a row-level problem (a line
that is not valid CSV or JSON, more fields than columns, not UTF-8) is kept on the row as
`problem`, for the stage reading the feed to quarantine. Text feeds are read one physical line per
row, so a stray quote spoils its own line and nothing after it (a quoted field cannot span lines).
Cells reading NaN, null, None, N/A (any case) are missing values, like empty ones. Every column
beyond the contract's becomes a free conditional label `label_<name>`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from catalog_enhance.data_contracts.contracts import FEED, FEED_KNOWN_COLUMNS, LABEL_PREFIX, MISSING_VALUES
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


def check_feed(feed: str, settings: Settings | None = None) -> list[str]:
    """Whether the feed can be used at all, cheaply (a CSV's header line, a Parquet schema, every
    JSON line): `FeedError` as `read_feed` would raise it, before a flow starts. The columns."""
    columns, _ = _parse(feed, settings, header_only=True)
    return columns


def read_feed(feed: str, settings: Settings | None = None) -> tuple[list[FeedRow], str]:
    """Read a CSV, Parquet or JSON Lines feed (chosen by extension) from a path or URL.

    Returns the rows and the folder relative image paths are resolved against. A feed that
    cannot be used as a whole is one `FeedError` line naming the file and the reason; a
    row-level problem is left for `plan_ingestion` to quarantine.
    """
    columns, records = _parse(feed, settings, header_only=False)
    labels = _label_names(feed, [c for c in columns if c not in FEED_KNOWN_COLUMNS])
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


def _parse(feed: str, settings: Settings | None, *, header_only: bool) -> tuple[list[str], list[dict | str]]:
    """The feed's columns (checked against the contract) and records (none with `header_only`)."""
    fmt = FEED_FORMATS.get(_extension(feed))
    if fmt is None:
        raise FeedError(f"{feed}: unknown feed format (use {', '.join(sorted(FEED_FORMATS))})")
    options = settings.s3_options() if settings is not None and urlsplit(feed).scheme == "s3" else {}
    try:
        with fsspec.open(feed, "rb", **options) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise FeedError(f"{feed}: feed not found") from None
    except IsADirectoryError:
        raise FeedError(f"{feed}: is a folder, not a feed") from None
    except Exception as exc:
        raise FeedError(f"{feed}: cannot read the feed: {type(exc).__name__}: {exc}") from None
    if not data.removeprefix(UTF8_BOM).strip():
        raise FeedError(f"{feed}: the feed is empty")
    try:
        if fmt != "parquet":
            _check_text_encoding(data)
        if header_only and fmt == "csv":
            columns, records = _parse_csv(data, header_only=True)
        elif header_only and fmt == "parquet":
            columns, records = [c.strip() for c in pq.read_schema(io.BytesIO(data)).names], []
        else:  # JSON Lines: the columns are those of every line
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
    return columns, records


def _extension(feed: str) -> str:
    path = urlsplit(feed).path if "://" in feed else feed
    name = path.rsplit("/", 1)[-1].lower()
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _clean(value: object) -> str | None:
    """Feed cells as stripped strings; empty, NaN, null, None or N/A means missing."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    value = value.strip()
    return None if not value or value.lower() in MISSING_VALUES else value


UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16 LE/BE (UTF-32 LE starts like 16 LE), UTF-32 BE


def _check_text_encoding(data: bytes) -> None:
    """A text feed must be UTF-8: a UTF-16/32 one (a BOM, or every other byte NUL) is refused
    as a whole with what to do, rather than as rows of garbage."""
    head = data[:64]
    wide = head.startswith(_WIDE_BOMS) or (
        len(head) >= 8 and (head[1::2].count(0) == len(head[1::2]) or head[0::2].count(0) == len(head[0::2])))
    if wide:
        raise FeedError("the feed is UTF-16/32 text; save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)")


def _physical_lines(data: bytes, limit: int | None = None) -> list[tuple[int, bytes]]:
    """(1-based line number, bytes) of every non-blank line (the first `limit` of them); a
    leading UTF-8 BOM is dropped."""
    lines = data.removeprefix(UTF8_BOM).splitlines()  # bytes.splitlines: only \n, \r\n and \r
    found = (item for item in enumerate(lines, start=1) if item[1].strip())
    return list(itertools.islice(found, limit))


class _BadLine(ValueError):
    """One line of a text feed cannot be read: `what` it is not, and the `reason`."""

    def __init__(self, number: int, what: str, reason: str):
        super().__init__(f"line {number} is {what} ({reason})")
        self.what, self.reason = what, reason


def _decode_line(number: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadLine(number, "not UTF-8 text", f"byte 0x{line[exc.start]:02x} at column {exc.start + 1}") from None


def _csv_cells(number: int, text: str) -> list[str]:
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        reason = "unterminated quote; a quoted field must end on its line" \
            if "unexpected end of data" in str(exc) else f"bad quoting: {exc}"
        raise _BadLine(number, "not valid CSV", reason) from None


def _parse_csv(data: bytes, header_only: bool = False) -> tuple[list[str], list[dict | str]]:
    lines = _physical_lines(data, limit=1 if header_only else None)
    if not lines:
        return [], []
    (first, header_bytes), rows = lines[0], lines[1:]
    try:
        header = _csv_cells(first, _decode_line(first, header_bytes))
    except _BadLine as exc:
        raise FeedError(f"the header line is {exc.what} ({exc.reason}); is this a CSV feed?") from None
    columns = [c.strip() for c in header]
    records: list[dict | str] = []
    for number, line in rows:
        try:
            cells = _csv_cells(number, _decode_line(number, line))
        except _BadLine as exc:  # this line only; the next one is read as usual
            records.append(str(exc))
            continue
        if not any(c.strip() for c in cells):  # a row of empty cells (,,,) is not a row
            continue
        if len(cells) > len(columns):
            records.append(f"line {number} has {len(cells)} fields for {len(columns)} columns (unquoted comma?)")
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
    for line_number, raw in _physical_lines(data):
        try:
            obj = json.loads(_decode_line(line_number, raw))
        except json.JSONDecodeError as exc:
            records.append(f"line {line_number} is not valid JSON: {exc.msg}")
            continue
        except _BadLine as exc:
            records.append(str(exc))
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
