"""Ad-hoc runs: a folder of images, one image, or the images of a feed, enhanced into a local
folder with the catalog's per-image step (`enhance_to_png`), without the lake's manifests.

Every path is checked by `open_inputs` before any model loads (`InputError`, one line). Output
names are unique by construction: `<file name>.png` for a file (a.jpg -> a.jpg.png, a.png ->
a.png.png), `<SKU, percent-encoded>.png` for a feed row (a repeated SKU's later rows and rows
without a SKU add `@row<N>`, and `@` never survives the encoding).
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

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


class InputError(ValueError):
    """An ad-hoc run's --input or --output cannot be used (missing, of an unknown kind, not writable)."""


@dataclass(frozen=True)
class _Input:
    name: str  # as shown in the summary: a file name or "row N (SKU x)"
    output: str  # output file name, unique among the run's inputs
    source: sources.Source | None
    conditions: dict[str, str | None] | None  # a feed row's labels (for the style domain); None: a file
    problem: ImageRejected | None = None  # refused before reading (bad row, unsafe path)


@dataclass(frozen=True)
class AdHocInputs:
    """What an ad-hoc run will read and where it writes, checked before any model loads."""

    inputs: list[_Input]
    output_dir: Path


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


def _sku_file_name(sku: str) -> str:
    """A SKU as a file name, injectively: every byte but [A-Za-z0-9_.~-] percent-encoded (`%`
    included), and a leading dot too, so nothing is hidden and `@` never appears."""
    encoded = quote(sku, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def _matches(conditions: dict[str, str | None], filters: str | list[str] | None) -> bool:
    """A feed row against label filters (``style=lifestyle``; ``colour`` means ``label_colour``)."""
    for item in parse_filters(filters):
        column = item.column if item.column in ("category", "style") or item.column.startswith("label_") \
            else f"label_{item.column}"
        if conditions.get(column) not in item.values:
            return False
    return True


def _file_input(path: Path, settings: Settings) -> _Input:
    output = f"{path.name}.png"  # the whole name: a.jpg and a.png give a.jpg.png and a.png.png
    try:
        # By name inside its folder: resolve() follows symlinks and refuses any leading out of it.
        source = sources.resolve(path.name, feed_dir=str(path.parent.resolve()), settings=settings)
        return _Input(path.name, output, source, None)
    except ImageRejected as exc:  # e.g. a symlink pointing out of the folder
        return _Input(path.name, output, None, None, exc)


def _folder_inputs(folder: Path, settings: Settings) -> list[_Input]:
    return [_file_input(path, settings) for path in sorted(folder.iterdir())
            if not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()]


def _feed_inputs(feed: str, settings: Settings) -> list[_Input]:
    rows, feed_dir = read_feed(feed, settings)
    inputs = []
    seen: set[str] = set()
    for row in rows:
        name = f"row {row.feed_row}" + (f" (SKU {row.sku})" if row.sku else "")
        first = row.sku is not None and row.sku not in seen
        output = f"{_sku_file_name(row.sku)}.png" if first and row.sku else \
            f"{_sku_file_name(row.sku or '')}@row{row.feed_row}.png"
        seen.add(row.sku or "")
        if row.problem or not row.image_uri:
            reason = "malformed_row" if row.problem else "missing_field"
            problem = ImageRejected(reason, f"{name}: {row.problem or 'no image_uri'}")
            inputs.append(_Input(name, output, None, None, problem))
            continue
        try:
            source = sources.resolve(row.image_uri, feed_dir=feed_dir, settings=settings)
            inputs.append(_Input(name, output, source, row.conditions()))
        except ImageRejected as exc:
            inputs.append(_Input(name, output, None, row.conditions(), exc))
    return inputs


def open_inputs(input: str, output_dir: Path, settings: Settings | None = None) -> AdHocInputs:
    """Check an ad-hoc run's paths before any model loads: `input` is a folder, an image or a
    feed (a local path or a URL) and exists; `output_dir` can be created and written (a probe
    file is written and removed). Raises `InputError` (or `FeedError` for a feed that cannot be
    read), one line naming the path and the reason."""
    settings = settings or load_settings()
    path = Path(input)
    is_url = "://" in input and not input.lower().startswith("file:")
    suffix = Path(input.split("?")[0]).suffix.lower()
    if not is_url and not path.exists():
        raise InputError(f"{input}: no such file or folder")
    if not is_url and path.is_dir():
        kind = "folder"
    elif suffix in FEED_FORMATS:
        kind = "feed"
    elif not is_url and suffix in IMAGE_EXTENSIONS:
        kind = "image"
    else:
        raise InputError(f"{input}: neither a folder, an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                         f"nor a feed ({', '.join(sorted(FEED_FORMATS))})")
    output_dir = Path(output_dir)
    if kind == "folder" and output_dir.resolve() == path.resolve():
        raise InputError(f"{output_dir}: the output folder must not be the input folder")
    _check_writable(output_dir)
    if kind == "folder":
        inputs = _folder_inputs(path, settings)
    elif kind == "image":
        inputs = [_file_input(path, settings)]
    else:
        inputs = _feed_inputs(input, settings)
    names = [item.output for item in inputs]
    if len(set(names)) != len(names):  # cannot happen by construction; never overwrite if it does
        duplicate = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{output_dir}: two inputs would both be written to {duplicate}")
    if _case_insensitive(output_dir):
        folded: dict[str, str] = {}
        for item in inputs:
            other = folded.setdefault(item.output.casefold(), item.output)
            if other != item.output:
                raise InputError(f"{output_dir}: {other} and {item.output} are one file on this "
                                 "case-insensitive disk; rename one of the inputs")
    return AdHocInputs(inputs, output_dir)


def _check_writable(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{output_dir}: cannot write the output there ({exc.strerror or type(exc).__name__})") \
            from None


def _case_insensitive(folder: Path) -> bool:
    probe = folder / f".case-probe-{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    try:
        return (folder / probe.name.upper()).exists()
    finally:
        probe.unlink()


def _write_file_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


SUMMARY_COLUMNS = ("input", "output", "status", "reason", "detail", "input_width", "input_height",
                   "width", "height", "mode", "style_transform", "seconds")


def enhance_folder(input: str, output_dir: Path, models: EnhancementModels, params: EnhanceParams,
                   *, runtime: Runtime | None = None, settings: Settings | None = None,
                   inputs: AdHocInputs | None = None) -> FolderResult:
    """Enhance a folder of images, one image, or the images of a CSV/Parquet/JSONL feed into
    `output_dir` (names: the module's docstring), with the catalog's per-image step.

    `inputs` are those `open_inputs` checked before the models loaded (opened here if not given).
    Every input is treated as untrusted (`decode_untrusted`: size and pixel limits, allowed
    formats, orientation applied, colours converted to sRGB); one that is refused or fails is
    reported and the others go on. `enhance_summary.csv` in `output_dir` lists every input with
    its status, reason and detail; it is written whatever happens, also when the run stops on an
    unexpected error. In a folder the studio transform (if asked for) applies to every image; in
    a feed, to the rows in the style model's domain (`style=lifestyle`).
    """
    settings = settings or load_settings()
    runtime = runtime or select_runtime()
    check_models(models, params)
    opened = inputs or open_inputs(input, output_dir, settings)
    items: list[dict] = []
    summary_path = opened.output_dir / SUMMARY_FILE
    try:
        for item in opened.inputs:
            items.append(_enhance_one(item, opened.output_dir, models, params, runtime, settings))
    finally:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        _write_file_atomically(summary_path, buffer.getvalue().encode())
    return FolderResult(items, summary_path)


def _enhance_one(item: _Input, output_dir: Path, models: EnhancementModels, params: EnhanceParams,
                 runtime: Runtime, settings: Settings) -> dict:
    style = params.style_transform and (item.conditions is None or _matches(item.conditions, models.style_domain))
    record: dict[str, object] = {
        "input": item.name, "output": "", "status": "failed", "reason": "", "detail": "",
        "input_width": None, "input_height": None, "width": None, "height": None, "mode": "",
        "style_transform": style, "seconds": None}
    try:
        if item.problem is not None:
            raise item.problem
        assert item.source is not None  # an input has a source or a problem
        data = sources.fetch(item.source, settings)
        normal = decode_untrusted(data, max_pixels=settings.max_image_pixels, name=item.name)
        pixels = load_image(normal.png)
        enhanced = enhance_to_png(pixels, models, params.for_image(style), runtime, style=style)
        _write_file_atomically(output_dir / item.output, enhanced.png)
    except ImageRejected as exc:
        record.update(reason=exc.reason, detail=exc.detail)
    except EnhancementFailed as exc:
        record.update(reason=QUARANTINE_REASON, detail=f"{item.name}: {exc.detail}")
    except OSError as exc:  # writing the output (disk full, folder removed): this image only
        record.update(reason="write_error", detail=f"{item.name}: {output_dir / item.output}: "
                                                   f"{exc.strerror or type(exc).__name__}")
    else:
        record.update(output=item.output, status="enhanced", input_width=normal.width,
                      input_height=normal.height, width=enhanced.width, height=enhanced.height,
                      mode=enhanced.mode, seconds=round(enhanced.seconds, 4))
    return record
