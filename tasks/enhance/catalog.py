"""Enhancing the catalog, the pure core of the enhancement flow (and of ad-hoc folder runs).

    choose_models -> load_models (once per process) -> plan_enhancement -> enhance_jobs (per
    chunk) -> finish_enhancement (manifest + quarantine)

Which model: the SR champion recorded by the evaluation gate (`current_champion(lake, "sr")`);
until the gate has promoted one, the registered SR version with the best validation metric
(newest among equals), reported as `champion_source = "fallback: latest registered"`; or the
version a caller names. The optional studio transform is the CycleGAN champion (same rules),
whose X->Y generator runs on the super-resolved RGB (alpha passes through) of the catalog
images in the model's domain X (its `domain_x` filter, `style=lifestyle` by default).

Incremental: a current catalog image is enhanced only if the manifest has no row for (model
version, params_hash, input sha256, sku). `params_hash` is the hash of the parameters that
shape the output pixels for that image (`EnhanceParams.identity`: scale or target long side,
tile, overlap, and the style model version when the transform applies to that image), and it
is a part of the output key. So a re-run writes nothing, a new champion version enhances
everything again under its own keys (the old version's outputs stay), and a label change that
moves an image into or out of the style domain re-enhances exactly that image.

Resumable without Prefect caching: outputs are content-addressed (`enhanced_image_key`) and
written atomically only if absent; the manifest is written once at the end. If a run dies in
between, the next run plans the same images again, finds their outputs in the lake and records
them without recomputing (`resumed`); only the unfinished images are enhanced.

Stateless per image (Real-ESRGAN #658): `enhance_image` is a function of its arguments; the
loaded models are per-process, read-only state shared by every thread (`load_model` caches
them by checkpoint, so a thread pool or a Dask worker loads each model once, not per image).

A failure of one image (input bytes that do not match their sha256 or do not decode, a
`TileError`, out of memory) becomes a quarantine record (stage "enhance", reason
"enhancement_failed") naming the SKU, and the chunk goes on. Storage errors are not the
image's fault: they propagate, and the flow retries the chunk when they look transient
(`is_transient_storage_error`).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import threading
import time
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalog_enhance.data_contracts.enhancements import ENHANCEMENT_KEY_COLUMNS
from catalog_enhance.data_contracts.layout import enhanced_image_key, manifest_key
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.sources import uris as sources
from catalog_enhance.tasks.inference.tiling import (
    TileError,
    Tiling,
    super_resolve,
    super_resolve_to_long_side,
)
from catalog_enhance.tasks.inference.translate import TRANSLATION_TILING, translate_full_resolution
from catalog_enhance.tasks.lake.champions import current_champion
from catalog_enhance.tasks.imaging.codec import ImageRejected, decode_untrusted, encode_png, load_image
from catalog_enhance.tasks.sources.feeds import FEED_FORMATS, read_feed
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.tasks.lake.settings import Settings, load_settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.catalog.labels import filter_rows, parse_filters
from catalog_enhance.tasks.inference.trained import TrainedModel, find_version, load_trained
from catalog_enhance.tasks.runtime import Runtime, select_runtime

STAGE = "enhance"
QUARANTINE_REASON = "enhancement_failed"
CHAMPION_SOURCES = ("gate", "fallback: latest registered", "requested")
SUMMARY_FILE = "enhance_summary.csv"
# Extensions an input folder's images may have (anything else in the folder is left alone).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".tif", ".tiff", ".bmp",
                              ".avif", ".mpo"})


# Enhanced images are PNGs encoded with zlib's run-length strategy instead of PIL's default
# (level 6, default strategy): measured on 512 px catalog outputs, 7.7 ms an image against 30 ms
# (level 3 alone: 11.6 ms), for 14% more bytes than level 6 (bench/NOTES.md). Same pixels.
OUTPUT_PNG_COMPRESSION = {"compress_level": 3, "strategy": zlib.Z_RLE}


def inference_runtime(runtime: Runtime) -> Runtime:
    """The runtime enhancement runs models on: the training runtime, plus channels_last on CPU.

    oneDNN's NHWC convolutions are about twice as fast as NCHW ones on this kind of CPU (3x3
    64->64: ~430 vs ~200 GFLOP/s; the cpu-preset ESPCN: 87 vs 188 ms a 256 px image, see
    bench/NOTES.md). Training keeps NCHW: on its small patches channels_last did not help.
    """
    if runtime.device.type == "cpu" and not runtime.channels_last:
        return replace(runtime, channels_last=True)
    return runtime


# -- parameters ---------------------------------------------------------------------------------


class EnhanceParams(BaseModel):
    """How to enhance: by a `scale`, or to an exact `target_long_side` (which then wins over
    `scale`), with tiled inference; optionally followed by the CycleGAN studio transform."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scale: int | None = Field(2, ge=1, le=8)
    target_long_side: int | None = Field(None, ge=1, le=32768)
    tile: int = Field(256, ge=16)  # core tile side in input pixels
    overlap: int = Field(16, ge=0)  # context around each tile, in input pixels (>= receptive field)
    batch_tiles: int = Field(8, ge=1)  # tiles per forward pass: speed only, never the pixels
    style_transform: bool = False

    @model_validator(mode="before")
    @classmethod
    def _target_wins(cls, data):
        # `scale` has a default, so a caller who asks for a target size gets the target.
        if isinstance(data, dict) and data.get("target_long_side") is not None:
            data = {**data, "scale": None}
        return data

    @model_validator(mode="after")
    def _one_size(self):
        if self.scale is None and self.target_long_side is None:
            raise ValueError("give a scale or a target_long_side")
        return self

    @property
    def tiling(self) -> Tiling:
        """`tile`, `overlap` and `batch_tiles` as the one object tiled inference takes."""
        return Tiling(tile=self.tile, overlap=self.overlap, batch_tiles=self.batch_tiles)

    def for_image(self, style: bool) -> "EnhanceParams":
        """These parameters as applied to one image: the style transform only where it runs."""
        return self if style == self.style_transform else self.model_copy(update={"style_transform": style})

    def identity(self, style_version: str | None = None) -> dict:
        """Everything that decides the output pixels (`batch_tiles` does not), plus the style
        model's version when the transform runs."""
        identity = self.model_dump(exclude={"batch_tiles"})
        if self.style_transform:
            if not style_version:
                raise ValueError("style_transform needs the style model's version in the params identity")
            identity["style_model_version"] = style_version
        return identity

    def params_json(self, style_version: str | None = None) -> str:
        return json.dumps(self.identity(style_version), sort_keys=True, separators=(",", ":"))

    def params_hash(self, style_version: str | None = None) -> str:
        """12 hex of the sha256 of `params_json`: a part of every output key."""
        return hashlib.sha256(self.params_json(style_version).encode()).hexdigest()[:12]

    def describe(self) -> str:
        size = f"long side {self.target_long_side}" if self.target_long_side else f"x{self.scale}"
        return f"{size}, tile {self.tile}+{self.overlap}" + (", studio transform" if self.style_transform else "")


