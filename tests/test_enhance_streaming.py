"""Enhancement in row bands (issue 11, item 11): the same pixels as the whole-image path, a PNG
written band by band that decodes to them, and peak memory bounded by the 8-bit output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from torch import nn

from catalog_enhance.models.espcn import ESPCN
from catalog_enhance.models.srcnn import SRCNN
from catalog_enhance.tasks.enhance.image import OUTPUT_PNG_COMPRESSION, enhance_image, enhance_to_png
from catalog_enhance.tasks.enhance.loaded import EnhancementModels
from catalog_enhance.tasks.enhance.params import EnhanceParams
from catalog_enhance.tasks.imaging.codec import load_image
from catalog_enhance.tasks.imaging.png_writer import encode_png_rows
from catalog_enhance.tasks.inference.streaming import super_resolve_bands, super_resolve_bands_to_long_side
from catalog_enhance.tasks.inference.tiling import TileError, Tiling, super_resolve, super_resolve_to_long_side
from catalog_enhance.tasks.inference.trained import TrainedModel
from catalog_enhance.tasks.runtime import select_runtime

CPU = select_runtime("cpu")
REPO = Path(__file__).resolve().parent.parent
SMALL_TILES = Tiling(tile=24, overlap=8, batch_tiles=3)  # several tile rows and columns on tiny images


def photo(h: int, w: int, seed: int = 0, kind: str = "rgb") -> np.ndarray:
    """Noise on gradients; ``kind`` "rgba": a cutout (transparent surround, soft edge);
    "grey": equal channels (a greyscale photo as `load_image` gives it)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([yy / h, xx / w, (yy + xx) / (h + w)], axis=-1) * 200
    rgb = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    if kind == "grey":
        return np.repeat(rgb[..., :1], 3, axis=2)
    if kind == "rgba":
        radius = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
        alpha = np.clip((1.0 - radius) * 4 * 255, 0, 255).astype(np.uint8)  # 0 outside, soft edge
        rgb[alpha == 0] = 0  # black under the transparent pixels: a fringe would show
        return np.concatenate([rgb, alpha[..., None]], axis=-1)
    return rgb


def espcn(scale: int, channels: int, seed: int = 0) -> ESPCN:
    """ESPCN with a non-zero residual branch (the default zero-inits it to pure bicubic)."""
    torch.manual_seed(seed)
    model = ESPCN(scale, channels=channels).eval()
    with torch.no_grad():
        nn.init.normal_(model.to_subpixels.weight, 0.0, 0.05)
    return model


def srcnn(channels: int, seed: int = 0) -> SRCNN:
    torch.manual_seed(seed)
    return SRCNN(channels=channels).eval()


def assert_close(streamed: np.ndarray, whole: np.ndarray) -> None:
    """Equal, but for a rare 1 where batching moved a float across a rounding boundary."""
    assert streamed.shape == whole.shape and streamed.dtype == whole.dtype == np.uint8
    diff = np.abs(streamed.astype(np.int16) - whole.astype(np.int16))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3


# -- the same pixels ------------------------------------------------------------------------------

MODELS = {
    "espcn-y": (lambda: espcn(2, 1), 1),
    "espcn-rgb": (lambda: espcn(2, 3), 3),
    "srcnn-y": (lambda: srcnn(1), 1),
}
SHAPES = [(37, 53, "rgb"), (61, 29, "rgba"), (50, 50, "grey"), (1, 1, "rgb"), (1, 77, "rgba"), (80, 3, "rgb")]


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("h,w,kind", SHAPES)
def test_bands_equal_the_whole_image_path(model_name, h, w, kind):
    build, channels = MODELS[model_name]
    model, image = build(), photo(h, w, seed=h * w, kind=kind)
    whole = super_resolve(image, model, scale=2, channels=channels, tiling=SMALL_TILES)
    bands = super_resolve_bands(image, model, scale=2, channels=channels, tiling=SMALL_TILES)
    assert (bands.height, bands.width, bands.channels) == whole.shape
    assert_close(bands.collect(), whole)


