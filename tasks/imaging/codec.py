"""Decoding untrusted catalog images into one normal form, and reading that form back.

`decode_untrusted` is pure (bytes in, `NormalizedImage` out) and refuses anything it cannot
handle safely with an `ImageRejected(reason, detail)`, `reason` being one of the quarantine
reasons of the data contracts. The normal form is: EXIF orientation applied, colours in sRGB,
mode RGB, or RGBA only when some pixel is not fully opaque, stored as a deterministic PNG (no
metadata, no timestamps: the same source bytes always give the same PNG bytes and sha256).

`encode_png` is the way back out: a uint8 RGB(A) array (an enhanced image, a report cell) to
deterministic PNG bytes.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from catalog_enhance.data_contracts.contracts import QUARANTINE_REASONS

# Formats a catalog may carry. Anything else (EPS runs Ghostscript on load, PSD, ...) is
# refused before its decoder ever sees the bytes.
Image.init()  # register every plugin, so the allow-list below can name them
ALLOWED_FORMATS = tuple(
    f for f in ("JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP", "AVIF") if f in Image.OPEN
)
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp",
              "TIFF": "tif", "BMP": "bmp", "AVIF": "avif"}
# Magic numbers of the allowed formats: bytes that start like an image but do not open are
# "corrupt" or "truncated", not "not_an_image".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00",
               b"MM\x00*", b"BM")
_EXIF_ORIENTATION = 0x0112
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# Rows per block when computing sharpness, so a 40 MP image does not need 1 GB of floats.
_SHARPNESS_BLOCK_ROWS = 512
_LOAD_BLOCK_ROWS = 512  # rows per block when reading a normalised PNG back into an array


class ImageRejected(ValueError):
    """An image (or the row that points at it) cannot be ingested; `reason` is a quarantine reason."""

    def __init__(self, reason: str, detail: str):
        if reason not in QUARANTINE_REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class NormalizedImage:
    png: bytes
    sha256: str  # of `png`
    width: int
    height: int
    mode: str  # "RGB" or "RGBA"
    has_alpha: bool
    source_format: str  # PIL's name: JPEG, PNG, WEBP, ...
    exif_orientation: int | None  # the tag as found (1-8), None when absent
    icc_profile: str | None  # description of the embedded ICC profile, None when absent
    sharpness: float

    @property
    def source_extension(self) -> str:
        return EXTENSIONS.get(self.source_format, self.source_format.lower())


def decode_untrusted(data: bytes, *, max_pixels: int, name: str) -> NormalizedImage:
    """Decode untrusted bytes into the normal form, or raise `ImageRejected`.

    The pixel count is checked from the header, before any pixel is decoded (decompression
    bombs), then the image is decoded completely so truncation is caught here, not later.
    `name` only labels error details.
    """
    if not data:
        raise ImageRejected("empty", f"{name}: 0 bytes")
    image = _open(data, max_pixels=max_pixels, name=name)
    source_format = image.format or "unknown"
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block is not worth refusing the pixels for
        orientation = None
    try:
        # In place: `image` is ours, and a copy would be one more full-size image.
        ImageOps.exif_transpose(image, in_place=True)
        colour, alpha = _split_alpha(image, name)
        colour, icc_description = _to_srgb(colour, image.info.get("icc_profile"))
    except ImageRejected:
        raise
    except Exception as exc:
        raise ImageRejected("corrupt", f"{name}: {source_format} cannot be converted: {exc}") from None

    # `alpha` is one band (L), so its extrema are a single (min, max) pair.
    has_alpha = alpha is not None and cast("tuple[int, int]", alpha.getextrema())[0] < 255
    # No info dict, so no EXIF/ICC/text/time chunk reaches the PNG. `colour` is a new image of
    # `_to_srgb`'s (convert or profileToProfile), so its info is cleared rather than its pixels
    # copied twice (`tobytes` + `frombytes`: 240 MB transient at 40 MP).
    if has_alpha:
        assert alpha is not None  # has_alpha says so
        normal = Image.merge("RGBA", (*colour.split(), alpha))
    else:
        normal = colour
        normal.info = {}
    buffer = io.BytesIO()
    normal.save(buffer, format="PNG", compress_level=6)
    png = buffer.getvalue()
    return NormalizedImage(
        png=png,
        sha256=hashlib.sha256(png).hexdigest(),
        width=normal.width,
        height=normal.height,
        mode=normal.mode,
        has_alpha=has_alpha,
        source_format=source_format,
        exif_orientation=int(orientation) if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
        icc_profile=icc_description,
        sharpness=sharpness(colour, alpha if has_alpha else None),
    )


def _open(data: bytes, *, max_pixels: int, name: str) -> Image.Image:
    """Open (header only), check the pixel count, then decode every pixel."""
    looks_like_image = data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", f"{name}: {exc}") from None
    except UnidentifiedImageError:
        other = _identify_any(data)
        if other:
            raise ImageRejected("unsupported_image", f"{name}: {other} images are not accepted "
                                f"(allowed: {', '.join(ALLOWED_FORMATS)})") from None
        if looks_like_image:
            raise ImageRejected("corrupt", f"{name}: image header cannot be read") from None
        raise ImageRejected("not_an_image", f"{name}: not a recognised image ({len(data)} bytes, "
                            f"starts with {data[:8]!r})") from None
    except Exception as exc:
        raise ImageRejected(_classify(exc, data), f"{name}: {exc}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", f"{name}: {exc}") from None
    except Exception as exc:
        raise ImageRejected(_classify(exc, data), f"{name}: {image.format} {width}x{height}: {exc}") from None
    return image


def _identify_any(data: bytes) -> str | None:
    """The format PIL would recognise without the allow-list (header only, never decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            return other.format
    except Exception:
        return None


def _classify(exc: Exception, data: bytes) -> str:
    message = str(exc).lower()
    if "truncated" in message:
        return "truncated"
    # WebP states its length in the RIFF header; libwebp only says "could not create decoder".
    if data[:4] == b"RIFF" and len(data) < int.from_bytes(data[4:8], "little") + 8:
        return "truncated"
    return "corrupt"


def _split_alpha(image: Image.Image, name: str) -> tuple[Image.Image, Image.Image | None]:
    """Reduce any mode to colour in L, RGB or CMYK (what ICC profiles describe) plus alpha."""
    mode = image.mode
    if mode == "P":
        # The transparency of a palette image lives in `info`; RGBA keeps it.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in {"PA", "RGBa", "RGBX", "YCbCr", "LAB", "HSV"}:
        image = image.convert("RGBA" if mode in {"PA", "RGBa"} else "RGB")
    elif mode in {"La"}:
        image = image.convert("LA")
    elif mode == "1":
        image = image.convert("L")
    elif mode.startswith("I"):
        # 16-bit (and 32-bit integer) greyscale: scale to 8 bits, not clip (PIL's convert clips).
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
        image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    elif mode not in {"L", "LA", "RGB", "RGBA", "CMYK"}:
        raise ImageRejected("unsupported_image", f"{name}: pixel mode {mode} is not supported")
    if image.mode in {"RGBA", "LA"}:
        bands = image.split()
        colour = Image.merge(image.mode[:-1], bands[:-1]) if image.mode == "RGBA" else bands[0]
        return colour, bands[-1]
    return image, None


def _to_srgb(colour: Image.Image, icc: bytes | None) -> tuple[Image.Image, str | None]:
    """Convert colour (L, RGB or CMYK) to sRGB RGB using its ICC profile when it has one.

    An sRGB profile is not re-applied (a round trip through lcms can turn 255 into 254), and a
    profile that cannot be read or does not match the pixels is ignored, as browsers do.
    """
    if not icc:
        return colour.convert("RGB"), None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(profile) or "").strip() or "unnamed ICC profile"
    except Exception:
        return colour.convert("RGB"), "unreadable ICC profile (ignored)"
    space = profile.profile.xcolor_space.strip()
    matches = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}.get(space) == colour.mode
    if not matches or (colour.mode == "RGB" and _is_srgb(description)):
        note = "" if matches else f" (ignored: a {space} profile on {colour.mode} pixels)"
        return colour.convert("RGB"), description + note
    # Not in place, so a new image (the stub's `| None` is for inPlace=True).
    converted = cast(Image.Image, ImageCms.profileToProfile(colour, profile, _SRGB, outputMode="RGB"))
    return converted, description


