"""LR/HR training pairs from catalog images: the pure core of the make-pairs flow.

For each current catalog image (latest version per SKU) and each scale, `crops_per_image` HR crops
(`hr_size` square, positions fixed by the image's sha256, `hr_size` and the seed, shared by all
scales; an image smaller than `hr_size` gives one mod-cropped full image instead) and their LR
inputs made by the degradation pipeline (`tasks.degrade`, MATLAB bicubic by default). RGBA images are composited onto white first: SR trains on RGB. Pairs are
stored under `pair_key(config_hash, ...)` and described by the PAIRS manifest, which carries the
conditional labels and a train/val/test split drawn by hashing the product id, so every image of
one product (its studio and lifestyle shots, all its SKUs) lands in exactly one split.

Work already done for (image_sha256, config_hash, scale) is never redone, and the manifest is
only rewritten when something new was made, so a re-run with the same config writes nothing.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalog_enhance.data_contracts.contracts import CATALOG, LABEL_PREFIX, PAIRS
from catalog_enhance.data_contracts.layout import manifest_key, pair_key
from catalog_enhance.tasks.imaging.degrade import DegradationConfig, canonical_json, degrade
from catalog_enhance.tasks.imaging.degrade import config_hash as hash_of_config
from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.ingest import append_quarantine, current_catalog, load_quarantine
from catalog_enhance.tasks.imaging.resize import mod_crop
from catalog_enhance.tasks.lake.storage import Lake

SUPPORTED_SCALES = (2, 3, 4)
DEFAULT_SPLIT_SALT = "catalog-enhance-split-v1"
QUARANTINE_STAGE = "pairs"


class SplitFractions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        if not math.isclose(self.train + self.val + self.test, 1.0, abs_tol=1e-9):
            raise ValueError(f"split fractions must sum to 1, got {self.train}+{self.val}+{self.test}")
        return self


class PairsConfig(BaseModel):
    """Everything that decides which pairs exist and what their pixels are."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scales: tuple[int, ...] = SUPPORTED_SCALES
    # HR crop side; a multiple of 12 so one crop divides evenly by every scale 2, 3 and 4.
    hr_size: int = Field(192, ge=24)
    crops_per_image: int = Field(2, ge=1, le=64)
    degradation: DegradationConfig = DegradationConfig()
    splits: SplitFractions = SplitFractions()
    split_salt: str = DEFAULT_SPLIT_SALT
    seed: int = Field(0, ge=0)
    # An LR side shorter than this is useless for training: such (image, scale) is quarantined.
    min_lr_side: int = Field(8, ge=1)

    @field_validator("scales")
    @classmethod
    def _scales(cls, v):
        if not v or len(set(v)) != len(v) or any(s not in SUPPORTED_SCALES for s in v):
            raise ValueError(f"scales must be distinct values among {SUPPORTED_SCALES}, got {v}")
        return tuple(sorted(v))

    @field_validator("hr_size")
    @classmethod
    def _hr_size(cls, v):
        if v % 12:
            raise ValueError(f"hr_size must be a multiple of 12 (divisible by 2, 3 and 4), got {v}")
        return v

    @model_validator(mode="after")
    def _crops_give_usable_lr(self):
        if self.hr_size // max(self.scales) < self.min_lr_side:
            raise ValueError(
                f"hr_size {self.hr_size} gives {self.hr_size // max(self.scales)} px LR crops at "
                f"x{max(self.scales)}, below min_lr_side {self.min_lr_side}"
            )
        return self

    @property
    def config_hash(self) -> str:
        # `scales` is left out: each scale's pairs are made independently of the others, so
        # adding a scale later reuses (and never rewrites) the pairs already made.
        return hash_of_config(self, exclude={"scales"})


