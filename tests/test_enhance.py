"""The pure enhancement core: tiling is exact, memory is bounded, colour and alpha survive."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms
from torch import nn

from catalog_enhance.models.cyclegan import ResnetGenerator
from catalog_enhance.models.espcn import ESPCN
from catalog_enhance.models.srcnn import SRCNN
from catalog_enhance.tasks.inference import translate
from catalog_enhance.tasks.inference.tiling import (
    TileError,
    Tiling,
    choose_scale,
    fit_size,
    super_resolve,
    super_resolve_many,
    super_resolve_to_long_side,
)
from catalog_enhance.tasks.inference.translate import TRANSLATION_TILING, translate_full_resolution
from catalog_enhance.tasks.imaging.codec import encode_png
from catalog_enhance.tasks.imaging.resize import imresize
from catalog_enhance.tasks.runtime import select_runtime

CPU = select_runtime("cpu")


# -- helpers ------------------------------------------------------------------------------------


def random_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth-ish random colour image (noise on a gradient), so networks see real structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([yy / h, xx / w, (yy + xx) / (h + w)], axis=-1) * 200
    img = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    if channels == 4:
        img = np.concatenate([img, np.full((h, w, 1), 255, np.uint8)], axis=-1)
    return img


def random_espcn(scale: int, channels: int, seed: int = 0) -> ESPCN:
    """ESPCN with a clearly non-zero residual branch (the default zero-inits it to pure bicubic)."""
    torch.manual_seed(seed)
    model = ESPCN(scale, channels=channels).eval()
    with torch.no_grad():
        nn.init.normal_(model.to_subpixels.weight, 0.0, 0.05)
    return model


def random_srcnn(channels: int, variant: str, seed: int = 0) -> SRCNN:
    torch.manual_seed(seed)
    model = SRCNN(channels=channels, variant=variant, residual=True).eval()
    with torch.no_grad():
        nn.init.normal_(model.reconstruction.weight, 0.0, 0.05)
    return model


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def quantise(t: torch.Tensor) -> np.ndarray:
    return t[0].mul(255).add(0.5).floor().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


class IdentityY(nn.Module):
    """A same-size 'model' returning its input: what runs is exactly the bicubic + colour path."""

    upsamples_inside = False

    def forward(self, x):
        return x.clone()


class Sharpen(nn.Module):
    """A same-size 'model' that sharpens edges strongly (unsharp mask), as learned SR models do."""

    upsamples_inside = False

    def forward(self, x):
        k = torch.tensor([1.0, 4, 6, 4, 1]) / 16
        k = (k[:, None] * k[None]).expand(x.shape[1], 1, 5, 5)
        blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=x.shape[1])
        return x + 1.5 * (x - blurred)


class NearestX2(nn.Module):
    """LR -> HR x2 model that fails on any window containing a (nearly) white pixel."""

    upsamples_inside = True
    scale = 2

    def forward(self, x):
        if (x > 0.99).any():
            raise RuntimeError("boom: white pixel")
        return F.interpolate(x, scale_factor=2, mode="nearest")


class BatchSpy(nn.Module):
    """Records every batch shape it is called with; nearest-neighbour x2."""

    upsamples_inside = True
    scale = 2

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        assert torch.is_inference_mode_enabled()
        self.shapes.append(tuple(x.shape))
        return F.interpolate(x, scale_factor=2, mode="nearest")


# -- tiling is exact ----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3])
def test_tiled_espcn_equals_whole_image_call(scale):
    img = random_image(29, 41, seed=scale)
    model = random_espcn(scale, channels=3)
    with torch.inference_mode():
        whole = quantise(model(to_tensor(img)))
    # Receptive radius at LR: 5x5 (2) + 3x3 (1) + 3x3 (1) = 4 px.
    tiled = super_resolve(img, model, scale=scale, channels=3, tiling=Tiling(tile=8, overlap=4, batch_tiles=3))
    assert max_diff(tiled, whole) <= 1
    # The comparison is sensitive: without overlap the tile seams are plainly wrong.
    seams = super_resolve(img, model, scale=scale, channels=3, tiling=Tiling(tile=8, overlap=0, batch_tiles=3))
    assert max_diff(seams, whole) > 10


def test_tiled_y_channel_espcn_equals_one_window():
    img = random_image(31, 45, seed=7)
    model = random_espcn(2, channels=1)
    one_window = super_resolve(img, model, scale=2, channels=1, tiling=Tiling(tile=64, overlap=0))
    tiled = super_resolve(img, model, scale=2, channels=1, tiling=Tiling(tile=8, overlap=4, batch_tiles=5))
    assert max_diff(tiled, one_window) <= 1
    assert not np.array_equal(one_window[..., 0], one_window[..., 1])  # colour came back


@pytest.mark.parametrize(("variant", "radius"), [("915", 6), ("955", 8)])
@pytest.mark.parametrize("scale", [2, 3])
def test_tiled_srcnn_equals_whole_image_call(variant, radius, scale):
    img = random_image(23, 30, seed=scale)
    model = random_srcnn(3, variant)
    with torch.inference_mode():
        whole = quantise(model(imresize(to_tensor(img), scale)))
    # Per-tile bicubic is exact 2 LR px inside the window; the network reaches `radius` HR px.
    overlap = 2 + math.ceil(radius / scale)
    tiled = super_resolve(img, model, scale=scale, channels=3,
                          tiling=Tiling(tile=8, overlap=overlap, batch_tiles=4))
    assert max_diff(tiled, whole) <= 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_odd_sizes_come_out_exactly_scaled(scale):
    img = random_image(37, 53, seed=scale)
    for model in (random_espcn(scale, 3), random_srcnn(3, "915")):
        out = super_resolve(img, model, scale=scale, channels=3, tiling=Tiling(tile=16, overlap=6))
        assert out.shape == (37 * scale, 53 * scale, 3) and out.dtype == np.uint8
    rgba = super_resolve(random_image(37, 53, channels=4), random_espcn(scale, 1), scale=scale, channels=1,
                         tiling=Tiling(tile=16))
    assert rgba.shape == (37 * scale, 53 * scale, 4)


def test_pil_input_matches_array_input():
    img = random_image(20, 27)
    model = random_espcn(2, 3)
    assert np.array_equal(
        super_resolve(Image.fromarray(img), model, scale=2, channels=3, tiling=Tiling(tile=8, overlap=4)),
        super_resolve(img, model, scale=2, channels=3, tiling=Tiling(tile=8, overlap=4)),
    )


def test_amp_and_channels_last_paths_run_and_agree():
    img = random_image(24, 24)
    model = random_espcn(2, 3)
    ref = super_resolve(img, model, scale=2, channels=3, tiling=Tiling(tile=8, overlap=4))
    channels_last = replace(CPU, channels_last=True)
    assert max_diff(super_resolve(img, model, scale=2, channels=3, tiling=Tiling(tile=8, overlap=4),
                                  runtime=channels_last), ref) <= 1
    bf16 = super_resolve(img, model, scale=2, channels=3, tiling=Tiling(tile=8, overlap=4),
                         runtime=replace(CPU, amp_dtype=torch.bfloat16))
    assert bf16.shape == ref.shape and max_diff(bf16, ref) <= 6  # bfloat16 keeps ~3 digits


# -- errors are never swallowed -----------------------------------------------------------------


def test_failing_tile_raises_naming_its_coordinates():
    img = np.zeros((40, 48, 3), np.uint8)
    img[20, 30] = 255  # only the tile with core rows 16:24, cols 24:32 sees it (overlap 0)
    with pytest.raises(TileError, match=r"image 0 rows 16:24 cols 24:32.*boom") as info:
        super_resolve(img, NearestX2().eval(), scale=2, channels=3, tiling=Tiling(tile=8, overlap=0, batch_tiles=1))
    assert info.value.tiles == [(0, 16, 24, 24, 32)]
    assert isinstance(info.value.__cause__, RuntimeError)
    # Across images the error names the image too; earlier images have already come out.
    results = super_resolve_many(
        [np.zeros((8, 8, 3), np.uint8), img], NearestX2().eval(), scale=2, channels=3,
        tiling=Tiling(tile=8, overlap=0, batch_tiles=1),
    )
    assert next(results).shape == (16, 16, 3)
    with pytest.raises(TileError, match=r"image 1 rows 16:24 cols 24:32"):
        next(results)


def test_wrong_output_shape_and_nan_are_tile_errors():
    class SameSize(nn.Module):
        upsamples_inside = True

        def forward(self, x):
            return x

    with pytest.raises(TileError, match="expected .*scale=2"):
        super_resolve(random_image(10, 10), SameSize().eval(), scale=2, channels=3, tiling=Tiling(tile=8))

    class Nan(nn.Module):
        upsamples_inside = False

        def forward(self, x):
            return x * float("nan")

    with pytest.raises(TileError, match="non-finite"):
        super_resolve(random_image(10, 10), Nan().eval(), scale=2, channels=3, tiling=Tiling(tile=8))


def test_bad_calls_are_rejected_clearly():
    model = random_espcn(2, 3)
    with pytest.raises(ValueError, match="training mode"):
        super_resolve(random_image(8, 8), ESPCN(2, channels=3), scale=2, channels=3)
    with pytest.raises(ValueError, match="upscales x2 but scale=3"):
        super_resolve(random_image(8, 8), model, scale=3, channels=3)
    with pytest.raises(ValueError, match="3 channel"):
        super_resolve(random_image(8, 8), model, scale=2, channels=1)
    with pytest.raises(ValueError, match="uint8"):
        super_resolve(np.zeros((8, 8, 3), np.uint16), model, scale=2, channels=3)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        super_resolve(np.zeros((8, 8), np.uint8), model, scale=2, channels=3)


# -- bounded memory and batching ----------------------------------------------------------------


def test_device_batches_stay_bounded_on_a_large_image():
    spy = BatchSpy().eval()
    img = random_image(150, 170)
    out = super_resolve(img, spy, scale=2, channels=3, tiling=Tiling(tile=16, overlap=4, batch_tiles=3))
    assert out.shape == (300, 340, 3)
    assert max(s[0] for s in spy.shapes) <= 3
    assert all(s[-2:] == (24, 24) for s in spy.shapes)  # tile + 2 * overlap, never the image
    assert sum(s[0] for s in spy.shapes) == math.ceil(150 / 16) * math.ceil(170 / 16)
    assert np.array_equal(out, img.repeat(2, 0).repeat(2, 1))  # every tile pasted in its place


def test_many_shares_batches_keeps_order_and_matches_single_calls():
    spy = BatchSpy().eval()
    images = [random_image(12, 12, seed=i) for i in range(5)] + [random_image(30, 22, seed=9)]
    outs = list(super_resolve_many(images, spy, scale=2, channels=3,
                                   tiling=Tiling(tile=16, overlap=4, batch_tiles=4)))
    # The five 12x12 images have equal one-tile windows, so they share batches.
    assert (4, 3, 12, 12) in spy.shapes
    for img, out in zip(images, outs, strict=True):
        assert np.array_equal(out, img.repeat(2, 0).repeat(2, 1))
    model = random_espcn(2, 1)
    many = list(super_resolve_many(images, model, scale=2, channels=1,
                                   tiling=Tiling(tile=8, overlap=4, batch_tiles=8)))
    for img, out in zip(images, many, strict=True):
        assert max_diff(out, super_resolve(img, model, scale=2, channels=1, tiling=Tiling(tile=8, overlap=4))) <= 1


def test_many_consumes_its_input_lazily():
    pulled = []

    def images():
        for i in range(20):
            pulled.append(i)
            yield random_image(9 + i, 10, seed=i)  # all different sizes: no shared batches

    results = super_resolve_many(images(), BatchSpy().eval(), scale=2, channels=3, tiling=Tiling(tile=8),
                                 max_images_in_flight=2)
    first = next(results)
    assert first.shape == (18, 20, 3)
    assert len(pulled) <= 3
    assert len(list(results)) == 19


# -- colour and alpha ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3])
def test_white_stays_255_and_grey_stays_grey_with_a_y_model(scale):
    for model in (IdentityY().eval(), ESPCN(scale, channels=1).eval()):  # ESPCN starts as bicubic
        white = super_resolve(np.full((13, 17, 3), 255, np.uint8), model, scale=scale, channels=1,
                              tiling=Tiling(tile=8))
        assert (white == 255).all()
        grey = super_resolve(np.full((13, 17, 3), 128, np.uint8), model, scale=scale, channels=1,
                             tiling=Tiling(tile=8))
        assert (grey == 128).all()
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8).repeat(3, axis=-1)  # grey, textured
    out = super_resolve(levels, random_espcn(scale, 1), scale=scale, channels=1, tiling=Tiling(tile=8, overlap=4))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def disc(colour, n=40, radius=12.0) -> np.ndarray:
    """An antialiased disc on full transparency, black under the transparent pixels."""
    yy, xx = np.mgrid[:n, :n] + 0.5
    alpha = np.clip(radius + 0.5 - np.hypot(yy - n / 2, xx - n / 2), 0, 1)
    img = np.zeros((n, n, 4), np.uint8)
    img[..., :3] = colour
    img[..., 3] = np.round(alpha * 255)
    img[alpha == 0, :3] = 0
    return img


@pytest.mark.parametrize("colour", [(255, 255, 255), (255, 0, 0)])
def test_transparent_png_keeps_transparency_and_has_no_dark_fringe(colour):
    src = Image.open(io.BytesIO(encode_png(disc(colour))))  # a real transparent PNG
    assert src.mode == "RGBA"
    out = super_resolve(src, Sharpen().eval(), scale=3, channels=3, tiling=Tiling(tile=16, overlap=8))
    assert out.shape == (120, 120, 4)
    rgb, alpha = out[..., :3].astype(int), out[..., 3]
    assert (alpha[:15] == 0).all() and (alpha[-15:] == 0).all()  # transparency kept outside
    assert (alpha[55:65, 55:65] == 255).all()
    visible = alpha > 25  # includes the soft edge, where fringes would show
    if colour == (255, 255, 255):
        assert rgb[visible].min() >= 250
    else:
        assert rgb[visible][:, 0].min() >= 250 and rgb[visible][:, 1:].max() <= 5
    # Colour under fully transparent pixels is the object's, not black.
    assert rgb[alpha == 0].max(axis=-1).min() >= 250


def test_opaque_rgba_stays_opaque():
    out = super_resolve(random_image(12, 14, channels=4), random_espcn(2, 3), scale=2, channels=3,
                        tiling=Tiling(tile=8))
    assert (out[..., 3] == 255).all()


# -- target sizes -------------------------------------------------------------------------------


def test_choose_scale_and_fit_size():
    assert choose_scale(37, 53, 100, [2, 3, 4]) == 2
    assert choose_scale(37, 53, 150, [4, 2, 3]) == 3
    assert choose_scale(37, 53, 1000, [2, 4]) == 4  # none reaches: the largest
    assert choose_scale(37, 53, 53, [2]) is None and choose_scale(37, 53, 40, [2]) is None
    assert fit_size(37, 53, 150) == (105, 150)
    assert fit_size(2000, 1500, 2048) == (2048, 1536)
    with pytest.raises(ValueError):
        choose_scale(10, 10, 100, [])


def test_target_long_side_gives_the_exact_size_with_the_right_model():
    img = random_image(37, 53)
    models = {s: random_espcn(s, 1, seed=s) for s in (2, 3, 4)}
    for target, expected in [(100, (70, 100)), (150, (105, 150)), (300, (209, 300)), (40, (28, 40)), (53, (37, 53))]:
        out = super_resolve_to_long_side(img, models, target, channels=1, tiling=Tiling(tile=16, overlap=4))
        assert out.shape == (*expected, 3), target
    # x3 is the model that ran for 150 px: only a model of that scale works here.
    failing = {s: NearestX2().eval() for s in (2, 4)} | {3: random_espcn(3, 1)}
    assert super_resolve_to_long_side(img, failing, 150, channels=1, tiling=Tiling(tile=16)).shape == (105, 150, 3)
    # Already at the target: pixels unchanged.
    assert np.array_equal(super_resolve_to_long_side(img, models, 53, channels=1), img)


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_calls_on_one_shared_model_do_not_mix_images():
    model = random_espcn(2, 1)
    images = [random_image(20 + 3 * i, 26 - 2 * i, seed=i) for i in range(4)]
    kwargs = dict(scale=2, channels=1, tiling=Tiling(tile=8, overlap=4, batch_tiles=2))
    sequential = [super_resolve(img, model, **kwargs) for img in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda img: super_resolve(img, model, **kwargs), images))
    for seq, con in zip(sequential, concurrent, strict=True):
        assert np.array_equal(seq, con)


# -- CycleGAN at full resolution ----------------------------------------------------------------


def small_generator(norm: str = "instance") -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(ngf=8, n_blocks=2, norm=norm).eval()


def test_translate_small_image_is_one_exact_pass():
    img = random_image(30, 38)
    gen = small_generator()
    with torch.inference_mode():
        whole = quantise((gen(to_tensor(img) * 2 - 1) + 1) / 2)
    assert np.array_equal(translate_full_resolution(img, gen, whole_image_side=64), whole)


def test_translate_tiles_agree_with_each_other_via_thumbnail_statistics(monkeypatch):
    img = random_image(96, 104, seed=3)
    gen = small_generator()
    # overlap 30 is not a multiple of the generator's stride 4: windows must be re-aligned.
    kwargs = dict(whole_image_side=48)
    small, large = (replace(TRANSLATION_TILING, tile=tile, overlap=30) for tile in (20, 40))
    small_tiles = translate_full_resolution(img, gen, tiling=small, **kwargs)
    large_tiles = translate_full_resolution(img, gen, tiling=large, **kwargs)
    assert small_tiles.shape == img.shape
    # One set of statistics: the generator is a fixed convolutional network, so tilings agree
    # once the overlap covers its receptive field (~30 px here).
    assert max_diff(small_tiles, large_tiles) <= 1
    # With per-tile statistics (what naive tiling does) the same two runs disagree badly.
    monkeypatch.setattr(translate, "_uses_instance_norm", lambda module: False)
    per_tile_small = translate_full_resolution(img, gen, tiling=small, **kwargs)
    per_tile_large = translate_full_resolution(img, gen, tiling=large, **kwargs)
    assert max_diff(per_tile_small, per_tile_large) > 20


def test_translate_without_norm_tiles_equal_the_whole_image_and_alpha_passes_through():
    gen = small_generator(norm="none")
    with torch.no_grad():  # weights large enough that the output has structure to compare
        for m in gen.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    img = random_image(97, 103, seed=4)  # odd sizes: the generator pads to its stride itself
    with torch.inference_mode():
        whole = quantise((gen(to_tensor(img) * 2 - 1) + 1) / 2)
    assert whole.std() > 20
    tiling = replace(TRANSLATION_TILING, tile=20, overlap=30)
    out = translate_full_resolution(img, gen, tiling=tiling, whole_image_side=20)
    assert max_diff(out, whole) <= 1
    # The comparison is sensitive: too little overlap for the receptive field shows.
    too_little = replace(TRANSLATION_TILING, tile=20, overlap=14)
    assert max_diff(translate_full_resolution(img, gen, tiling=too_little, whole_image_side=20), whole) > 10
    rgba = np.concatenate([img, np.zeros((97, 103, 1), np.uint8)], axis=-1)
    rgba[10:20, :, 3], rgba[20:, :, 3] = 128, 255
    out = translate_full_resolution(rgba, gen, tiling=tiling, whole_image_side=20)
    assert out.shape == (97, 103, 4) and np.array_equal(out[..., 3], rgba[..., 3])


# -- encoding -----------------------------------------------------------------------------------


def test_encode_png_is_deterministic_and_keeps_the_colour_profile():
    img = random_image(9, 11, channels=4)
    data = encode_png(img)
    assert data == encode_png(img)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "RGBA" and np.array_equal(np.asarray(decoded), img)
    assert b"sRGB" in data[: data.index(b"IDAT")] and b"iCCP" not in data
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_icc = encode_png(img[..., :3], profile)
    assert with_icc == encode_png(img[..., :3], profile)
    assert Image.open(io.BytesIO(with_icc)).info["icc_profile"] == profile
    assert b"sRGB" not in with_icc[: with_icc.index(b"IDAT")]
    with pytest.raises(ValueError):
        encode_png(img.astype(np.float32))