# -- which models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A registered version, small and picklable: what tasks receive instead of a module."""

    name: str
    version: str
    kind: str
    checkpoint_key: str

    @classmethod
    def from_row(cls, row: dict) -> "ModelRef":
        return cls(row["name"], row["version"], row["kind"], row["checkpoint_key"])


@dataclass(frozen=True)
class ChosenModel:
    ref: ModelRef
    source: str  # one of CHAMPION_SOURCES
    reason: str  # why this version, in a sentence


@dataclass(frozen=True)
class ModelChoice:
    sr: ChosenModel
    style: ChosenModel | None = None


def _registry_row(lake: Lake, version: str) -> dict:
    for row in list_versions(lake):
        if row["version"] == version:
            return row
    raise LookupError(f"version {version!r} is not in the model registry")


def _row_scale(row: dict) -> int | None:
    """The upscaling factor a registered SR version was trained for (None if not recorded)."""
    try:
        scale = json.loads(row["metadata_json"] or "{}").get("scale")
    except (TypeError, ValueError):
        return None
    return int(scale) if scale is not None else None


def choose_model(lake: Lake, kind: str, requested: str | None = None, *, scale: int | None = None) -> ChosenModel:
    """The version of `kind` to enhance with: `requested` (a name or version), else the gate's
    champion, else the registered version with the best validation metric (SR: the PSNR gain
    over bicubic, higher is better; other kinds: the newest).

    `scale` (SR only): the champion and the fallback must be models of that factor, so that
    registering a x3 or x4 version never makes a x2 night pick it (a requested version is taken
    as asked and checked later, by `check_models`).
    """
    if requested:
        row = find_version(lake, requested)
        if row["kind"] != kind:
            raise ValueError(f"{requested!r} is a {row['kind']} model ({row['version']}), not a {kind} model")
        return ChosenModel(ModelRef.from_row(row), "requested", f"{row['version']} was asked for")

    def fits(row: dict) -> bool:
        return scale is None or kind != "sr" or _row_scale(row) == scale

    champion = current_champion(lake, kind)
    if champion is not None:
        row = _registry_row(lake, champion.version)
        if fits(row):
            return ChosenModel(ModelRef.from_row(row), "gate",
                               f"champion since {champion.promoted_at:%Y-%m-%d %H:%M} UTC: {champion.reason}")
    rows = [r for r in list_versions(lake) if r["kind"] == kind and r["status"] != "retired" and fits(r)]
    if not rows:
        wanted = f"x{scale} {kind}" if scale is not None and kind == "sr" else kind
        raise LookupError(f"no registered {wanted} model in the lake: train one first (catalog-enhance train)")
    if kind == "sr":
        def rank(item):
            index, row = item
            metric = row["val_metric"]
            return (metric if metric is not None and math.isfinite(metric) else -math.inf, index)

        row = max(enumerate(rows), key=rank)[1]
        figure = "no validation metric" if row["val_metric"] is None else f"{row['val_metric_name']} {row['val_metric']:+.3f}"
        why = "no champion recorded by the evaluation gate yet" if champion is None else \
            f"the champion {champion.version} is not a x{scale} model"
        reason = f"{why}; best validation metric of {len(rows)} registered ({figure})"
    else:
        row = rows[-1]
        reason = f"no champion recorded by the evaluation gate yet; newest of {len(rows)} registered"
    return ChosenModel(ModelRef.from_row(row), "fallback: latest registered", reason)