class UnpairableImage(ValueError):
    """A catalog image that cannot give pairs; `reason` is a QUARANTINE reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PairJob:
    """One catalog image and the scales still to make for it."""

    row: dict
    scales: tuple[int, ...]


@dataclass
class PairsPlan:
    config_hash: str
    jobs: list[PairJob]
    images_considered: int
    skipped_existing: int  # (image, scale) combinations already in the manifest
    duplicate_images: int  # current SKUs whose image is another SKU's (paired once)
    quarantine: list[dict]


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)


@dataclass
class PairsResult:
    config_hash: str
    rows: list[dict]  # new PAIRS rows made by this run
    quarantine: list[dict]  # QUARANTINE rows (stage "pairs") found by this run
    images_considered: int
    skipped_existing: int
    duplicate_images: int
    manifest_written: bool

    def by_split_scale(self) -> dict[str, int]:
        """New pairs per split and scale, keyed 'train/x2'."""
        counter = Counter(f"{r['split']}/x{r['scale']}" for r in self.rows)
        return dict(sorted(counter.items()))


class PairsSummary(BaseModel):
    config_hash: str
    images_considered: int
    pairs_written: int
    pairs_by_split_scale: dict[str, int]
    skipped_existing: int
    duplicate_images: int
    quarantined: int  # problems found by this run
    quarantine_appended: int  # of which new to the quarantine manifest
    manifest_written: bool
    seconds: float

    def counts(self) -> dict[str, object]:
        """What a person wants to see, in the order to show it (CLI, nightly summary)."""
        return {
            "config": self.config_hash,
            "images considered": self.images_considered,
            "pairs written": self.pairs_written,
            **{f"  {key}": n for key, n in self.pairs_by_split_scale.items()},
            "already paired (skipped)": self.skipped_existing,
            "duplicate images (paired once)": self.duplicate_images,
            "quarantined": self.quarantined,
            "  new in the quarantine manifest": self.quarantine_appended,
            "manifest written": "yes" if self.manifest_written else "no (nothing new)",
            "seconds": self.seconds,
        }

    def to_markdown(self) -> str:
        lines = ["## make-pairs", "", "| what | value |", "|---|---|"]
        lines += [f"| {key.strip()} | {value} |" for key, value in self.counts().items()]
        return "\n".join(lines) + "\n"


def summarize(result: PairsResult, quarantine_appended: int, seconds: float) -> PairsSummary:
    return PairsSummary(
        config_hash=result.config_hash,
        images_considered=result.images_considered,
        pairs_written=len(result.rows),
        pairs_by_split_scale=result.by_split_scale(),
        skipped_existing=result.skipped_existing,
        duplicate_images=result.duplicate_images,
        quarantined=len(result.quarantine),
        quarantine_appended=quarantine_appended,
        manifest_written=result.manifest_written,
        seconds=round(seconds, 3),
    )


# -- split --------------------------------------------------------------------------------------


def assign_split(
    product_id: str,
    fractions: SplitFractions | Sequence[float] = SplitFractions(),
    salt: str = DEFAULT_SPLIT_SALT,
) -> str:
    """'train', 'val' or 'test' for a product, from a hash of (salt, product_id) alone.

    Deterministic and independent of every other product, so a product's split never changes
    when new products arrive. `fractions` is a SplitFractions or (train, val, test).
    """
    if not isinstance(fractions, SplitFractions):
        fractions = SplitFractions(train=fractions[0], val=fractions[1], test=fractions[2])
    digest = hashlib.sha256(f"{salt}\x00{product_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.val:
        return "val"
    return "test"


# -- one image ----------------------------------------------------------------------------------


def decode_rgb(png_bytes: bytes, name: str) -> np.ndarray:
    """Decode a normalised PNG to (H, W, 3) uint8 RGB, transparency composited onto white."""
    try:
        return load_rgb(png_bytes)
    except Exception as exc:  # noqa: BLE001 - one decoder call on stored bytes: any failure means "corrupt"
        message = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))  # keep details stable between runs
        raise UnpairableImage("corrupt", f"cannot decode {name}: {type(exc).__name__}: {message}") from exc


def crop_origins(image_sha256: str, width: int, height: int, config: PairsConfig) -> list[tuple[int, int]]:
    """(x, y) of each HR crop: random but fixed by the image, seed and hr_size; shared by all
    scales and all degradations (so degradation variants are compared on the same HR crops).

    An image with a side below `hr_size` gives one crop, the whole image, at (0, 0).
    """
    if min(width, height) < config.hr_size:
        return [(0, 0)]
    rng = np.random.default_rng([config.seed, int(image_sha256[:16], 16), config.hr_size])
    return [
        (int(rng.integers(0, width - config.hr_size + 1)), int(rng.integers(0, height - config.hr_size + 1)))
        for _ in range(config.crops_per_image)
    ]


def hr_shape(width: int, height: int, scale: int, config: PairsConfig) -> tuple[int, int]:
    """(width, height) of the HR crops of an image at a scale."""
    if min(width, height) >= config.hr_size:
        return config.hr_size, config.hr_size
    return width - width % scale, height - height % scale


def too_small(width: int, height: int, scale: int, config: PairsConfig) -> str | None:
    """Why an image cannot give pairs at a scale, or None."""
    w, h = hr_shape(width, height, scale, config)
    if min(w, h) // scale < config.min_lr_side:
        return (
            f"{width}x{height} px is too small for x{scale}: the LR side would be "
            f"{min(w, h) // scale} px (< {config.min_lr_side})"
        )
    return None


def _to_uint8(img: np.ndarray) -> np.ndarray:
    # MATLAB's im2uint8: round half up, saturate.
    return np.clip(np.floor(img * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _labels(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(LABEL_PREFIX)}


def make_pairs_for_image(
    png_bytes: bytes, row: dict, config: PairsConfig, scales: Sequence[int] | None = None
) -> list[tuple[bytes, bytes, dict]]:
    """(hr_png, lr_png, pairs_row) for each scale and crop of one catalog image.

    `row` is a CATALOG row (dict). Raises `UnpairableImage` when the image cannot be decoded or
    is too small for a requested scale; nothing is written here.
    """
    sha = row["image_sha256"]
    name = f"{row['image_key']} (sku {row['sku']!r})"
    pixels = decode_rgb(png_bytes, name)
    height, width = pixels.shape[:2]
    scales = tuple(scales or config.scales)
    for scale in scales:
        problem = too_small(width, height, scale, config)
        if problem:
            raise UnpairableImage("unsupported_image", f"{name}: {problem}")
    cfg_hash = config.config_hash
    degradation = canonical_json(config.degradation)
    split = assign_split(row["product_id"], config.splits, config.split_salt)
    created_at = datetime.now(timezone.utc)
    origins = crop_origins(sha, width, height, config)
    out = []
    for scale in scales:
        for crop_index, (x, y) in enumerate(origins):
            if min(width, height) >= config.hr_size:
                hr = pixels[y : y + config.hr_size, x : x + config.hr_size]
            else:
                hr = mod_crop(pixels, scale)  # the whole image, divisible by the scale
            crop_h, crop_w = hr.shape[:2]
            rng = np.random.default_rng([config.seed, int(sha[:16], 16), int(cfg_hash, 16), crop_index, scale])
            # Degrade the quantised HR so the pair is consistent with the HR PNG a model sees.
            lr = _to_uint8(degrade(hr.astype(np.float64) / 255.0, scale, config.degradation, rng))
            assert lr.shape[0] * scale == crop_h and lr.shape[1] * scale == crop_w, (lr.shape, scale)
            hr_key = pair_key(cfg_hash, sha, scale, crop_index, "hr")
            lr_key = pair_key(cfg_hash, sha, scale, crop_index, "lr")
            pair_row = {
                "pair_id": f"{cfg_hash}-{sha[:16]}-x{scale}-c{crop_index}",
                "config_hash": cfg_hash,
                "sku": row["sku"],
                "product_id": row["product_id"],
                "catalog_version": row["version"],
                "image_sha256": sha,
                "split": split,
                "scale": scale,
                "crop_index": crop_index,
                "crop_x": x,
                "crop_y": y,
                "hr_key": hr_key,
                "lr_key": lr_key,
                "hr_width": crop_w,
                "hr_height": crop_h,
                "lr_width": lr.shape[1],
                "lr_height": lr.shape[0],
                "degradation": degradation,
                "category": row["category"],
                "style": row["style"],
                "created_at": created_at,
                **_labels(row),
            }
            out.append((_png(np.ascontiguousarray(hr)), _png(lr), pair_row))
    return out


# -- the catalog --------------------------------------------------------------------------------


def _quarantine(row: dict, reason: str, detail: str) -> dict:
    """A QUARANTINE record for a catalog row (run_id and time are set when it is recorded)."""
    return {
        "stage": QUARANTINE_STAGE,
        "sku": row.get("sku"),
        "feed_row": None,
        "image_uri": row.get("source_uri"),
        "reason": reason,
        "detail": detail,
        "run_id": None,
        "quarantined_at": datetime.now(timezone.utc),
    }


def plan_pairs(catalog_table: pa.Table, config: PairsConfig, existing_pairs: pa.Table | None = None) -> PairsPlan:
    """Which (image, scales) still need pairs; too-small ones become quarantine records.

    Reads nothing but the tables. An image shared by several SKUs is paired once, for the
    first (product_id, sku), so identical pixels never sit in two splits.
    """
    CATALOG.check(catalog_table)
    cfg_hash = config.config_hash
    done: set[tuple[str, int]] = set()
    if existing_pairs is not None and existing_pairs.num_rows:
        for sha, scale, h in zip(
            existing_pairs.column("image_sha256").to_pylist(),
            existing_pairs.column("scale").to_pylist(),
            existing_pairs.column("config_hash").to_pylist(),
        ):
            if h == cfg_hash:
                done.add((sha, int(scale)))
    current = current_catalog(catalog_table).to_pylist()
    by_image: dict[str, dict] = {}
    for row in sorted(current, key=lambda r: (r["product_id"], r["sku"])):
        by_image.setdefault(row["image_sha256"], row)
    jobs, quarantine, skipped = [], [], 0
    for sha, row in sorted(by_image.items()):
        todo = []
        for scale in config.scales:
            if (sha, scale) in done:
                skipped += 1
                continue
            problem = too_small(row["width"], row["height"], scale, config)
            if problem:
                name = f"{row['image_key']} (sku {row['sku']!r})"
                quarantine.append(_quarantine(row, "unsupported_image", f"{name}: {problem}"))
                continue
            todo.append(scale)
        if todo:
            jobs.append(PairJob(row=row, scales=tuple(todo)))
    return PairsPlan(
        config_hash=cfg_hash,
        jobs=jobs,
        images_considered=len(by_image),
        skipped_existing=skipped,
        duplicate_images=len(current) - len(by_image),
        quarantine=quarantine,
    )


def make_pairs_for_jobs(lake: Lake, jobs: Sequence[PairJob], config: PairsConfig, io_workers: int = 8) -> ChunkResult:
    """Read, pair and write the images of `jobs` with a thread pool; bad images are quarantined.

    Lake errors other than a missing image propagate (the caller retries the whole chunk; the
    content-addressed writes make that safe).
    """

    def one(job: PairJob) -> ChunkResult:
        try:
            data = lake.read_bytes(job.row["image_key"])
        except FileNotFoundError:
            detail = f"normalised image {job.row['image_key']} (sku {job.row['sku']!r}) is missing from the lake"
            return ChunkResult(quarantine=[_quarantine(job.row, "not_found", detail)])
        try:
            made = make_pairs_for_image(data, job.row, config, job.scales)
        except UnpairableImage as exc:
            return ChunkResult(quarantine=[_quarantine(job.row, exc.reason, exc.detail)])
        for hr_png, lr_png, row in made:
            lake.write_bytes_if_absent(row["hr_key"], hr_png)
            lake.write_bytes_if_absent(row["lr_key"], lr_png)
        return ChunkResult(rows=[row for _, _, row in made])

    result = ChunkResult()
    if not jobs:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(io_workers, len(jobs)))) as pool:
        for part in pool.map(one, jobs):  # map keeps job order: deterministic manifests
            result.rows += part.rows
            result.quarantine += part.quarantine
    return result


def write_pairs_manifest(lake: Lake, existing_pairs: pa.Table | None, rows: list[dict]) -> bool:
    """Append new rows to the pairs manifest; writes only when there are new rows."""
    if not rows:
        return False
    new = PAIRS.table(rows)
    if existing_pairs is not None and existing_pairs.num_rows:
        # Label columns may differ between runs: missing ones are filled with nulls.
        merged = pa.concat_tables([existing_pairs, new], promote_options="default")
        new = PAIRS.table(merged)
    lake.write_table(manifest_key("pairs"), new)
    return True


def finish_pairs(
    lake: Lake, plan: PairsPlan, chunks: Sequence[ChunkResult], existing_pairs: pa.Table | None
) -> PairsResult:
    """Gather the chunks' rows and problems and write the pairs manifest if anything is new."""
    rows = [row for chunk in chunks for row in chunk.rows]
    quarantine = plan.quarantine + [q for chunk in chunks for q in chunk.quarantine]
    return PairsResult(
        config_hash=plan.config_hash,
        rows=rows,
        quarantine=quarantine,
        images_considered=plan.images_considered,
        skipped_existing=plan.skipped_existing,
        duplicate_images=plan.duplicate_images,
        manifest_written=write_pairs_manifest(lake, existing_pairs, rows),
    )


