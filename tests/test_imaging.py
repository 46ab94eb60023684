"""decode_untrusted: every bad-input kind refused with its reason; good images normalised."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from image_fixtures import (
    corrupt_png,
    encode,
    noise,
    png_bomb,
    png_chunks,
    swapped_red_green_profile,
)
from PIL import Image, ImageCms, ImageFilter

from catalog_enhance.tasks.imaging.codec import ImageRejected, decode_untrusted, load_image, load_rgb

LIMIT = 10_000_000


def decode(data: bytes, max_pixels: int = LIMIT):
    return decode_untrusted(data, max_pixels=max_pixels, name="fixture")


def test_png_is_deterministic_and_carries_no_metadata():
    pixels = noise()
    source = encode(pixels, "PNG", pnginfo=_text_chunk(), icc_profile=_srgb_icc())
    first, second = decode(source), decode(source)
    assert first.png == second.png and first.sha256 == hashlib.sha256(first.png).hexdigest()
    assert png_chunks(first.png) == [b"IHDR", b"IDAT", b"IEND"]
    assert (first.width, first.height, first.mode, first.has_alpha) == (32, 24, "RGB", False)
    assert first.source_format == "PNG" and first.icc_profile == "sRGB built-in"
    # An sRGB profile is not re-applied: the pixels are exactly the source pixels.
    np.testing.assert_array_equal(load_image(first.png), pixels)


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:5] = (255, 0, 0)  # a red band along the top of the stored image
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    result = decode(encode(pixels, "JPEG", exif=exif.tobytes(), quality=95))
    assert result.exif_orientation == 6
    assert (result.width, result.height) == (20, 40)  # stored 40x20, displayed 20x40
    shown = load_image(result.png).astype(int)
    # After a clockwise turn the top band is the right-hand band.
    assert shown[:, -3:, 0].mean() > 200 and shown[:, -3:, 1].mean() < 60
    assert shown[:, :10, 0].mean() < 60


def test_cmyk_comes_out_rgb():
    cmyk = Image.new("CMYK", (16, 12), (0, 255, 255, 0))  # no cyan, full magenta+yellow: red
    for fmt in ("JPEG", "TIFF"):
        result = decode(encode(cmyk, fmt))
        assert result.mode == "RGB" and result.source_format == fmt
        r, g, b = load_image(result.png).reshape(-1, 3).mean(axis=0)
        assert r > 230 and g < 30 and b < 30


def test_non_srgb_icc_profile_is_converted_to_srgb():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    result = decode(encode(red, "PNG", icc_profile=swapped_red_green_profile()))
    assert result.icc_profile == "swapped red/green test"
    # The profile says channel 1 is sRGB green: in sRGB the pixels are green.
    np.testing.assert_allclose(load_image(result.png)[0, 0], (0, 255, 0), atol=2)


def test_rgba_with_transparency_is_kept_and_flagged():
    pixels = np.dstack([noise(), np.full((24, 32), 255, np.uint8)])
    pixels[:4, :4, 3] = 0
    result = decode(encode(pixels, "PNG"))
    assert (result.mode, result.has_alpha) == ("RGBA", True)
    np.testing.assert_array_equal(load_image(result.png), pixels)


def test_fully_opaque_rgba_becomes_rgb():
    pixels = np.dstack([noise(), np.full((24, 32), 255, np.uint8)])
    result = decode(encode(pixels, "PNG"))
    assert (result.mode, result.has_alpha) == ("RGB", False)
    np.testing.assert_array_equal(load_image(result.png), pixels[..., :3])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_becomes_rgba(fmt):
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    result = decode(encode(image, fmt, transparency=0))
    assert (result.mode, result.has_alpha, result.source_format) == ("RGBA", True, fmt)
    pixels = load_image(result.png)
    assert pixels[0, 0, 3] == 0 and tuple(pixels[0, 1]) == (200, 10, 10, 255)


def test_grey_modes_become_rgb_and_16_bit_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    result = decode(encode(Image.fromarray(ramp), "PNG"))
    pixels = load_image(result.png)
    assert result.mode == "RGB" and pixels[0, 0, 0] == 0 and pixels[0, -1, 0] == 255
    assert 100 < pixels[0, 16, 0] < 160  # the middle of the ramp is mid-grey, not clipped white
    la = Image.fromarray(np.dstack([noise(channels=1), np.full((24, 32), 128, np.uint8)]), "LA")
    assert decode(encode(la, "PNG")).mode == "RGBA"
    assert decode(encode(Image.fromarray(noise(channels=1) > 128), "PNG")).mode == "RGB"


def test_sharpness_ranks_blur_below_detail():
    pixels = noise(64, 64)
    sharp = decode(encode(pixels, "PNG")).sharpness
    blurred = decode(encode(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2)), "PNG")).sharpness
    flat = decode(encode(np.full((64, 64, 3), 90, np.uint8), "PNG")).sharpness
    assert sharp > 10 * blurred > 0 and flat == 0.0


def _truncated(fmt: str) -> bytes:
    data = encode(noise(64, 64), fmt)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "empty": (b"", "empty"),
    "text named .jpg": (b"this is not a picture\n" * 3, "not_an_image"),
    "html": (b"<!doctype html><html><body>404</body></html>", "not_an_image"),
    "truncated jpeg": (_truncated("JPEG"), "truncated"),
    "truncated png": (_truncated("PNG"), "truncated"),
    "truncated webp": (_truncated("WEBP"), "truncated"),
    "jpeg header only": (encode(noise(), "JPEG")[:12], "truncated"),
    "corrupt png": (corrupt_png(), "corrupt"),
    "png signature, garbage after": (b"\x89PNG\r\n\x1a\n" + b"\x13" * 64, "corrupt"),
    "decompression bomb header": (png_bomb(), "decompression_bomb"),
    "eps (never decoded)": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported_image"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_rejected_with_its_reason(kind):
    data, reason = BAD_INPUTS[kind]
    with pytest.raises(ImageRejected) as info:
        decode(data)
    assert info.value.reason == reason
    assert "fixture" in info.value.detail  # the detail names the item


def test_pixel_limit_applies_before_decoding():
    with pytest.raises(ImageRejected) as info:
        decode(encode(noise(), "PNG"), max_pixels=100)
    assert info.value.reason == "decompression_bomb" and "32x24" in info.value.detail
    assert decode(encode(noise(), "PNG"), max_pixels=32 * 24).width == 32  # the limit is inclusive


def test_rejection_reasons_are_quarantine_reasons():
    with pytest.raises(ValueError, match="unknown quarantine reason"):
        ImageRejected("bad_vibes", "x")


def test_load_rgb_composites_transparency_onto_white():
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 255
    pixels[:2, :, 3] = 255  # opaque red top half, transparent bottom half
    result = decode(encode(pixels, "PNG"))
    rgb = load_rgb(result.png)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[3, 3]) == (255, 255, 255)
    assert tuple(load_rgb(result.png, background=0)[3, 3]) == (0, 0, 0)


def _text_chunk():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "made at some time that must not leak into the normal form")
    return info


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_icc_helper_profile_is_readable():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(swapped_red_green_profile()))
    assert ImageCms.getProfileDescription(profile).strip() == "swapped red/green test"
