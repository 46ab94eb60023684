"""Tiny image fixtures made in the tests: good images of every mode and bad inputs of every kind."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# sRGB primaries as XYZ, adapted to D50 (what an ICC v2 matrix/TRC profile stores).
SRGB_RED = (0.4361, 0.2225, 0.0139)
SRGB_GREEN = (0.3851, 0.7169, 0.0971)
SRGB_BLUE = (0.1431, 0.0606, 0.7141)


def noise(height: int = 24, width: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunks(png: bytes) -> list[bytes]:
    """Chunk types of a PNG, in order."""
    types, pos = [], 8
    while pos < len(png):
        length = struct.unpack(">I", png[pos : pos + 4])[0]
        types.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    return types


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG whose header claims a huge image (a few hundred bytes on disk)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
            + _chunk(b"IEND", b""))


def corrupt_png(seed: int = 0) -> bytes:
    """A PNG whose compressed pixel data is scrambled (header intact)."""
    data = bytearray(encode(noise(seed=seed), "PNG"))
    for i in range(120, 220):
        data[i] ^= 0xFF
    return bytes(data)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in values)


def icc_rgb_profile(red, green, blue, description: str = "test RGB", gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile with the given primaries."""
    text = description.encode() + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67,
        b"wtpt": _xyz((0.9642, 1.0, 0.8249)),
        b"rXYZ": _xyz(red),
        b"gXYZ": _xyz(green),
        b"bXYZ": _xyz(blue),
    }
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    for kind in (b"rTRC", b"gTRC", b"bTRC"):
        tags[kind] = curve
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for kind, data in tags.items():
        data += b"\0" * (-len(data) % 4)
        table += kind + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def swapped_red_green_profile() -> bytes:
    """A profile whose 'red' channel is sRGB green and vice versa: conversion visibly swaps them."""
    return icc_rgb_profile(SRGB_GREEN, SRGB_RED, SRGB_BLUE, description="swapped red/green test")
