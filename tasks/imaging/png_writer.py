"""A PNG encoder fed row bands: the image is never held whole, only its compressed bytes.

PIL's encoder needs the whole image in memory (as a PIL image: one more full copy of it); this
one takes uint8 (rows, width, 3|4) bands top to bottom, filters each row as PIL and libpng do
(per row, the filter whose output has the least sum of absolute values, as signed bytes) and
streams them through one `zlib.compressobj`. Chunks and colour marking are `codec.encode_png`'s:
IHDR, sRGB (or iCCP), IDAT..., IEND, no time stamp or text, so equal pixels give equal bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SRGB_PERCEPTUAL = b"\x00"  # sRGB chunk payload: rendering intent 0 (perceptual)
_FILTER_ROWS = 32  # rows filtered at once: the int16 temporaries stay a few MB at 16k px wide
_IDAT_BYTES = 1 << 20  # compressed bytes per IDAT chunk


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _filtered(rows: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    """uint8 (n, stride) rows -> (n, 1 + stride) filter byte + filtered row, the adaptive choice."""
    x = rows.astype(np.int16)
    up = np.concatenate([prior[None].astype(np.int16), x[:-1]])
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up_left = np.zeros_like(x)
    up_left[:, bpp:] = up[:, :-bpp]
    # Paeth predictor (PNG spec 9.4), on the distances from its estimate left + up - up_left.
    pa = np.abs(up - up_left)
    pb = np.abs(left - up_left)
    pc = np.abs(left + up - 2 * up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    del pa, pb, pc
    candidates = np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]).astype(np.uint8)
    cost = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)  # (5, n)
    best = cost.argmin(axis=0)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = best
    out[:, 1:] = candidates[best, np.arange(rows.shape[0])]
    return out


def encode_png_rows(bands: Iterable[np.ndarray], width: int, height: int, channels: int, *,
                    icc_profile: bytes | None = None, compress_level: int = 6,
                    strategy: int | None = None) -> bytes:
    """PNG bytes of an image given as uint8 (rows, ``width``, ``channels``) bands, top to bottom
    (``channels`` 3: RGB, 4: RGBA). Same options and chunks as `codec.encode_png`; raises
    ValueError if the bands do not add up to (``height``, ``width``, ``channels``)."""
    if channels not in (3, 4) or width < 1 or height < 1:
        raise ValueError(f"expected a (height, width, 3|4) image, got ({height}, {width}, {channels})")
    stride = width * channels
    # Into one growing buffer, so the compressed bytes exist once (`getvalue` hands it over).
    out = io.BytesIO()
    parts = [_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6 if channels == 4 else 2, 0, 0, 0))]
    if icc_profile:
        parts.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    else:
        parts.append(_chunk(b"sRGB", _SRGB_PERCEPTUAL))
    for part in parts:
        out.write(part)
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, zlib.MAX_WBITS, 9,
                                  zlib.Z_DEFAULT_STRATEGY if strategy is None else strategy)
    pending: list[bytes] = []
    pending_size = 0

    def emit(data: bytes, final: bool = False) -> None:
        nonlocal pending_size
        if data:
            pending.append(data)
            pending_size += len(data)
        if pending_size >= _IDAT_BYTES or (final and pending_size):
            out.write(_chunk(b"IDAT", b"".join(pending)))
            pending.clear()
            pending_size = 0

    prior = np.zeros(stride, dtype=np.uint8)
    rows_done = 0
    for band in bands:
        band = np.asarray(band)
        if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1:] != (width, channels):
            raise ValueError(f"expected uint8 (rows, {width}, {channels}) bands, got {band.dtype} {band.shape}")
        if rows_done + band.shape[0] > height:
            raise ValueError(f"bands give more than {height} rows")
        flat = band.reshape(band.shape[0], stride)  # copies only a non-contiguous band
        for top in range(0, flat.shape[0], _FILTER_ROWS):
            rows = flat[top : top + _FILTER_ROWS]
            emit(compressor.compress(_filtered(rows, prior, channels).tobytes()))
            prior = rows[-1].copy()
        rows_done += band.shape[0]
    if rows_done != height:
        raise ValueError(f"bands give {rows_done} rows, expected {height}")
    emit(compressor.flush(), final=True)
    out.write(_chunk(b"IEND", b""))
    return out.getvalue()
