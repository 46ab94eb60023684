"""Ad-hoc runs: a folder of images, or the images of a feed, enhanced into a local folder with
the catalog's per-image step (`enhance_to_png`), without the lake's manifests."""

from __future__ import annotations

import csv
import io
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from catalog_enhance.tasks.catalog.labels import parse_filters
from catalog_enhance.tasks.enhance.chunk import QUARANTINE_REASON
from catalog_enhance.tasks.enhance.image import EnhancementFailed, enhance_to_png
from catalog_enhance.tasks.enhance.loaded import EnhancementModels, check_models
from catalog_enhance.tasks.enhance.params import EnhanceParams
from catalog_enhance.tasks.imaging.codec import ImageRejected, decode_untrusted, load_image
from catalog_enhance.tasks.lake.settings import Settings, load_settings
from catalog_enhance.tasks.runtime import Runtime, select_runtime
from catalog_enhance.tasks.sources import uris as sources
from catalog_enhance.tasks.sources.feeds import FEED_FORMATS, read_feed

SUMMARY_FILE = "enhance_summary.csv"
# Extensions an input folder's images may have (anything else in the folder is left alone).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".tif", ".tiff", ".bmp",
                              ".avif", ".mpo"})


@dataclass(frozen=True)
class _Input:
    name: str  # as shown in the summary: a file name or "row N (SKU x)"
    stem: str  # output file stem
    source: sources.Source | None
    style: bool
    problem: ImageRejected | None = None  # refused before reading (bad row, unsafe path)


@dataclass
class FolderResult:
    items: list[dict]  # one summary row per input
    summary_path: Path

    @property
    def enhanced(self) -> int:
        return sum(1 for item in self.items if item["status"] == "enhanced")

    @property
    def failed(self) -> int:
        return sum(1 for item in self.items if item["status"] == "failed")

    def counts(self) -> dict[str, object]:
        return {"inputs": len(self.items), "enhanced": self.enhanced, "failed": self.failed,
                "summary": str(self.summary_path)}


_UNSAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_stem(text: str) -> str:
    return _UNSAFE_STEM.sub("_", text).strip("._") or "image"


def _matches(conditions: dict[str, str | None], filters: str | list[str] | None) -> bool:
    """A feed row against label filters (``style=lifestyle``; ``colour`` means ``label_colour``)."""
    for item in parse_filters(filters):
        column = item.column if item.column in ("category", "style") or item.column.startswith("label_") \
            else f"label_{item.column}"
        if conditions.get(column) not in item.values:
            return False
    return True


def _folder_inputs(folder: Path, style: bool, settings: Settings) -> list[_Input]:
    inputs = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        try:
            # By name inside the folder: resolve() follows symlinks and refuses any leading out of it.
            source = sources.resolve(path.name, feed_dir=str(folder.resolve()), settings=settings)
            inputs.append(_Input(path.name, path.stem, source, style))
        except ImageRejected as exc:  # e.g. a symlink pointing out of the folder
            inputs.append(_Input(path.name, path.stem, None, style, exc))
    return inputs


def _feed_inputs(feed: str, style_domain, style: bool, settings: Settings) -> list[_Input]:
    rows, feed_dir = read_feed(feed, settings)
    inputs = []
    for row in rows:
        name = f"row {row.feed_row}" + (f" (SKU {row.sku})" if row.sku else "")
        stem = _safe_stem(row.sku or f"row-{row.feed_row}")
        if row.problem or not row.image_uri:
            problem = ImageRejected("missing_field", f"{name}: {row.problem or 'no image_uri'}")
            inputs.append(_Input(name, stem, None, False, problem))
            continue
        styled = style and _matches(row.conditions(), style_domain)
        try:
            inputs.append(_Input(name, stem, sources.resolve(row.image_uri, feed_dir=feed_dir, settings=settings),
                                 styled))
        except ImageRejected as exc:
            inputs.append(_Input(name, stem, None, styled, exc))
    return inputs


def _output_names(inputs: list[_Input]) -> list[str]:
    """`<stem>.png`, except where stems collide (a.jpg and a.png): then `<stem>_<ext>.png`."""
    stems: dict[str, int] = {}
    for item in inputs:
        stems[item.stem] = stems.get(item.stem, 0) + 1
    names = []
    for item in inputs:
        if stems[item.stem] == 1:
            names.append(f"{item.stem}.png")
        else:
            extension = Path(item.name).suffix.lstrip(".").lower() or str(len(names))
            names.append(f"{item.stem}_{extension}.png")
    return names


def _write_file_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


SUMMARY_COLUMNS = ("input", "output", "status", "reason", "detail", "input_width", "input_height",
                   "width", "height", "mode", "style_transform", "seconds")


def enhance_folder(input: str, output_dir: Path, models: EnhancementModels, params: EnhanceParams,
                   *, runtime: Runtime | None = None, settings: Settings | None = None) -> FolderResult:
    """Enhance a folder of images (or the images of a CSV/Parquet/JSONL feed) into
    `<output_dir>/<stem>.png` (feeds: `<sku>.png`), with the catalog's per-image step.

    Every input is treated as untrusted (`decode_untrusted`: size and pixel limits, allowed
    formats, orientation applied, colours converted to sRGB); one that is refused or fails is
    reported and the others go on. `enhance_summary.csv` in `output_dir` lists every input with
    its status, reason and detail. In a folder the studio transform (if asked for) applies to
    every image; in a feed, to the rows in the style model's domain (`style=lifestyle`).
    """
    settings = settings or load_settings()
    runtime = runtime or select_runtime()
    check_models(models, params)
    folder = Path(input)
    if folder.is_dir():
        inputs = _folder_inputs(folder, params.style_transform, settings)
    elif Path(input.split("?")[0]).suffix.lower() in FEED_FORMATS:
        inputs = _feed_inputs(input, models.style_domain, params.style_transform, settings)
    else:
        raise ValueError(f"{input}: neither a folder nor a feed ({', '.join(sorted(FEED_FORMATS))})")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for item, name in zip(inputs, _output_names(inputs)):
        record: dict[str, object] = {
            "input": item.name, "output": "", "status": "failed", "reason": "", "detail": "",
            "input_width": None, "input_height": None, "width": None, "height": None, "mode": "",
            "style_transform": item.style, "seconds": None}
        try:
            if item.problem is not None:
                raise item.problem
            assert item.source is not None  # an input has a source or a problem
            data = sources.fetch(item.source, settings)
            normal = decode_untrusted(data, max_pixels=settings.max_image_pixels, name=item.name)
            pixels = load_image(normal.png)
            enhanced = enhance_to_png(pixels, models, params.for_image(item.style), runtime, style=item.style)
        except ImageRejected as exc:
            record.update(reason=exc.reason, detail=exc.detail)
        except EnhancementFailed as exc:
            record.update(reason=QUARANTINE_REASON, detail=f"{item.name}: {exc.detail}")
        else:
            _write_file_atomically(output_dir / name, enhanced.png)
            record.update(output=name, status="enhanced", input_width=normal.width, input_height=normal.height,
                          width=enhanced.width, height=enhanced.height, mode=enhanced.mode,
                          seconds=round(enhanced.seconds, 4))
        items.append(record)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(items)
    summary_path = output_dir / SUMMARY_FILE
    _write_file_atomically(summary_path, buffer.getvalue().encode())
    return FolderResult(items, summary_path)
