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

MANIFEST_KEYS = {
    "catalog": "manifests/catalog.parquet",
    "quarantine": "manifests/quarantine.parquet",
    "pairs": "manifests/pairs.parquet",
    "models": "manifests/models.parquet",
    "training_curves": "manifests/training_curves.parquet",
    "evaluations": "manifests/evaluations.parquet",
    "enhancements": "manifests/enhancements.parquet",
}


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
    try:
        return MANIFEST_KEYS[name]
    except KeyError:
        raise KeyError(f"unknown manifest {name!r}; known: {', '.join(sorted(MANIFEST_KEYS))}") from None


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