def choose_models(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                  style_model: str | None = None) -> ModelChoice:
    style = choose_model(lake, "cyclegan", style_model) if params.style_transform else None
    return ModelChoice(sr=choose_model(lake, "sr", model, scale=params.scale), style=style)


# -- loaded models: per-process, read-only ---------------------------------------------------------


@dataclass(frozen=True)
class EnhancementModels:
    """Modules in eval mode on their device; shared by every thread, never mutated."""

    sr: TrainedModel
    style: TrainedModel | None = None

    @property
    def scale(self) -> int:
        return int(self.sr.metadata["scale"])

    @property
    def channels(self) -> int:
        return int(self.sr.metadata["channels"])

    @property
    def generator(self) -> torch.nn.Module:
        """The CycleGAN's X -> Y generator (lifestyle -> studio by default)."""
        if self.style is None:
            raise ValueError("no style model loaded")
        return self.style.module.G_XY

    @property
    def style_domain(self) -> str | list[str] | None:
        """The label filter of the images the transform is for (the model's domain X)."""
        return None if self.style is None else self.style.metadata.get("domain_x", "style=lifestyle")


_MODEL_CACHE: OrderedDict[tuple, TrainedModel] = OrderedDict()
_MODEL_CACHE_LOCK = threading.Lock()
_MODEL_CACHE_SIZE = 4  # a champion and a style model, plus room for a new champion mid-life


def load_model(lake: Lake, ref: ModelRef, runtime: Runtime) -> TrainedModel:
    """Load a registered version for inference once per process (thread-safe), then reuse it.

    Keyed by lake, checkpoint and device: a Dask worker or a thread pool loads each model once;
    a different version or lake is a different entry. The lock is held while loading so two
    threads never load the same checkpoint twice.
    """
    runtime = inference_runtime(runtime)
    key = (lake.root_uri, ref.checkpoint_key, ref.version, str(runtime.device), runtime.channels_last)
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = load_trained(lake, {"version": ref.version, "checkpoint_key": ref.checkpoint_key}, runtime)
            _MODEL_CACHE[key] = model
            while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
        _MODEL_CACHE.move_to_end(key)
        return model


def load_models(lake: Lake, choice: ModelChoice, runtime: Runtime) -> EnhancementModels:
    style = load_model(lake, choice.style.ref, runtime) if choice.style is not None else None
    return EnhancementModels(sr=load_model(lake, choice.sr.ref, runtime), style=style)