def _is_srgb(description: str) -> bool:
    return "srgb" in description.lower().replace(" ", "")


def sharpness(colour: Image.Image, alpha: Image.Image | None = None) -> float:
    """Variance of the Laplacian of the luma: a standard, cheap focus measure.

    Luma is BT.601 (0.299 R + 0.587 G + 0.114 B) on the 0-255 scale; transparent images are
    composited onto white first (how a cutout is shown in a shop). The Laplacian is the
    4-neighbour kernel [[0,1,0],[1,-4,1],[0,1,0]] on the interior pixels. Higher is sharper;
    blur or upscaling lowers it. Images smaller than 3x3 score 0.
    """
    if colour.width < 3 or colour.height < 3:
        return 0.0
    rgb_image = colour if colour.mode == "RGB" else colour.convert("RGB")
    width, height = rgb_image.size
    count, total, total_sq = 0, 0.0, 0.0
    for top in range(0, height - 2, _SHARPNESS_BLOCK_ROWS):
        # Block by block from the image, so no full-size array copy of it is made.
        box = (0, top, width, min(top + _SHARPNESS_BLOCK_ROWS + 2, height))
        y = np.asarray(rgb_image.crop(box)).astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if alpha is not None:
            weight = np.asarray(alpha.crop(box)).astype(np.float32) / 255.0
            y = y * weight + 255.0 * (1.0 - weight)
        lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
        lap = lap.astype(np.float64)
        count += lap.size
        total += float(lap.sum())
        total_sq += float(np.square(lap).sum())
    mean = total / count
    return max(total_sq / count - mean * mean, 0.0)


