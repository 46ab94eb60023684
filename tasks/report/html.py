"""The evaluation report: one self-contained HTML file (pure: data in, bytes out).

A report is a list of sections (a table, an image grid, a matplotlib plot, a paragraph of text)
rendered into ONE HTML file: CSS inline, every image a `data:image/png;base64,` URI, no script and
no external asset, so it opens the same from the lake, from a download or from disk offline.
Every piece of text is escaped (catalog labels are untrusted input), and the same sections give
the same bytes (the only moving part is the `generated_at` the caller passes in).

    sections = [
        TextSection("Champion SRCNN beats bicubic by **+0.41 dB** at x2."),
        TableSection("Super-resolution, test split", summary_df),
        ImageGridSection("Before / after, x2", images, row_labels=skus,
                         column_labels=["LR", "bicubic", "srcnn", "HR"]),
        PlotSection("Training curves", plot_training_curves(curves_df)),
    ]
    key = write_report(lake, run_name, build_report(sections, "Evaluation", datetime.now(UTC)))
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeGuard, Union, cast

import numpy as np
from matplotlib.figure import Figure

from catalog_enhance.data_contracts.layout import report_key
from catalog_enhance.tasks.imaging.codec import encode_png
from catalog_enhance.tasks.report.plots import figure_png

REPORT_FILENAME = "report.html"
MAX_CELL_PX = 256  # grid cells are shown at most this wide (larger images are scaled down)


# -- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSection:
    """A table from a list of dicts or a pandas DataFrame (columns in first-seen order).

    Numbers are formatted and right-aligned; in the gain columns (by default every column whose
    name contains "gain") a negative value is highlighted in red: where the model loses.
    """

    title: str
    rows: Any  # list[Mapping] | pandas.DataFrame
    note: str = ""
    gain_columns: Sequence[str] | None = None
    digits: int = 4  # significant digits of floats


@dataclass(frozen=True)
class ImageGridSection:
    """Rows x columns of uint8 images (H, W), (H, W, 3) or (H, W, 4), with captions.

    `images[r][c]` may be None (an empty cell). All cells are shown at one width (the widest image,
    at most MAX_CELL_PX, or `cell_px`); a smaller image, such as the LR input of super-resolution,
    is shown nearest-neighbour upscaled (CSS `pixelated`) so its pixels stay visible.
    """

    title: str
    images: Sequence[Sequence[np.ndarray | None]]
    row_labels: Sequence[str] = ()
    column_labels: Sequence[str] = ()
    note: str = ""
    cell_px: int | None = None

    def __post_init__(self) -> None:
        widths = {len(row) for row in self.images}
        if len(widths) > 1:
            raise ValueError(f"grid {self.title!r}: rows have different lengths {sorted(widths)}")
        columns = widths.pop() if widths else 0
        if self.row_labels and len(self.row_labels) != len(self.images):
            raise ValueError(f"grid {self.title!r}: {len(self.row_labels)} row labels for {len(self.images)} rows")
        if self.column_labels and len(self.column_labels) != columns:
            raise ValueError(f"grid {self.title!r}: {len(self.column_labels)} column labels for {columns} columns")


@dataclass(frozen=True)
class PlotSection:
    """A matplotlib Figure (rendered to PNG with the Agg backend) or ready PNG bytes."""

    title: str
    figure: Figure | bytes
    note: str = ""
    dpi: int = 100


@dataclass(frozen=True)
class TextSection:
    """Markdown-ish text: paragraphs split by blank lines, `- ` bullet lines, `## ` sub-headings,
    **bold** and `code`. Everything else is literal (escaped) text."""

    text: str
    title: str = ""


ReportSection = Union[TableSection, ImageGridSection, PlotSection, TextSection]


# -- rendering helpers ----------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _as_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: expected a uint8 image, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:  # NaN, pandas NA/NaT
        import pandas as pd

        return bool(pd.isna(value)) if np.ndim(cast(Any, value)) == 0 else False  # np.ndim takes any object
    except (TypeError, ValueError):
        return False


def format_value(value: object, digits: int = 4) -> str:
    """A table cell as text: floats to `digits` significant digits (thousands separated), ints as
    is, booleans yes/no, dates ISO, missing as an em dash."""
    if _is_missing(value):
        return "\u2014"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isinf(value):
            return "\u221e" if value > 0 else "\u2212\u221e"
        if value != 0 and abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _is_number(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _table_rows(rows: Any) -> tuple[list[str], list[Mapping]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas DataFrame
        columns = [str(c) for c in rows.columns]
        return columns, [dict(zip(columns, r)) for r in rows.itertuples(index=False)]
    records = [dict(r) for r in rows]
    names: dict[str, None] = {}  # every record's keys, in order of first appearance
    for record in records:
        names.update(dict.fromkeys(map(str, record)))
    return list(names), [{str(k): v for k, v in r.items()} for r in records]


def _inline(text: str) -> str:
    """Escape, then the two inline marks: **bold** and `code`."""
    out = _e(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def _markdownish(text: str) -> str:
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line.lstrip().startswith(("- ", "* ")) for line in lines):
            items = "".join(f"<li>{_inline(line.lstrip()[2:])}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        elif lines[0].startswith("#"):
            heading = lines[0].lstrip("#").strip()
            blocks.append(f"<h3>{_inline(heading)}</h3>")
            if lines[1:]:
                blocks.append(f"<p>{_inline(' '.join(lines[1:]))}</p>")
        else:
            blocks.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(blocks)


def _class(classes: Sequence[str]) -> str:
    names = " ".join(c for c in classes if c)
    return f' class="{names}"' if names else ""


def _note(note: str) -> str:
    return f'<div class="note">{_markdownish(note)}</div>' if note.strip() else ""


# -- sections to HTML ---------------------------------------------------------------------------


def _render_table(section: TableSection) -> str:
    columns, records = _table_rows(section.rows)
    if not records:
        return '<p class="empty">No rows.</p>'
    gains = (set(section.gain_columns) if section.gain_columns is not None
             else {c for c in columns if "gain" in c.lower()})
    numeric = {c for c in columns if all(_is_number(r.get(c)) or _is_missing(r.get(c)) for r in records)
               and any(_is_number(r.get(c)) for r in records)}
    head = "".join(f'<th{_class(["num" if c in numeric else ""])}>{_e(c)}</th>' for c in columns)
    body = []
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column)
            classes = []
            if column in numeric:
                classes.append("num")
            if column in gains and _is_number(value) and not _is_missing(value):
                classes.append("neg" if value < 0 else "pos" if value > 0 else "")
            text = format_value(value, section.digits)
            if column in gains and _is_number(value) and not _is_missing(value) and value > 0:
                text = "+" + text
            cells.append(f"<td{_class(classes)}>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _render_grid(section: ImageGridSection) -> str:
    images = [[None if im is None else _as_rgb_uint8(im, f"grid {section.title!r} row {r} column {c}")
               for c, im in enumerate(row)] for r, row in enumerate(section.images)]
    widths = [im.shape[1] for row in images for im in row if im is not None]
    if not widths:
        return '<p class="empty">No images.</p>'
    cell = section.cell_px or min(max(widths), MAX_CELL_PX)
    parts = ['<div class="scroll"><table class="grid">']
    if section.column_labels:
        corner = "<th></th>" if section.row_labels else ""
        labels = "".join(f"<th>{_e(c)}</th>" for c in section.column_labels)
        parts.append(f"<thead><tr>{corner}{labels}</tr></thead>")
    parts.append("<tbody>")
    for r, row in enumerate(images):
        parts.append("<tr>")
        if section.row_labels:
            parts.append(f'<th class="row">{_e(section.row_labels[r])}</th>')
        for c, image in enumerate(row):
            if image is None:
                parts.append('<td class="missing">\u2014</td>')
                continue
            h, w = image.shape[:2]
            height = max(1, round(h * cell / w))
            pixelated = ' class="px"' if w < cell else ""
            label = section.column_labels[c] if section.column_labels else f"column {c + 1}"
            alt = f"{section.row_labels[r]}: {label}" if section.row_labels else label
            parts.append(f'<td><img{pixelated} src="{png_data_uri(encode_png(image))}" width="{cell}" '
                         f'height="{height}" alt="{_e(alt)}" title="{_e(f"{alt} ({w}x{h})")}"></td>')
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _render_plot(section: PlotSection) -> str:
    png = section.figure if isinstance(section.figure, bytes) else figure_png(section.figure, section.dpi)
    return f'<img class="plot" src="{png_data_uri(png)}" alt="{_e(section.title)}">'


def _render(section: ReportSection) -> str:
    if isinstance(section, TableSection):
        return _render_table(section) + _note(section.note)
    if isinstance(section, ImageGridSection):
        return _render_grid(section) + _note(section.note)
    if isinstance(section, PlotSection):
        return _render_plot(section) + _note(section.note)
    if isinstance(section, TextSection):
        return _markdownish(section.text)
    raise TypeError(f"not a report section: {type(section).__name__}")


CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2328;font:15px/1.5 system-ui,-apple-system,"Segoe UI",
"DejaVu Sans","Liberation Sans",sans-serif}
header{background:#1f2937;color:#fff;padding:20px 32px}
header h1{margin:0;font-size:24px;font-weight:600}
header .meta{color:#cbd5e1;font-size:13px;margin-top:4px}
nav{padding:10px 32px;background:#fff;border-bottom:1px solid #e5e7eb;font-size:13px}
nav a{color:#2563eb;text-decoration:none;margin-right:16px;white-space:nowrap}
main{max-width:1200px;margin:0 auto;padding:16px 32px 48px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
section h2{margin:0 0 12px;font-size:18px;font-weight:600}
h3{font-size:15px;margin:12px 0 4px}
p{margin:6px 0}
code{font:13px ui-monospace,"DejaVu Sans Mono",monospace;background:#f1f3f5;padding:1px 4px;border-radius:3px}
.note{color:#57606a;font-size:13px;margin-top:8px}
.scroll{overflow-x:auto}
table.data{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
table.data th{background:#f6f8fa;text-align:left;font-weight:600;border-bottom:2px solid #d0d7de}
table.data th,table.data td{padding:5px 12px;border-bottom:1px solid #eaeef2;white-space:nowrap}
table.data tbody tr:hover{background:#f6f8fa}
table.data .num{text-align:right}
td.neg{color:#b91c1c;background:#fde8e8;font-weight:600}
td.pos{color:#166534}
table.grid{border-collapse:separate;border-spacing:6px}
table.grid th{font-size:13px;font-weight:600;color:#374151;padding:2px 4px;text-align:center}
table.grid th.row{text-align:right;max-width:180px;overflow-wrap:anywhere;vertical-align:middle}
table.grid td{padding:0;vertical-align:top}
table.grid img{display:block;box-sizing:content-box;border:1px solid #d0d7de;background:#fff}
table.grid img.px{image-rendering:pixelated}
td.missing{color:#9ca3af;text-align:center;vertical-align:middle}
img.plot{max-width:100%;height:auto;display:block}
.empty{color:#9ca3af}
"""


def build_report(sections: Sequence[ReportSection], title: str, generated_at: datetime | str) -> bytes:
    """The report as one self-contained UTF-8 HTML document."""
    stamp = generated_at.isoformat(timespec="seconds") if isinstance(generated_at, datetime) else str(generated_at)
    nav, body = [], []
    for index, section in enumerate(sections, start=1):
        anchor = f"s{index}"
        heading = section.title
        if heading:
            nav.append(f'<a href="#{anchor}">{_e(heading)}</a>')
        h2 = f"<h2>{_e(heading)}</h2>" if heading else ""
        body.append(f'<section id="{anchor}">{h2}{_render(section)}</section>')
    document = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><div class="meta">Generated {_e(stamp)}</div></header>\n'
        + (f"<nav>{''.join(nav)}</nav>\n" if len(nav) > 1 else "")
        + "<main>\n" + "\n".join(body) + "\n</main>\n</body></html>\n"
    )
    return document.encode("utf-8")


def write_report(lake, run_name: str, html_bytes: bytes, filename: str = REPORT_FILENAME) -> str:
    """Write the report to the lake (atomically) and return its key."""
    key = report_key(run_name, filename)
    lake.write_bytes(key, html_bytes)
    return key
