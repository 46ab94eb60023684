"""Super-resolution evaluation: every enhancer on every image, per-image scores, summaries.

`evaluate_sr` scores (HR, LR, metadata) pairs with the paper protocol of `sr_metrics` (quantised
MATLAB luma, border = scale); `summarize` turns the per-image table into overall and per-label
means with the gain over bicubic and the share of images where an enhancer is worse than bicubic,
so a report shows where a model does not help, not just its mean. `evaluate_sr_folder` does the
same for any folder of HR photos (what `catalog-enhance evaluate-sr` runs), degrading them with
the very pipeline that makes the training pairs; `sr_paired` scores the user's own LR captures
against their HR versions through the same `score_folder`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from catalog_enhance.tasks.imaging.degrade import DegradationConfig, degrade
from catalog_enhance.tasks.inference.enhancers import Enhancer, classical_enhancers
from catalog_enhance.tasks.imaging.metrics import SSIM_KERNEL_SIZE, psnr_y, quantize, ssim_y
from catalog_enhance.tasks.imaging.codec import ImageRejected, NormalizedImage, decode_untrusted, load_rgb
from catalog_enhance.tasks.imaging.resize import mod_crop

log = logging.getLogger(__name__)

REFERENCE = "bicubic"  # gains are measured against this enhancer
SUMMARY_SCOPES = ("category", "style")  # metadata columns summarised per value, when present
METRICS = ("psnr_y", "ssim_y")
SYNTHETIC, PAIRED = "synthetic", "paired"  # `mode`: LR made here by a degradation, or the user's own LR


def evaluate_sr(
    pairs: Iterable[tuple[np.ndarray, np.ndarray, Mapping]],
    enhancers: Mapping[str, Enhancer],
    scale: int,
    *,
    border: int | None = None,
) -> pd.DataFrame:
    """Score every enhancer on every (hr, lr, meta) pair; one row per (image, enhancer).

    `hr` (H, W, 3) and `lr` (H/scale, W/scale, 3) are float RGB in [0, 1] (or uint8); `meta` is
    copied into each row (sku, category, style, ...). Columns: `image` (position in `pairs`), the
    meta keys, `enhancer`, `scale`, `psnr_y`, `ssim_y`, `error` ("" when scored). An enhancer or
    an image that fails gives rows with NaN scores and the reason in `error`; the rest goes on.
    `border` defaults to `scale` (the standard protocol). `pairs` may be a lazy generator.
    """
    border = scale if border is None else border
    rows: list[dict] = []
    for index, (hr, lr, meta) in enumerate(pairs):
        base = {"image": index, **dict(meta), "scale": scale}
        expected = (np.shape(lr)[0] * scale, np.shape(lr)[1] * scale)
        if tuple(np.shape(hr)[:2]) != expected:
            reason = f"HR {np.shape(hr)[:2]} is not {scale} x LR {np.shape(lr)[:2]}"
            rows += [_failed(base, name, reason) for name in enhancers]
            log.warning("image %s skipped: %s", _label(base), reason)
            continue
        lr = _as_float(lr)
        for name, enhance in enhancers.items():
            try:
                sr = enhance(lr, scale)
                rows.append(
                    {**base, "enhancer": name, "psnr_y": psnr_y(sr, hr, border),
                     "ssim_y": ssim_y(sr, hr, border), "error": ""}
                )
            except Exception as exc:  # one failing enhancer/image must not end the evaluation
                reason = f"{type(exc).__name__}: {exc}"
                rows.append(_failed(base, name, reason))
                log.warning("image %s, enhancer %s failed: %s", _label(base), name, reason)
    return _frame(rows)


def _failed(base: dict, enhancer: str, reason: str) -> dict:
    return {**base, "enhancer": enhancer, "psnr_y": math.nan, "ssim_y": math.nan, "error": reason}


def _label(row: Mapping) -> str:
    return str(row.get("sku") or row.get("file") or row.get("image"))


def _as_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img


def _frame(rows: list[dict]) -> pd.DataFrame:
    columns = ["image", "enhancer", "scale", "psnr_y", "ssim_y", "error"]
    df = pd.DataFrame(rows)
    for name in columns:
        if name not in df.columns:
            df[name] = pd.Series(dtype="float64" if name in METRICS else "object")
    meta = [c for c in df.columns if c not in columns]
    df = df[["image", *meta, "enhancer", "scale", "psnr_y", "ssim_y", "error"]]
    return df.astype({"psnr_y": "float64", "ssim_y": "float64"})


def summarize(df: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Means per (scale, scope, enhancer): scope "overall" and "<label>=<value>" for each label
    column in SUMMARY_SCOPES present in `df`.

    Columns: scale, scope, enhancer, n_images (scored), n_errors, psnr_y, ssim_y, psnr_gain and
    ssim_gain (mean per-image difference to `reference` on the images both scored; NaN without a
    reference), share_worse (fraction of those images where PSNR-Y is below the reference's;
    ties are not losses).
    """
    columns = ["scale", "scope", "enhancer", "n_images", "n_errors", "psnr_y", "ssim_y",
               "psnr_gain", "ssim_gain", "share_worse"]
    scored = df[df["enhancer"].fillna("") != ""]
    if scored.empty:
        return pd.DataFrame(columns=columns)
    ref = scored[scored["enhancer"] == reference][["image", "scale", *METRICS]]
    paired = scored.merge(ref, on=["image", "scale"], how="left", suffixes=("", "_ref"))
    paired["psnr_gain"] = paired["psnr_y"] - paired["psnr_y_ref"]
    paired["ssim_gain"] = paired["ssim_y"] - paired["ssim_y_ref"]
    # NaN when either side is missing, so such images count neither as wins nor as losses.
    paired["worse"] = (paired["psnr_gain"] < 0).astype("float64").where(paired["psnr_gain"].notna())

    scopes = [("overall", paired)]
    for column in (c for c in SUMMARY_SCOPES if c in paired.columns):
        for value, part in paired.groupby(paired[column].astype("object").fillna(""), sort=True):
            if value != "":
                scopes.append((f"{column}={value}", part))

    out = []
    order = {name: i for i, name in enumerate(pd.unique(paired["enhancer"]))}
    for scope, part in scopes:
        for (scale, enhancer), group in part.groupby(["scale", "enhancer"], sort=False):
            out.append(
                {
                    "scale": int(scale),
                    "scope": scope,
                    "enhancer": enhancer,
                    "n_images": int(group["psnr_y"].notna().sum()),
                    "n_errors": int((group["error"].fillna("") != "").sum()),
                    "psnr_y": group["psnr_y"].mean(),
                    "ssim_y": group["ssim_y"].mean(),
                    "psnr_gain": group["psnr_gain"].mean(),
                    "ssim_gain": group["ssim_gain"].mean(),
                    "share_worse": group["worse"].mean(),
                }
            )
    summary = pd.DataFrame(out, columns=columns)
    summary["_order"] = summary["enhancer"].map(order)
    summary["_overall"] = summary["scope"] != "overall"
    summary = summary.sort_values(["scale", "_overall", "scope", "_order"], kind="stable")
    return summary.drop(columns=["_order", "_overall"]).reset_index(drop=True)


