"""SR evaluation on the user's own paired folders: real low-quality captures against their good versions.

BasicSR-style (`paired_paths_from_folder`): every file under the HR folder is paired with the file
under the LR folder at the same relative sub-folder whose stem is `lr_template.format(hr_stem)`
(default "{}": the same stem; "{}x2" for DIV2K's `0001x2.png`), whatever either's extension.
Sub-folders are categories, as in the synthetic mode. The scale is the one integer with
HR = scale x LR for every pair; an HR side up to scale - 1 pixels larger is cropped bottom/right
to scale x LR (`mod_crop`, as BasicSR's paired crop does), and the result says which were. Same
size pairs are x1: restoration (de-JPEG, denoise, deblur) rather than upscaling.

Files are decoded by the project's safe decoder (`sr_eval.read_photo`). Every file that cannot be
used (no partner, two candidate partners, a size that is not scale x its partner's, unreadable,
too large, too small to score) is reported by name with the reason and the rest is scored; an
input with nothing to score at all is a `PairedFolderError`. Scoring is `sr_eval.score_folder`,
the synthetic mode's (PSNR/SSIM on Y, `scale` pixels shaved), with `mode` = "paired".
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from catalog_enhance.tasks.evaluate.sr_eval import (
    PAIRED,
    check_scorable,
    decode_limits,
    image_files,
    photo_size,
    read_photo,
    score_folder,
)
from catalog_enhance.tasks.imaging.codec import ImageRejected
from catalog_enhance.tasks.inference.enhancers import Enhancer, classical_enhancers
from catalog_enhance.tasks.imaging.resize import mod_crop

log = logging.getLogger(__name__)

DEFAULT_LR_TEMPLATE = "{}"
_SHOWN = 5  # file names listed in a one-line error before "..."


class PairedFolderError(ValueError):
    """--hr/--lr cannot be evaluated at all: a folder is missing, the template is malformed, no
    file has a usable partner, or the pairs disagree on the scale with no majority."""


@dataclass(frozen=True)
class FilePair:
    name: str  # HR path relative to the HR folder (the row's `file`)
    lr_name: str  # LR path relative to the LR folder
    hr_path: Path
    lr_path: Path

    @property
    def category(self) -> str | None:
        parent = Path(self.name).parent.as_posix()
        return None if parent == "." else parent


@dataclass
class PairedFolders:
    """The pairs to score at `scale`, and every file left out with the reason."""

    scale: int
    pairs: list[FilePair]
    problems: list[dict] = field(default_factory=list)  # {"file", "lr_file", "error"}; "" for no such side
    cropped: list[str] = field(default_factory=list)  # HR files cropped to scale x LR
    inferred: bool = True  # the scale came from the sizes (not checked against a given one)
    max_pixels: int = 0  # the decoding limits the files were checked under
    max_bytes: int = 0


@dataclass
class PairedEvaluation:
    per_image: pd.DataFrame  # one row per (pair, enhancer); one per unusable file, `enhancer` ""
    summary: pd.DataFrame
    folders: PairedFolders


def _check_template(lr_template: str) -> None:
    if lr_template.count("{}") != 1 or lr_template.replace("{}", "").count("{") or "}" in lr_template.replace("{}", ""):
        raise PairedFolderError(f"--lr-template {lr_template!r}: must contain {{}} exactly once, where the HR "
                                "file's stem goes (e.g. '{}x2' pairs 0001.png with 0001x2.png)")


def match_files(hr_dir: str | os.PathLike, lr_dir: str | os.PathLike,
                lr_template: str = DEFAULT_LR_TEMPLATE) -> tuple[list[FilePair], list[dict]]:
    """Pair HR and LR files by sub-folder and stem (the LR stem = `lr_template.format(hr stem)`).

    Returns (pairs, problems): an HR file without an LR partner, with two (same stem, different
    extensions), or sharing its stem with another HR file, and an LR file no HR file claims, are
    problems {"file", "lr_file", "error"}. Raises PairedFolderError if a folder is missing or
    empty or the template is malformed."""
    _check_template(lr_template)
    hr_root, lr_root = Path(hr_dir), Path(lr_dir)
    hr_files = image_files(hr_root, "--hr")
    lr_files = image_files(lr_root, "--lr")
    for option, root, files in (("--hr", hr_root, hr_files), ("--lr", lr_root, lr_files)):
        if not files:
            raise PairedFolderError(f"{option} {root}: no files")

    def key(rel: Path, stem: str) -> tuple[str, str]:
        return rel.parent.as_posix(), stem

    lr_by_key: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in lr_files:
        rel = path.relative_to(lr_root)
        lr_by_key[key(rel, rel.stem)].append(path)
    hr_by_key: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in hr_files:
        rel = path.relative_to(hr_root)
        hr_by_key[key(rel, rel.stem)].append(path)

    pairs: list[FilePair] = []
    problems: list[dict] = []
    claimed: set[tuple[str, str]] = set()
    for (parent, stem), paths in sorted(hr_by_key.items()):
        names = [p.relative_to(hr_root).as_posix() for p in paths]
        wanted = (parent, lr_template.format(stem))
        claimed.add(wanted)
        if len(paths) > 1:
            problems += [{"file": n, "lr_file": "", "error": f"{n}: HR files {', '.join(names)} share the "
                          "stem, so which one the LR file belongs to is ambiguous; rename one"} for n in names]
            continue
        (name,) = names
        partners = lr_by_key.get(wanted, [])
        expected = (wanted[1] if parent == "." else f"{parent}/{wanted[1]}") + ".*"
        if not partners:
            problems.append({"file": name, "lr_file": "", "error": f"{name}: no LR partner ({expected} under --lr)"})
        elif len(partners) > 1:
            lr_names = ", ".join(p.relative_to(lr_root).as_posix() for p in partners)
            problems.append({"file": name, "lr_file": "", "error": f"{name}: ambiguous LR partner ({lr_names})"})
        else:
            lr_path = partners[0]
            pairs.append(FilePair(name, lr_path.relative_to(lr_root).as_posix(), paths[0], lr_path))
    for lr_key in sorted(set(lr_by_key) - claimed):
        for path in lr_by_key[lr_key]:
            lr_name = path.relative_to(lr_root).as_posix()
            problems.append({"file": "", "lr_file": lr_name,
                             "error": f"{lr_name}: no HR partner under --hr (LR template {lr_template!r})"})
    return pairs, problems


def fits(hr_hw: tuple[int, int], lr_hw: tuple[int, int], scale: int) -> bool:
    """HR is `scale` x LR, up to scale - 1 extra HR pixels per side (cropped by `mod_crop`)."""
    return all(0 <= big - scale * small < scale for big, small in zip(hr_hw, lr_hw))


def infer_scale(hr_hw: tuple[int, int], lr_hw: tuple[int, int]) -> int | None:
    """The integer scale with `fits`, or None (LR larger, different factors per side, not integer)."""
    if min(lr_hw) < 1:
        return None
    scale = hr_hw[0] // lr_hw[0]
    return scale if scale >= 1 and fits(hr_hw, lr_hw, scale) else None


def _size(hw: tuple[int, ...]) -> str:
    return f"{hw[1]}x{hw[0]}"


def _names(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def pair_folders(
    hr_dir: str | os.PathLike,
    lr_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    lr_template: str = DEFAULT_LR_TEMPLATE,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> PairedFolders:
    """Match the files (`match_files`), decode every pair once for its sizes, and settle the scale.

    `scale` None: each pair's scale is inferred from its sizes and the folder's is the most common;
    pairs at another scale are problems naming both scales. A tie between scales, or no pair with
    a usable size, is a PairedFolderError. `scale` given: pairs where HR is not `scale` x LR are
    problems. Decoding here (for the sizes, by the safe decoder) finds unreadable files before
    anything is scored, at the cost of decoding every used file twice."""
    if scale is not None and scale < 1:
        raise PairedFolderError(f"--scale must be a positive integer, got {scale}")
    if max_pixels is None or max_bytes is None:
        default_pixels, default_bytes = decode_limits()
        max_pixels = default_pixels if max_pixels is None else max_pixels
        max_bytes = default_bytes if max_bytes is None else max_bytes
    pairs, problems = match_files(hr_dir, lr_dir, lr_template)
    if not pairs:
        raise PairedFolderError(f"no HR file in --hr {hr_dir} has an LR partner in --lr {lr_dir} "
                                f"(LR template {lr_template!r}): {_names([p['error'] for p in problems])}")

    sized: list[tuple[FilePair, tuple[int, int], tuple[int, int], int | None]] = []
    for pair in pairs:
        try:
            hr_hw = photo_size(pair.hr_path, pair.name, max_pixels=max_pixels, max_bytes=max_bytes)
            lr_hw = photo_size(pair.lr_path, pair.lr_name, max_pixels=max_pixels, max_bytes=max_bytes)
        except (ImageRejected, OSError) as exc:
            problems.append({"file": pair.name, "lr_file": pair.lr_name, "error": str(exc)})
            continue
        sized.append((pair, hr_hw, lr_hw, infer_scale(hr_hw, lr_hw)))

    inferred = scale is None
    if scale is None:
        votes = Counter(s for *_, s in sized if s is not None)
        ranked = votes.most_common()
        if not ranked:
            detail = _names([f"{p.name} {_size(h)} / {p.lr_name} {_size(l)}" for p, h, l, _ in sized]
                            or [p["error"] for p in problems])
            raise PairedFolderError(f"no pair in --hr/--lr has HR = an integer scale x LR: {detail}")
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            tied = [s for s, n in ranked if n == ranked[0][1]]
            listing = "; ".join(f"x{s}: {_names([p.name for p, *_, ps in sized if ps == s])}" for s in tied)
            raise PairedFolderError(f"the pairs disagree on the scale ({listing}); pass --scale")
        scale = ranked[0][0]

    result = PairedFolders(scale=scale, pairs=[], problems=problems, inferred=inferred,
                           max_pixels=max_pixels, max_bytes=max_bytes)
    for pair, hr_hw, lr_hw, pair_scale in sized:
        if not fits(hr_hw, lr_hw, scale):
            ratio = f" (x{pair_scale})" if pair_scale is not None else ""
            error = (f"{pair.name}: HR {_size(hr_hw)} is not {scale} x LR {_size(lr_hw)} of {pair.lr_name}{ratio}"
                     + ("; the other pairs are" if inferred else "; --scale is") + f" x{scale}")
            problems.append({"file": pair.name, "lr_file": pair.lr_name, "error": error})
            continue
        try:
            check_scorable(scale * lr_hw[0], scale * lr_hw[1], scale, pair.name)
        except ValueError as exc:
            problems.append({"file": pair.name, "lr_file": pair.lr_name, "error": str(exc)})
            continue
        if hr_hw != (scale * lr_hw[0], scale * lr_hw[1]):
            result.cropped.append(pair.name)
        result.pairs.append(pair)
    if not result.pairs:
        raise PairedFolderError(f"no pair in --hr/--lr can be scored at x{scale}: "
                                f"{_names([p['error'] for p in problems])}")
    for problem in problems:
        log.warning("skipped %s", problem["error"])
    return result


def paired_images(
    folders: PairedFolders,
    *,
    max_pixels: int,
    max_bytes: int,
    skipped: list[dict],
) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """(hr, lr, meta) per pair of `folders`, HR mod-cropped to its scale; a file that fails to
    decode now (changed since `pair_folders`) is appended to `skipped` and left out.
    meta: file (HR relative path), lr_file, sku (HR stem), category (sub-folder), mode "paired"."""
    for pair in folders.pairs:
        try:
            hr = mod_crop(read_photo(pair.hr_path, pair.name, max_pixels=max_pixels, max_bytes=max_bytes),
                          folders.scale)
            lr = read_photo(pair.lr_path, pair.lr_name, max_pixels=max_pixels, max_bytes=max_bytes)
        except (ImageRejected, OSError) as exc:
            log.warning("skipped %s: %s", pair.name, exc)
            skipped.append({"file": pair.name, "lr_file": pair.lr_name, "error": str(exc)})
            continue
        yield hr, lr, {"file": pair.name, "lr_file": pair.lr_name, "sku": Path(pair.name).stem,
                       "category": pair.category, "mode": PAIRED}


def score_paired(folders: PairedFolders, enhancers: Mapping[str, Enhancer] | None = None) -> PairedEvaluation:
    """Score `enhancers` (default: the classical ones; each must work at `folders.scale`) on the
    pairs; every problem of `folders` is a row with an empty `enhancer` and the reason."""
    enhancers = dict(enhancers) if enhancers is not None else classical_enhancers()
    skipped = list(folders.problems)
    images = paired_images(folders, max_pixels=folders.max_pixels, max_bytes=folders.max_bytes, skipped=skipped)
    per_image, summary = score_folder(images, enhancers, folders.scale, skipped, PAIRED)
    return PairedEvaluation(per_image, summary, folders)


def evaluate_sr_paired(
    hr_dir: str | os.PathLike,
    lr_dir: str | os.PathLike,
    enhancers: Mapping[str, Enhancer] | None = None,
    *,
    scale: int | None = None,
    lr_template: str = DEFAULT_LR_TEMPLATE,
) -> PairedEvaluation:
    """Score enhancers (default: the classical ones) on HR/LR folders: `pair_folders`, then
    `score_paired`. At x1 the "bicubic" reference is the LR image itself (identity)."""
    return score_paired(pair_folders(hr_dir, lr_dir, scale=scale, lr_template=lr_template), enhancers)


__all__ = ["DEFAULT_LR_TEMPLATE", "FilePair", "PairedEvaluation", "PairedFolderError", "PairedFolders",
           "evaluate_sr_paired", "fits", "infer_scale", "match_files", "pair_folders", "paired_images",
           "score_paired"]
