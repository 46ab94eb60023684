"""Decoded images by lake key, preloaded into memory for small datasets or read on demand.

Training reads the same few thousand crops tens of thousands of times: when their decoded pixels
fit in `cache_mb`, they are read once (`Lake.read_many`, concurrent on S3) and kept as uint8.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from catalog_enhance.tasks.imaging.codec import load_rgb
from catalog_enhance.tasks.lake.storage import Lake

# Preload images when their decoded uint8 pixels take at most this many MB (data.cache_mb).
DEFAULT_CACHE_MB = 1024
_READ_CHUNK = 64


class LakeImages:
    """Decoded images by key: preloaded into memory (small datasets) or read on demand.

    `skipped` lists (key, reason) for images that failed to load during preloading; reading an
    unloadable image on demand raises a ValueError naming the key.
    """

    def __init__(
        self,
        lake: Lake,
        keys: Sequence[str],
        *,
        preload: bool,
        decode: Callable[[bytes], np.ndarray] = load_rgb,
    ):
        self.lake = lake
        self.decode = decode
        self.preloaded = preload
        self.skipped: list[tuple[str, str]] = []
        self._cache: dict[str, np.ndarray] = {}
        if preload:
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _READ_CHUNK):
                chunk = unique[start : start + _READ_CHUNK]
                try:
                    blobs = lake.read_many(chunk)
                except (FileNotFoundError, OSError):  # find which ones, one by one
                    blobs = {}
                    for key in chunk:
                        try:
                            blobs[key] = lake.read_bytes(key)
                        except (FileNotFoundError, OSError) as error:
                            self.skipped.append((key, f"unreadable: {type(error).__name__}: {error}"))
                for key, blob in blobs.items():
                    try:
                        self._cache[key] = decode(blob)
                    except Exception as error:  # noqa: BLE001  (any decoder failure: skip, say why)
                        self.skipped.append((key, f"undecodable: {type(error).__name__}: {error}"))

    def __contains__(self, key: str) -> bool:
        return key in self._cache if self.preloaded else True

    def __getitem__(self, key: str) -> np.ndarray:
        if self.preloaded:
            return self._cache[key]
        try:
            return self.decode(self.lake.read_bytes(key))
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"image {key!r}: cannot load ({type(error).__name__}: {error})") from error


def fits_in_memory(pixel_counts: Sequence[int], channels: int = 3, cache_mb: float = DEFAULT_CACHE_MB) -> bool:
    return sum(pixel_counts) * channels <= cache_mb * 2**20