def check_models(models: EnhancementModels, params: EnhanceParams) -> None:
    """Refuse, before any image is read, a model that cannot do what the parameters ask."""
    if models.sr.kind != "sr":
        raise ValueError(f"{models.sr.version} is a {models.sr.kind} model, not a super-resolution model")
    if params.scale is not None and params.scale != models.scale:
        raise ValueError(
            f"{models.sr.version} is a x{models.scale} model but scale={params.scale} was asked for: use "
            f"scale={models.scale}, a target long side, or a x{params.scale} model (model=<name or version>)"
        )
    if params.style_transform:
        if models.style is None or models.style.kind != "cyclegan":
            raise ValueError("the studio transform needs a CycleGAN model")
        parse_filters(models.style_domain)  # a malformed domain fails here, not per image


def load_for_params(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                    style_model: str | None = None, runtime: Runtime | None = None
                    ) -> tuple[ModelChoice, EnhancementModels]:
    """Choose, load and check the models for `params` (what a run and an ad-hoc call both need)."""
    choice = choose_models(lake, params, model=model, style_model=style_model)
    models = load_models(lake, choice, runtime or select_runtime())
    check_models(models, params)
    return choice, models


# -- one image ------------------------------------------------------------------------------------


class EnhancementFailed(ValueError):
    """One image could not be enhanced; `detail` says why (stable between runs)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class EnhancedImage:
    png: bytes
    width: int
    height: int
    mode: str
    seconds: float


def enhance_image(pixels: np.ndarray, models: EnhancementModels, params: EnhanceParams, runtime: Runtime,
                  *, style: bool = False) -> np.ndarray:
    """Super-resolve one uint8 (H, W, 3|4) RGB(A) image by the parameters, then (``style``) run
    the studio transform on its RGB; alpha is upscaled beside the colour, never flattened."""
    runtime = inference_runtime(runtime)  # the layout `load_model` gave the modules
    if params.target_long_side is not None:
        out = super_resolve_to_long_side(pixels, {models.scale: models.sr.module}, params.target_long_side,
                                         channels=models.channels, tiling=params.tiling, runtime=runtime)
    else:
        out = super_resolve(pixels, models.sr.module, scale=params.scale, channels=models.channels,
                            tiling=params.tiling, runtime=runtime)
    if style:
        # Only the tile side comes from the parameters: overlap and batch size are translation's own.
        tiling = replace(TRANSLATION_TILING, tile=params.tile)
        out = translate_full_resolution(out, models.generator, tiling=tiling, runtime=runtime)
    return out


def _message(exc: BaseException) -> str:
    # No memory addresses: the same failure must give the same detail (quarantine de-duplication).
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(exc).__name__}: {exc}")


def enhance_to_png(pixels: np.ndarray, models: EnhancementModels, params: EnhanceParams, runtime: Runtime,
                   *, style: bool = False) -> EnhancedImage:
    """`enhance_image` then `encode_png`: the one per-image step of catalog and folder runs.

    Raises `EnhancementFailed` for a failure of this image (a tile, memory, an unusable size);
    anything else (a bug) propagates.
    """
    started = time.perf_counter()
    try:
        out = enhance_image(pixels, models, params, runtime, style=style)
    except (TileError, torch.OutOfMemoryError, MemoryError) as exc:
        if isinstance(exc, torch.OutOfMemoryError) or isinstance(exc.__cause__, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise EnhancementFailed(f"out of memory: {_message(exc)}") from exc
        raise EnhancementFailed(f"inference failed: {_message(exc)}") from exc
    except (ValueError, RuntimeError) as exc:
        raise EnhancementFailed(f"cannot enhance: {_message(exc)}") from exc
    png = encode_png(out, **OUTPUT_PNG_COMPRESSION)
    height, width = out.shape[:2]
    return EnhancedImage(png, width, height, "RGBA" if out.shape[2] == 4 else "RGB", time.perf_counter() - started)


# -- planning ---------------------------------------------------------------------------------------


class SkuRef(NamedTuple):
    sku: str
    catalog_version: int
    source_uri: str


@dataclass(frozen=True)
class EnhanceJob:
    """One input image to enhance under one params identity, for every SKU that shows it."""

    input_sha256: str
    input_key: str
    width: int
    height: int
    style_transform: bool
    params_hash: str
    params_json: str
    output_key: str
    skus: tuple[SkuRef, ...]


def plan_enhancement(catalog_current: pa.Table, manifest: pa.Table, champion: ModelRef, params: EnhanceParams,
                     *, style: ModelRef | None = None, style_domain: str | list[str] | None = None
                     ) -> list[EnhanceJob]:
    """The jobs for every current catalog row (`current_catalog(...)`) without a manifest row for
    (champion version, its params_hash, input sha256, sku). Reads nothing but the tables."""
    if params.style_transform and style is None:
        raise ValueError("style_transform needs the style model")
    in_domain: set[str] = set()
    if params.style_transform:
        in_domain = set(filter_rows(catalog_current, style_domain or "style=lifestyle").column("sku").to_pylist())
    columns = [manifest.column(c).to_pylist() for c in ENHANCEMENT_KEY_COLUMNS]
    done = set(zip(*columns))
    groups: dict[tuple[str, str], list[dict]] = {}
    identities: dict[str, tuple[str, bool]] = {}
    for row in sorted(catalog_current.to_pylist(), key=lambda r: r["sku"]):
        styled = row["sku"] in in_domain
        image_params = params.for_image(styled)
        style_version = style.version if styled else None
        params_hash = image_params.params_hash(style_version)
        identities[params_hash] = (image_params.params_json(style_version), styled)
        if (champion.version, params_hash, row["image_sha256"], row["sku"]) in done:
            continue
        groups.setdefault((row["image_sha256"], params_hash), []).append(row)
    jobs = []
    for (sha, params_hash), rows in sorted(groups.items()):
        first = rows[0]
        params_json, styled = identities[params_hash]
        jobs.append(EnhanceJob(
            input_sha256=sha,
            input_key=first["image_key"],
            width=first["width"],
            height=first["height"],
            style_transform=styled,
            params_hash=params_hash,
            params_json=params_json,
            output_key=enhanced_image_key(champion.name, champion.version, params_hash, sha),
            skus=tuple(SkuRef(r["sku"], int(r["version"]), r["source_uri"]) for r in rows),
        ))
    return jobs


def default_chunk_size(jobs: int, batch_size: int) -> int:
    """About 8 chunks (progress to watch, work to spread over workers), 8 to `batch_size` images each."""
    return max(1, min(batch_size, max(8, math.ceil(jobs / 8))))


# -- a chunk of jobs ----------------------------------------------------------------------------------


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)  # new enhancement manifest rows
    quarantine: list[dict] = field(default_factory=list)  # QUARANTINE records (stage "enhance")
    images_enhanced: int = 0  # images run through the models here
    outputs_written: int = 0
    resumed: int = 0  # outputs already in the lake (an interrupted run): recorded, not recomputed
    output_pixels: int = 0  # of the images enhanced here
    seconds: float = 0.0  # wall time

    def extend(self, other: "ChunkResult") -> None:
        self.rows += other.rows
        self.quarantine += other.quarantine
        self.images_enhanced += other.images_enhanced
        self.outputs_written += other.outputs_written
        self.resumed += other.resumed
        self.output_pixels += other.output_pixels
        self.seconds += other.seconds


def _quarantine_records(job: EnhanceJob, detail: str) -> list[dict]:
    return [
        {"stage": STAGE, "sku": ref.sku, "feed_row": None, "image_uri": ref.source_uri,
         "reason": QUARANTINE_REASON, "detail": f"SKU {ref.sku}: {job.input_key}: {detail}"}
        for ref in job.skus
    ]


def _fetch(lake: Lake, job: EnhanceJob) -> tuple[str, bytes | None]:
    """("output", bytes) when the output already exists, else ("input", bytes), or ("missing",
    None) when the input object is gone. Other storage errors propagate."""
    if lake.exists(job.output_key):
        return "output", lake.read_bytes(job.output_key)
    try:
        return "input", lake.read_bytes(job.input_key)
    except FileNotFoundError:
        return "missing", None


def _prefetched(lake: Lake, jobs: Sequence[EnhanceJob], workers: int) -> Iterator[tuple[EnhanceJob, str, bytes | None]]:
    """Fetch up to 2 x `workers` jobs ahead on threads while the caller computes."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="enhance-io") as pool:
        pending: deque[tuple[EnhanceJob, Future]] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append((job, pool.submit(_fetch, lake, job)))
            if len(pending) >= 2 * max(1, workers):
                break
        while pending:
            job, future = pending.popleft()
            kind, data = future.result()  # a storage error surfaces here, in order
            next_job = next(queue, None)
            if next_job is not None:
                pending.append((next_job, pool.submit(_fetch, lake, next_job)))
            yield job, kind, data