def sr_evaluation_rows(
    summary: pd.DataFrame,
    enhancer: str,
    *,
    model_name: str,
    version: str,
    dataset_hash: str,
    split: str = "test",
    reference: str = REFERENCE,
    kind: str = "sr",
) -> list[dict]:
    """Rows for the evaluations manifest (`gate.record_evaluation`) from `summarize` output, for
    one enhancer (a model version): psnr_y, ssim_y, psnr_y_gain, ssim_y_gain, share_worse_than_bicubic,
    each with the reference's value on the same images. Scopes: "scale=2" (all images at x2),
    "scale=2,category=shoes", ...; the SR primary metric is psnr_y_gain at "scale=2"."""
    reference_rows = summary[summary["enhancer"] == reference].set_index(["scale", "scope"])
    rows = []
    for r in summary[summary["enhancer"] == enhancer].itertuples(index=False):
        scope = f"scale={r.scale}" if r.scope == "overall" else f"scale={r.scale},{r.scope}"
        base = reference_rows.loc[(r.scale, r.scope)] if (r.scale, r.scope) in reference_rows.index else None
        metrics = (
            ("psnr_y", r.psnr_y, None if base is None else base["psnr_y"], True),
            ("ssim_y", r.ssim_y, None if base is None else base["ssim_y"], True),
            ("psnr_y_gain", r.psnr_gain, None if base is None else 0.0, True),
            ("ssim_y_gain", r.ssim_gain, None if base is None else 0.0, True),
            ("share_worse_than_bicubic", r.share_worse, None if base is None else 0.0, False),
        )
        for metric, value, baseline_value, higher in metrics:
            rows.append(
                {
                    "model_name": model_name, "model_kind": kind, "version": version, "metric": metric,
                    "scope": scope, "split": split, "value": None if pd.isna(value) else float(value),
                    "higher_is_better": higher, "baseline": reference,
                    "baseline_value": None if baseline_value is None or pd.isna(baseline_value) else float(baseline_value),
                    "dataset_hash": dataset_hash,
                }
            )
    return rows


