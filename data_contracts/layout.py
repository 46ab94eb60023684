"""The lake's key layout: the one place that knows where every kind of object lives.

Keys are relative, '/'-separated and built only from validated parts; image keys are
content-addressed (sha256), so catalog input (SKUs, URIs) never shapes a key.
"""

from __future__ import annotations

import re

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A key part may hold letters, digits and . _ - = only, and never be '.' or '..'.
KEY_PART_RE = re.compile(r"^[A-Za-z0-9._=-]{1,200}$")

TMP_PREFIX = "_tmp"

# A manifest is a dataset under its key: immutable Parquet parts plus a commit log whose entries
# each list the live parts (tasks/lake/manifests/store.py says how they are committed).
MANIFEST_KEYS = {
    "catalog": "manifests/catalog",
    "quarantine": "manifests/quarantine",
    "pairs": "manifests/pairs",
    "models": "manifests/models",
    "training_curves": "manifests/training_curves",
    "evaluations": "manifests/evaluations",
    "enhancements": "manifests/enhancements",
}
# Before the append-only layout each manifest was one Parquet file, rewritten on every write;
# such a lake is read as it is and migrated on its first commit.
LEGACY_MANIFEST_SUFFIX = ".parquet"
# Log entries are numbered with this many digits, so their keys sort in commit order.
MANIFEST_LOG_DIGITS = 20


class UnsafeKeyError(ValueError):
    """A key would leave the lake or contains characters keys may not hold."""


def safe_key(*parts: str) -> str:
    """Join key parts, refusing traversal, absolute paths, empty parts and odd characters."""
    if not parts:
        raise UnsafeKeyError("empty key")
    pieces: list[str] = []
    for part in parts:
        for piece in str(part).split("/"):
            if not KEY_PART_RE.match(piece) or piece in {".", ".."}:
                raise UnsafeKeyError(f"unsafe key part {piece!r} in {'/'.join(map(str, parts))!r}")
            pieces.append(piece)
    return "/".join(pieces)


def _sha(sha256: str) -> str:
    if not SHA256_RE.match(sha256):
        raise UnsafeKeyError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def original_image_key(sha256: str, extension: str) -> str:
    """The untouched source bytes, as fetched."""
    return safe_key("images", "original", _sha(sha256)[:2], f"{sha256}.{extension.lower().lstrip('.')}")


def normalized_image_key(sha256: str) -> str:
    """The normalised (oriented, sRGB, RGB/RGBA) PNG; sha256 of the PNG bytes."""
    return safe_key("images", "normalized", _sha(sha256)[:2], f"{sha256}.png")


def pair_key(config_hash: str, image_sha256: str, scale: int, crop_index: int, role: str) -> str:
    """An HR crop or its LR input, under the pairs config that made it."""
    if role not in {"hr", "lr"}:
        raise UnsafeKeyError(f"pair role must be 'hr' or 'lr', not {role!r}")
    return safe_key("pairs", config_hash, _sha(image_sha256)[:2], image_sha256, f"x{int(scale)}_c{int(crop_index)}_{role}.png")


def checkpoint_key(model_name: str, version: str, step: int | None = None) -> str:
    name = "final.pt" if step is None else f"step-{int(step):08d}.pt"
    return safe_key("checkpoints", model_name, version, name)


def manifest_key(name: str) -> str:
    """The manifest's dataset prefix (its parts and its commit log live under it)."""
    try:
        return MANIFEST_KEYS[name]
    except KeyError:
        raise KeyError(f"unknown manifest {name!r}; known: {', '.join(sorted(MANIFEST_KEYS))}") from None


def legacy_manifest_key(name: str) -> str:
    """Where the manifest lived as one Parquet file, before the append-only layout."""
    return manifest_key(name) + LEGACY_MANIFEST_SUFFIX


def manifest_part_key(name: str, part_id: str) -> str:
    """One immutable Parquet part; `part_id` starts with the UTC time it was written
    (YYYYmmddTHHMMSS...), so cleanup can tell a part's age from its key without a request."""
    return safe_key(manifest_key(name), "parts", f"{part_id}.parquet")


def manifest_parts_prefix(name: str) -> str:
    return safe_key(manifest_key(name), "parts")


def manifest_log_prefix(name: str) -> str:
    return safe_key(manifest_key(name), "_log")


def manifest_log_key(name: str, sequence: int) -> str:
    """The commit log's entry `sequence` (0, 1, ...): the full list of live parts after that commit."""
    if sequence < 0:
        raise UnsafeKeyError(f"a log sequence is >= 0, not {sequence}")
    return safe_key(manifest_log_prefix(name), f"{int(sequence):0{MANIFEST_LOG_DIGITS}d}.json")


def manifest_log_sequence(key: str) -> int | None:
    """The sequence number of a log entry's key; None for any other key."""
    leaf = key.rsplit("/", 1)[-1]
    stem, dot, ext = leaf.partition(".")
    if ext != "json" or len(stem) != MANIFEST_LOG_DIGITS or not stem.isdigit():
        return None
    return int(stem)


def report_key(run_name: str, filename: str) -> str:
    return safe_key("reports", run_name, filename)


def enhanced_image_key(model_name: str, version: str, params_hash: str, input_sha256: str) -> str:
    return safe_key("enhanced", model_name, version, params_hash, _sha(input_sha256)[:2], f"{input_sha256}.png")


def training_curve_key(model_name: str, run: str) -> str:
    """The loss curve (Parquet) of one training run, beside its checkpoints."""
    return safe_key("checkpoints", model_name, run, "curve.parquet")


def feature_extractor_key(fingerprint: str) -> str:
    """The evaluation's trained feature extractor (catalog classifier), keyed by the fingerprint of
    its training data and settings, so it is trained once per catalog."""
    return safe_key("evaluation", "feature_extractor", fingerprint, "classifier.pt")