def _decode_input(data: bytes, job: EnhanceJob) -> np.ndarray:
    if hashlib.sha256(data).hexdigest() != job.input_sha256:
        raise EnhancementFailed("corrupt input: its bytes do not match their sha256 (changed in the lake)")
    try:
        return load_image(data)
    except Exception as exc:  # noqa: BLE001 - one decoder call on bytes in hand: any failure means corrupt
        raise EnhancementFailed(f"corrupt input: cannot decode: {_message(exc)}") from exc


def _manifest_rows(job: EnhanceJob, models_ref: tuple[ModelRef, ModelRef | None], output_sha: str,
                   width: int, height: int, mode: str, seconds: float, device: str, now: datetime,
                   run_id: str | None) -> list[dict]:
    sr, style = models_ref
    return [
        {
            "sku": ref.sku, "catalog_version": ref.catalog_version,
            "input_sha256": job.input_sha256, "input_key": job.input_key,
            "model_name": sr.name, "model_version": sr.version,
            "params_hash": job.params_hash, "params_json": job.params_json,
            "style_model_name": style.name if job.style_transform and style else None,
            "style_model_version": style.version if job.style_transform and style else None,
            "output_key": job.output_key, "output_sha256": output_sha,
            "width": width, "height": height, "mode": mode,
            "input_width": job.width, "input_height": job.height,
            "seconds": float(seconds), "device": device, "created_at": now, "run_id": run_id,
        }
        for ref in job.skus
    ]