def read_pairs_manifest(lake: Lake) -> pa.Table | None:
    key = manifest_key("pairs")
    return lake.read_table(key) if lake.exists(key) else None


def build_pairs(
    lake: Lake,
    catalog_table: pa.Table,
    config: PairsConfig | None = None,
    existing_pairs: pa.Table | None = None,
    *,
    io_workers: int = 8,
) -> PairsResult:
    """Make the missing pairs of the current catalog in one go (the flow maps the middle step)."""
    config = config or PairsConfig()
    plan = plan_pairs(catalog_table, config, existing_pairs)
    chunk = make_pairs_for_jobs(lake, plan.jobs, config, io_workers)
    return finish_pairs(lake, plan, [chunk], existing_pairs)


# -- quarantine manifest ------------------------------------------------------------------------


def record_quarantine(lake: Lake, records: Sequence[dict], run_id: str) -> int:
    """Append this run's problems to the quarantine manifest with ingestion's append-only rule
    (a problem already recorded is not recorded again; nothing is written when none is new).
    Returns how many records were new."""
    existing = load_quarantine(lake)
    log = append_quarantine(existing, records, run_id=run_id, now=datetime.now(timezone.utc))
    if log is None:
        return 0
    lake.write_table(manifest_key("quarantine"), log)
    return log.num_rows - existing.num_rows
