"""A chunk of jobs: read the inputs, enhance them one at a time, write the outputs, and return
the manifest rows and quarantine records (the caller merges them, `finish_enhancement`).

Resumable without Prefect caching: outputs are content-addressed (`enhanced_image_key`) and
written atomically only if absent; the manifest is written once at the end. If a run dies in
between, the next run plans the same images again, finds their outputs in the lake and records
them without recomputing (`resumed`); only the unfinished images are enhanced.

A failure of one image (input bytes that do not match their sha256 or do not decode, a
`TileError`, out of memory) becomes a quarantine record (stage "enhance", reason
"enhancement_failed") naming the SKU, and the chunk goes on. Storage errors are not the
image's fault: they propagate, and the flow retries the chunk when they look transient
(`is_transient_storage_error`).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from PIL import Image

from catalog_enhance.tasks.enhance.choice import ModelRef
from catalog_enhance.tasks.enhance.image import EnhancementFailed, _message, enhance_to_png
from catalog_enhance.tasks.enhance.loaded import EnhancementModels
from catalog_enhance.tasks.enhance.params import EnhanceParams, inference_runtime
from catalog_enhance.tasks.enhance.plan import EnhanceJob
from catalog_enhance.tasks.imaging.codec import load_image
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.runtime import Runtime

STAGE = "enhance"
QUARANTINE_REASON = "enhancement_failed"


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
            assert data is not None  # `_fetch` gives ("output", bytes)
            with Image.open(io.BytesIO(data)) as existing:
                width, height, mode = existing.width, existing.height, existing.mode
            result.rows += _manifest_rows(job, refs, hashlib.sha256(data).hexdigest(), width, height, mode,
                                          0.0, device, now, run_id)
            result.resumed += 1
            continue
        try:
            if kind == "missing" or data is None:  # `_fetch` gives ("missing", None)
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