def enhance_jobs(lake: Lake, jobs: Sequence[EnhanceJob], models: EnhancementModels, params: EnhanceParams,
                 runtime: Runtime, *, run_id: str | None = None, io_workers: int = 4) -> ChunkResult:
    """Enhance a chunk of jobs one image at a time (inputs prefetched on `io_workers` threads).

    Each output is written atomically, only if absent; an output already in the lake is recorded
    without recomputing. A failing image is quarantined (every SKU that shows it) and the chunk
    goes on; storage errors propagate (the caller retries the chunk, which then resumes).
    """
    started = time.perf_counter()
    result = ChunkResult()
    refs = (ModelRef(models.sr.name, models.sr.version, models.sr.kind, models.sr.checkpoint_key),
            None if models.style is None else ModelRef(models.style.name, models.style.version,
                                                       models.style.kind, models.style.checkpoint_key))
    if any(job.style_transform for job in jobs) and models.style is None:
        raise ValueError("jobs ask for the studio transform but no style model was loaded")
    device = inference_runtime(runtime).describe()
    for job, kind, data in _prefetched(lake, jobs, io_workers):
        now = datetime.now(timezone.utc)
        if kind == "output":
            with Image.open(io.BytesIO(data)) as existing:
                width, height, mode = existing.width, existing.height, existing.mode
            result.rows += _manifest_rows(job, refs, hashlib.sha256(data).hexdigest(), width, height, mode,
                                          0.0, device, now, run_id)
            result.resumed += 1
            continue
        try:
            if kind == "missing":
                raise EnhancementFailed("missing input: the normalised image is not in the lake")
            pixels = _decode_input(data, job)
            enhanced = enhance_to_png(pixels, models, params.for_image(job.style_transform), runtime,
                                      style=job.style_transform)
        except EnhancementFailed as exc:
            result.quarantine += _quarantine_records(job, exc.detail)
            continue
        result.outputs_written += int(lake.write_bytes_if_absent(job.output_key, enhanced.png))
        result.images_enhanced += 1
        result.output_pixels += enhanced.width * enhanced.height
        result.rows += _manifest_rows(job, refs, hashlib.sha256(enhanced.png).hexdigest(), enhanced.width,
                                      enhanced.height, enhanced.mode, enhanced.seconds, device, now, run_id)
    result.seconds = time.perf_counter() - started
    return result


# -- transient or not -------------------------------------------------------------------------------