# -- any folder of HR photos ---------------------------------------------------------------------


def image_files(images_dir: str | os.PathLike, option: str = "--images") -> list[Path]:
    """Every regular file under `images_dir` (recursively, sorted, hidden files excluded); whether
    it is an image is decided by decoding it, not by its extension. `option` names the folder in
    the error when it is not one."""
    root = Path(images_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"{option} {root}: not a folder")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _image_seed(seed: int, name: str) -> np.random.Generator:
    # Per-file stream: an image's degradation does not depend on which other files are present.
    digest = hashlib.sha256(name.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def decode_limits() -> tuple[int, int]:
    """(max_pixels, max_bytes) of the settings: the limits catalog ingestion decodes under."""
    from catalog_enhance.tasks.lake.settings import load_settings

    settings = load_settings()
    return settings.max_image_pixels, settings.max_image_bytes


def _decode_photo(path: Path, name: str, *, max_pixels: int, max_bytes: int) -> NormalizedImage:
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageRejected("too_large", f"{name}: {size} bytes exceeds the limit of {max_bytes}")
    return decode_untrusted(path.read_bytes(), max_pixels=max_pixels, name=name)


def read_photo(path: Path, name: str, *, max_pixels: int, max_bytes: int) -> np.ndarray:
    """One user file as float RGB in [0, 1], decoded like catalog ingestion (`decode_untrusted`:
    size and pixel limits before any pixel is decoded, EXIF orientation, sRGB; transparency
    composited on white). Raises `ImageRejected` (with its reason) or `OSError`; `name` labels it."""
    return load_rgb(_decode_photo(path, name, max_pixels=max_pixels, max_bytes=max_bytes).png).astype(np.float64) / 255.0


def photo_size(path: Path, name: str, *, max_pixels: int, max_bytes: int) -> tuple[int, int]:
    """(height, width) of a user file as `read_photo` would return it (EXIF orientation applied),
    checked the same way, without the float array."""
    normal = _decode_photo(path, name, max_pixels=max_pixels, max_bytes=max_bytes)
    return normal.height, normal.width


def check_scorable(height: int, width: int, scale: int, name: str) -> None:
    """Raise ValueError if an HR image of this size is too small to score at `scale` (the SSIM
    window must fit after shaving `scale` pixels on each side)."""
    if min(height, width) < 2 * scale + SSIM_KERNEL_SIZE:
        raise ValueError(f"{name}: {width}x{height} is too small to score at x{scale}")


def folder_pairs(
    images_dir: str | os.PathLike,
    scale: int,
    degradation_config: DegradationConfig,
    *,
    seed: int = 0,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    skipped: list[dict] | None = None,
):
    """Yield (hr, lr, meta) for every readable image under `images_dir`.

    Each file is read by `read_photo`, mod-cropped to `scale`, and degraded by
    `degradation_config` with a per-file seeded generator; the LR image is then quantised to 8
    bits, as the stored training pairs are. Unreadable or too small files are logged, appended to
    `skipped` as {"file", "error"}, and skipped.
    meta: file (relative path), sku (file stem), category (sub-folder, None at the top level),
    mode ("synthetic": the LR images are degradations made here).
    """
    if max_pixels is None or max_bytes is None:
        default_pixels, default_bytes = decode_limits()
        max_pixels = default_pixels if max_pixels is None else max_pixels
        max_bytes = default_bytes if max_bytes is None else max_bytes
    root = Path(images_dir)
    for path in image_files(root):
        name = path.relative_to(root).as_posix()
        try:
            hr = mod_crop(read_photo(path, name, max_pixels=max_pixels, max_bytes=max_bytes), scale)
            check_scorable(hr.shape[0], hr.shape[1], scale, name)
            lr = quantize(degrade(hr, scale, degradation_config, _image_seed(seed, name))).astype(np.float64) / 255.0
        except (ImageRejected, ValueError, OSError) as exc:
            log.warning("skipped %s: %s", name, exc)
            if skipped is not None:
                skipped.append({"file": name, "error": str(exc)})
            continue
        parent = path.relative_to(root).parent.as_posix()
        yield hr, lr, {"file": name, "sku": path.stem, "category": None if parent == "." else parent,
                       "mode": SYNTHETIC}


def score_folder(
    pairs: Iterable[tuple[np.ndarray, np.ndarray, Mapping]],
    enhancers: Mapping[str, Enhancer],
    scale: int,
    skipped: list[dict],
    mode: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`evaluate_sr` over a folder's pairs, then one row per file in `skipped` (filled while
    `pairs` is consumed: {"file", "error"} and any other meta) with an empty `enhancer` and the
    reason in `error`, so the CSV shows them; they are left out of the summary. The summary's
    first column is `mode` (SYNTHETIC or PAIRED), like every per-image row's."""
    per_image = evaluate_sr(pairs, enhancers, scale)
    if skipped:
        unread = [
            {"image": -1, "sku": Path(s["file"]).stem if s["file"] else None, "mode": mode, **s,
             "enhancer": "", "scale": scale, "psnr_y": math.nan, "ssim_y": math.nan}
            for s in skipped
        ]
        per_image = _frame(per_image.to_dict("records") + unread)
    summary = summarize(per_image)
    summary.insert(0, "mode", mode)
    return per_image, summary


def evaluate_sr_folder(
    images_dir: str | os.PathLike,
    scale: int,
    degradation_config: DegradationConfig | None = None,
    enhancers: Mapping[str, Enhancer] | None = None,
    *,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score enhancers (default: the classical ones) on a folder of HR photos.

    Returns (per_image_df, summary_df), both with `mode` "synthetic". Files that could not be used
    appear in per_image_df as one row each with an empty `enhancer` and the reason in `error` (so
    the CSV shows them), and are left out of the summary.
    """
    config = degradation_config or DegradationConfig()
    enhancers = dict(enhancers) if enhancers is not None else classical_enhancers()
    skipped: list[dict] = []
    return score_folder(folder_pairs(images_dir, scale, config, seed=seed, skipped=skipped),
                        enhancers, scale, skipped, SYNTHETIC)


# -- output ------------------------------------------------------------------------------------


def write_sr_report_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `df` as CSV atomically (temporary file in the same folder, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            df.to_csv(handle, index=False, float_format="%.6g")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