@pytest.mark.parametrize("target", [40, 75, 100, 131, 200])  # no SR, fit down, exact, fit up past the model
@pytest.mark.parametrize("h,w,kind", [(37, 53, "rgb"), (61, 29, "rgba"), (45, 45, "grey")])
def test_bands_to_long_side_equal_the_whole_image_path(target, h, w, kind):
    model, image = espcn(2, 1), photo(h, w, seed=3, kind=kind)
    whole = super_resolve_to_long_side(image, {2: model}, target, channels=1, tiling=SMALL_TILES)
    bands = super_resolve_bands_to_long_side(image, {2: model}, target, channels=1, tiling=SMALL_TILES)
    assert max(whole.shape[:2]) == target
    assert_close(bands.collect(), whole)


def _models(model: nn.Module, scale: int, channels: int) -> EnhancementModels:
    sr = TrainedModel(name="espcn", version="t", kind="sr", module=model, config={},
                      metadata={"scale": scale, "channels": channels})
    return EnhancementModels(sr=sr)


@pytest.mark.parametrize("params", [EnhanceParams(scale=3, tile=16, overlap=8, batch_tiles=2),
                                    EnhanceParams(target_long_side=150, tile=16, overlap=8)],
                         ids=["x3", "long-side-150"])
@pytest.mark.parametrize("kind", ["rgb", "rgba"])
def test_enhance_to_png_decodes_to_the_whole_image_result(params, kind):
    """The catalog's and `enhance --input`'s per-image step, streamed, against `enhance_image`."""
    models = _models(espcn(3, 1).to(memory_format=torch.channels_last), 3, 1)
    image = photo(43, 58, seed=7, kind=kind)
    enhanced = enhance_to_png(image, models, params, CPU)
    decoded = load_image(enhanced.png)
    assert_close(decoded, enhance_image(image, models, params, CPU))
    assert (enhanced.height, enhanced.width) == decoded.shape[:2]
    assert enhanced.mode == ("RGBA" if kind == "rgba" else "RGB")


def white_disc(n: int = 40, radius: float = 12.0) -> np.ndarray:
    """An antialiased white disc on full transparency, black under the transparent pixels."""
    yy, xx = np.mgrid[:n, :n] + 0.5
    alpha = np.clip(radius + 0.5 - np.hypot(yy - n / 2, xx - n / 2), 0, 1)
    image = np.zeros((n, n, 4), np.uint8)
    image[..., :3] = 255
    image[..., 3] = np.round(alpha * 255)
    image[alpha == 0, :3] = 0
    return image


def test_streamed_cutout_keeps_transparency_and_has_no_dark_fringe():
    """ESPCN as initialised is MATLAB bicubic, whose negative lobes would pull black from under
    the transparent pixels into the soft edge if the colour there were not filled first."""
    models = _models(ESPCN(3, channels=3).eval(), 3, 3)
    out = load_image(enhance_to_png(white_disc(), models, EnhanceParams(scale=3, tile=16, overlap=8), CPU).png)
    rgb, alpha = out[..., :3].astype(int), out[..., 3]
    assert (alpha[:15] == 0).all() and (alpha[-15:] == 0).all()  # transparency kept outside
    assert (alpha[55:65, 55:65] == 255).all()
    assert rgb[alpha > 25].min() >= 250  # no dark fringe on the soft edge
    assert rgb[alpha == 0].max(axis=-1).min() >= 250  # the object's colour under alpha 0, not black


def test_a_failing_tile_is_a_tile_error_naming_it():
    class Broken(nn.Module):
        upsamples_inside = True
        scale = 2

        def forward(self, x):
            if x.shape[-1] < 40:  # only the narrower last column of tiles
                raise RuntimeError("boom")
            return torch.nn.functional.interpolate(x, scale_factor=2)

    with pytest.raises(TileError, match="boom") as caught:
        super_resolve_bands(photo(30, 50), Broken().eval(), scale=2, channels=3,
                            tiling=Tiling(tile=16, overlap=8)).collect()
    assert caught.value.tiles  # names the tiles of the failed batch