# -- reading the normal form back (for later stages) -------------------------------------------
def load_image(png: bytes) -> np.ndarray:
    """A normalised PNG as an HxWxC uint8 array (C = 3 for RGB, 4 for RGBA)."""
    with Image.open(io.BytesIO(png), formats=("PNG",)) as opened:
        opened.load()
        image: Image.Image = opened
        if image.mode not in {"RGB", "RGBA"}:
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        # Filled in row blocks: `np.asarray(image)` would first copy all of it into a bytes object.
        pixels = np.empty((image.height, image.width, len(image.mode)), dtype=np.uint8)
        for top in range(0, image.height, _LOAD_BLOCK_ROWS):
            bottom = min(top + _LOAD_BLOCK_ROWS, image.height)
            pixels[top:bottom] = np.asarray(image.crop((0, top, image.width, bottom)))
        return pixels


def load_rgb(png: bytes, background: int = 255) -> np.ndarray:
    """A normalised PNG as HxWx3 uint8 RGB; transparent pixels composited onto a grey level
    (white by default), so models that take RGB never see the garbage under alpha = 0."""
    pixels = load_image(png)
    if pixels.shape[2] == 3:
        return pixels
    alpha = pixels[..., 3:].astype(np.float32) / 255.0
    out = pixels[..., :3].astype(np.float32) * alpha + float(background) * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -- encoding -----------------------------------------------------------------------------------

_SRGB_PERCEPTUAL = b"\x00"  # PNG sRGB chunk payload: rendering intent 0 (perceptual)


def encode_png(array: np.ndarray, icc_profile: bytes | None = None, *, compress_level: int = 6,
               strategy: int | None = None) -> bytes:
    """Encode a uint8 (H, W, 3|4) RGB(A) array as PNG bytes, deterministically.

    ``compress_level`` and ``strategy`` (a zlib strategy such as ``zlib.Z_RLE``; default zlib's
    own) trade encoding time for size; the pixels are the same either way.

    With ``icc_profile`` (e.g. the source image's ``info["icc_profile"]``) it is embedded as an
    iCCP chunk, so the output keeps the input's colour profile; without one the image is marked
    sRGB with an ``sRGB`` chunk (what the normalised catalog images are). No time stamp or text
    chunks are written, so equal pixels and profile give byte-identical files.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected a uint8 (H, W, 3|4) array, got {array.dtype} {array.shape}")
    image = Image.fromarray(array)  # uint8 (H, W, 3|4) -> RGB | RGBA
    options: dict = {"format": "PNG", "compress_level": compress_level, "optimize": False}
    if strategy is not None:
        options["compress_type"] = strategy
    if icc_profile:
        options["icc_profile"] = icc_profile
    else:
        info = PngImagePlugin.PngInfo()
        info.add(b"sRGB", _SRGB_PERCEPTUAL)
        options["pnginfo"] = info
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()