# errno values of an OSError that say "try again": busy/throttled (s3fs maps SlowDown and 503
# to EBUSY), a remote or I/O error (500 -> EREMOTEIO, unknown codes -> EIO), timeouts, resets.
_TRANSIENT_ERRNOS = frozenset({
    errno.EBUSY, errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
    errno.ECONNABORTED, errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH,
    getattr(errno, "EREMOTEIO", errno.EIO),
})
_TRANSIENT_MODULES = ("botocore", "aiohttp", "urllib3", "requests", "httpx")


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = getattr(response, "status_code", None) or getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def is_transient_storage_error(exc: BaseException | None) -> bool:
    """True for errors worth retrying (connections, timeouts, throttling, server errors), looked
    for along the exception's causes; False for deterministic ones (missing object, access
    denied, a corrupt image, a failed tile, a contract violation)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if type(exc) is OSError and exc.errno in _TRANSIENT_ERRNOS:
            return True
        if type(exc).__module__.split(".")[0] in _TRANSIENT_MODULES:
            status = _http_status(exc)  # None: no response at all (connection, DNS, read timeout)
            if status is None or status >= 500 or status == 429:
                return True
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return False


# -- finishing --------------------------------------------------------------------------------------


@dataclass
class FinishResult:
    total: ChunkResult
    rows_added: int
    manifest_written: bool
    quarantine_appended: int


def finish_enhancement(lake: Lake, results: Iterable[ChunkResult], *, run_id: str,
                       now: datetime | None = None) -> FinishResult:
    """Merge the chunks: append their rows to the manifest (validated, written atomically, only
    when there is something new) and their records to the quarantine log (de-duplicated)."""
    total = ChunkResult()
    for result in results:
        total.extend(result)
    added = manifests.append(lake, "enhancements", total.rows, key=ENHANCEMENT_KEY_COLUMNS) if total.rows else 0
    appended = 0
    if total.quarantine:
        appended = manifests.quarantine(lake, total.quarantine, run_id=run_id, now=now or datetime.now(timezone.utc))
    return FinishResult(total, added, added > 0, appended)


# -- a whole run --------------------------------------------------------------------------------------


@dataclass
class PreparedEnhancement:
    choice: ModelChoice
    models: EnhancementModels
    params: EnhanceParams
    jobs: list[EnhanceJob]
    images_considered: int  # current catalog SKUs
    run_id: str
    started: float


def prepare_enhancement(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                        style_model: str | None = None, runtime: Runtime | None = None,
                        run_id: str | None = None) -> PreparedEnhancement:
    """Choose and load the models once, check them, and plan the jobs."""
    started = time.perf_counter()
    choice, models = load_for_params(lake, params, model=model, style_model=style_model, runtime=runtime)
    catalog = manifests.current_catalog(manifests.read(lake, "catalog"))
    jobs = plan_enhancement(catalog, manifests.read(lake, "enhancements"), choice.sr.ref, params,
                            style=None if choice.style is None else choice.style.ref,
                            style_domain=models.style_domain)
    return PreparedEnhancement(choice, models, params, jobs, catalog.num_rows, run_id or uuid.uuid4().hex, started)


@dataclass
class EnhanceSummary:
    run_id: str
    lake_uri: str
    model_name: str
    model_version: str
    champion_source: str
    champion_reason: str
    params: str  # EnhanceParams.describe()
    params_hash: str  # of the images without the studio transform
    style_model_version: str | None = None
    style_source: str | None = None
    images_considered: int = 0  # current catalog SKUs
    enhanced: int = 0  # SKUs newly recorded in the manifest by this run
    images_computed: int = 0  # distinct images run through the models
    resumed: int = 0  # outputs found in the lake from an interrupted run: recorded, not recomputed
    skipped: int = 0  # SKUs already enhanced for (version, params): nothing done
    quarantined: int = 0  # SKUs whose image failed
    quarantine_appended: int = 0
    outputs_written: int = 0
    output_megapixels: float = 0.0
    enhance_seconds: float = 0.0  # wall time of the chunks
    seconds: float = 0.0  # wall time of the whole run
    manifest_written: bool = False
    manifest_key: str = manifest_key("enhancements")
    quarantine: list[dict] = field(default_factory=list, repr=False)

    @property
    def megapixels_per_second(self) -> float:
        return self.output_megapixels / self.enhance_seconds if self.enhance_seconds > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.enhance_seconds if self.enhance_seconds > 0 else 0.0

    def counts(self) -> dict[str, object]:
        style = {"style model": f"{self.style_model_version} ({self.style_source})"} if self.style_model_version else {}
        return {
            "model": f"{self.model_name} {self.model_version}",
            "champion source": self.champion_source,
            **style,
            "params": f"{self.params} ({self.params_hash})",
            "images considered": self.images_considered,
            "enhanced": self.enhanced,
            "  run through the model": self.images_computed,
            "  resumed (output already in the lake)": self.resumed,
            "skipped (already done)": self.skipped,
            "quarantined": self.quarantined,
            "outputs written": self.outputs_written,
            "output megapixels": round(self.output_megapixels, 2),
            "enhance seconds": round(self.enhance_seconds, 2),
            "MP/s": round(self.megapixels_per_second, 3),
            "images/s": round(self.images_per_second, 2),
            "seconds": round(self.seconds, 2),
            "manifest written": "yes" if self.manifest_written else "no (nothing new)",
        }

    def verdict(self) -> str:
        model = f"{self.model_name} {self.model_version} ({self.champion_source})"
        if self.enhanced or self.quarantined:
            return (f"enhancement: {self.enhanced} image(s) enhanced by {model}, {self.skipped} already done, "
                    f"{self.quarantined} quarantined")
        return f"enhancement: nothing new: all {self.skipped} image(s) already enhanced by {model}"

    def to_markdown(self) -> str:
        lines = ["# Catalog enhancement", "", f"Lake `{self.lake_uri}`; {self.verdict()}", "",
                 f"Model choice: {self.champion_reason}", "", "| what | value |", "|---|---|"]
        lines += [f"| {key.strip()} | {value} |" for key, value in self.counts().items()]
        return "\n".join(lines) + "\n"


def summarize(lake: Lake, prepared: PreparedEnhancement, finished: FinishResult,
              enhance_seconds: float | None = None) -> EnhanceSummary:
    """`enhance_seconds`: the wall time of the chunk stage when chunks ran concurrently
    (default: the chunks' wall times added up, right when they ran one after another)."""
    total, choice = finished.total, prepared.choice
    planned = sum(len(job.skus) for job in prepared.jobs)
    return EnhanceSummary(
        run_id=prepared.run_id,
        lake_uri=lake.root_uri,
        model_name=choice.sr.ref.name,
        model_version=choice.sr.ref.version,
        champion_source=choice.sr.source,
        champion_reason=choice.sr.reason,
        params=prepared.params.describe(),
        params_hash=prepared.params.for_image(False).params_hash(),
        style_model_version=None if choice.style is None else choice.style.ref.version,
        style_source=None if choice.style is None else choice.style.source,
        images_considered=prepared.images_considered,
        enhanced=finished.rows_added,
        images_computed=total.images_enhanced,
        resumed=total.resumed,
        skipped=prepared.images_considered - planned,
        quarantined=len(total.quarantine),
        quarantine_appended=finished.quarantine_appended,
        outputs_written=total.outputs_written,
        output_megapixels=total.output_pixels / 1e6,
        enhance_seconds=total.seconds if enhance_seconds is None else enhance_seconds,
        seconds=time.perf_counter() - prepared.started,
        manifest_written=finished.manifest_written,
        quarantine=total.quarantine,
    )


def enhance_catalog(lake: Lake, params: EnhanceParams | None = None, *, model: str | None = None,
                    style_model: str | None = None, runtime: Runtime | None = None,
                    chunk_size: int | None = None, run_id: str | None = None) -> EnhanceSummary:
    """The whole run without Prefect: chunks one after another (the flow maps them as tasks)."""
    params = params or EnhanceParams()
    runtime = runtime or select_runtime()
    prepared = prepare_enhancement(lake, params, model=model, style_model=style_model, runtime=runtime,
                                   run_id=run_id)
    size = chunk_size or default_chunk_size(len(prepared.jobs), 256)
    results = [
        enhance_jobs(lake, prepared.jobs[i : i + size], prepared.models, params, runtime, run_id=prepared.run_id)
        for i in range(0, len(prepared.jobs), size)
    ]
    return summarize(lake, prepared, finish_enhancement(lake, results, run_id=prepared.run_id))


# -- ad-hoc: a folder of images, or a feed ----------------------------------------------------------


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
        record = {"input": item.name, "output": "", "status": "failed", "reason": "", "detail": "",
                  "input_width": None, "input_height": None, "width": None, "height": None, "mode": "",
                  "style_transform": item.style, "seconds": None}
        try:
            if item.problem is not None:
                raise item.problem
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