# -- the PNG writer -----------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,c", [(1, 1, 3), (5, 7, 4), (70, 33, 3), (33, 70, 4)])
@pytest.mark.parametrize("band_rows", [1, 4, 64])
def test_png_rows_decode_to_the_pixels(h, w, c, band_rows):
    rng = np.random.default_rng(h * w + c)
    image = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    image[: h // 2] = image[: h // 2, :1]  # flat areas too, where Up/Sub/Paeth win
    bands = (image[top : top + band_rows] for top in range(0, h, band_rows))
    png = encode_png_rows(bands, w, h, c, **OUTPUT_PNG_COMPRESSION)
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.mode == ("RGBA" if c == 4 else "RGB")
        assert "srgb" in decoded.info
        np.testing.assert_array_equal(np.asarray(decoded), image)


def test_png_rows_embed_an_icc_profile_and_refuse_wrong_bands():
    image = np.zeros((4, 5, 3), np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(io.BytesIO(encode_png_rows([image], 5, 4, 3, icc_profile=icc))) as decoded:
        assert decoded.info["icc_profile"] == icc
    with pytest.raises(ValueError, match="rows, expected 4"):
        encode_png_rows([image[:3]], 5, 4, 3)
    with pytest.raises(ValueError, match="bands"):
        encode_png_rows([image[..., :2]], 5, 4, 3)


def test_png_rows_compress_about_as_well_as_pillow():
    image = photo(200, 300)
    pillow = io.BytesIO()
    Image.fromarray(image).save(pillow, format="PNG", compress_level=3, compress_type=zlib.Z_RLE)
    ours = encode_png_rows([image], 300, 200, 3, compress_level=3, strategy=zlib.Z_RLE)
    assert len(ours) <= 1.05 * len(pillow.getvalue())


# -- bounded memory -----------------------------------------------------------------------------

_MEMORY_CASE = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from catalog_enhance.models.espcn import ESPCN
    from catalog_enhance.tasks.enhance.image import enhance_to_png
    from catalog_enhance.tasks.enhance.loaded import EnhancementModels
    from catalog_enhance.tasks.enhance.params import EnhanceParams
    from catalog_enhance.tasks.inference.trained import TrainedModel
    from catalog_enhance.tasks.runtime import select_runtime

    height, width, channels = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    module = ESPCN(2, channels=1, features=8, mid=8).eval().to(memory_format=torch.channels_last)
    sr = TrainedModel(name="espcn", version="t", kind="sr", module=module, config={},
                      metadata={"scale": 2, "channels": 1})
    models, params, cpu = EnhancementModels(sr=sr), EnhanceParams(scale=2), select_runtime("cpu")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if channels == 4:
        image[: height // 3, :, 3] = 0  # a transparent band: the colour fill runs
    enhance_to_png(np.zeros((64, 64, channels), np.uint8), models, params, cpu)  # warm the kernels
    def status(field):  # bytes
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
    # Reset the peak (VmHWM, what ru_maxrss reports) so setup transients do not hide the run's.
    open("/proc/self/clear_refs", "w").write("5")
    baseline = status("VmRSS:")
    png = enhance_to_png(image, models, params, cpu).png
    print(json.dumps({"baseline": baseline, "peak": status("VmHWM:"), "png": len(png)}))
""")


@pytest.mark.parametrize("channels", [3, 4])
def test_peak_memory_is_a_small_multiple_of_the_8bit_output(channels):
    """A 1.5 MP photo at x2 (6 MP out): the peak grows by at most 4x the 8-bit output plus 64 MiB
    (measured: RGB 75 MiB for 17 MiB of output, RGBA 118 for 23; the whole-image path grew by
    ~18x the output, ~300 MiB here). Noise input, so the PNG is about as large as the raw output
    and counts in full. Memory, not time."""
    height, width = 1000, 1500
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path]), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", _MEMORY_CASE, str(height), str(width), str(channels)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    output_bytes = height * 2 * width * 2 * channels
    growth = result["peak"] - result["baseline"]
    # A network window's activations, 32-row float bands, RGBA's input-sized colour fill.
    allowance = 64 * 2**20
    print(f"peak growth {growth / 2**20:.0f} MiB for {output_bytes / 2**20:.0f} MiB of 8-bit output")
    assert growth <= 4 * output_bytes + allowance, (growth / 2**20, output_bytes / 2**20)
