"""The reproducible sample catalog: real product-like photos, each shot "studio" and "lifestyle".

Source "tuxpaint": the Debian package `tuxpaint-stamps-default` (GPL-2), fetched at setup without
root (`apt-get download` + `dpkg-deb -x` into a cache folder, never into the repository). Its
stamps are photographed objects cut out on transparent backgrounds; the folder they live in gives
the `category` (and the next folder the `subcategory` label). Each selected object becomes:

- `style=studio`: composited onto plain white, centred (JPEG q95);
- `style=lifestyle`: composited onto a seeded crop of a real photograph shipped with
  scikit-image, slightly off-centre (JPEG q95);
- for a seeded ~10% of objects, `style=cutout`: the transparent cutout itself (RGBA PNG), so the
  pipeline's alpha path is exercised.

All images of one object share a `product_id`, which records the studio/lifestyle pairing.
Source "skimage" (the fallback when the Debian package cannot be had): objects cut out of
scikit-image's own photos (Chelsea the cat, the espresso cup, the astronaut, the rocket, the
motorcycle and 24 segmented Greek coins), labelled by what the photo shows.
Source "fashion-mnist" (Debian `dataset-fashion-mnist`, MIT): a different catalog for the GAN and
the category-conditioned GAN, Zalando's 28x28 greyscale product photos in 10 labelled categories.

The same seed gives a byte-identical feed and images; files are written atomically and identical
ones are not rewritten, so a second run writes nothing.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

SOURCES = ("auto", "tuxpaint", "skimage", "fashion-mnist")
FEED_COLUMNS = ("sku", "image_uri", "category", "style", "product_id", "subcategory", "source_name", "license")

TUX_PACKAGE = "tuxpaint-stamps-default"
TUX_LICENSE = "GPL-2"
# Where the stamps live inside the package (and so inside `<cache_dir>/tuxpaint`).
TUX_STAMPS_SUBDIR = Path("usr/share/tuxpaint/stamps")

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_LICENSE = "MIT"
FASHION_MNIST_SUBDIR = Path("usr/share/datasets/fashion-mnist")
# Zalando's class names, in label order, as (category, subcategory).
FASHION_MNIST_CLASSES = (
    ("tshirt_top", "tops"), ("trouser", "bottoms"), ("pullover", "tops"), ("dress", "dresses"),
    ("coat", "outerwear"), ("sandal", "footwear"), ("shirt", "tops"), ("sneaker", "footwear"),
    ("bag", "bags"), ("ankle_boot", "footwear"),
)

OBJECT_FILL = 0.85  # the object fits within this fraction of the canvas side
CUTOUT_FRACTION = 0.10  # share of objects that also get a transparent `cutout` image
JPEG_QUALITY = 95
# A "lifestyle" object may move off-centre by up to this share of the free margin on each side.
LIFESTYLE_JITTER = 0.25

# Stamp filter (see `scan_tux_stamps`): about 530 of the 796 stamp PNGs are RGBA, but not all of
# them are photographed objects with a usable cutout.
MIN_SHORT_SIDE = 64  # below this a stamp is an icon (chess pieces, 32x32 faces, confetti)
MIN_TRANSPARENT = 0.05  # a real cutout has background cut away; below this it is a square tile
MAX_TRANSPARENT = 0.90  # above this the object is a few thin lines (goal posts)
MIN_COLOURS = 200  # flat line art has a few hundred colours at most; photos have thousands
LINE_ART_FOLDERS = frozenset({"cartoon"})  # Tux Paint keeps its drawings in `cartoon/` folders


class SampleSourceError(RuntimeError):
    """The requested source of sample objects cannot be had here (the message says why)."""


@dataclass(frozen=True)
class SampleObject:
    """One product: its labels and how to load its RGBA cutout (loaded only when drawn)."""

    product_id: str
    category: str
    subcategory: str
    source_name: str
    license: str
    load: Callable[[], Image.Image] = field(compare=False, repr=False)


@dataclass(frozen=True)
class SampleCatalog:
    """What a build produced."""

    feed_path: Path
    n_objects: int
    n_images: int
    categories: dict[str, int]  # objects per category
    styles: dict[str, int]  # images per style
    source: str  # the source actually used: "tuxpaint", "skimage" or "fashion-mnist"
    fallback_reason: str | None = None  # why `auto` did not use Tux Paint
    files_written: int = 0  # files (images + feed) whose bytes changed on this run
    files_removed: int = 0  # images of an earlier build that the new feed no longer lists
    skipped: tuple[str, ...] = ()  # "<product_id>: <reason>" for objects that could not be drawn


# -- entry point -----------------------------------------------------------------------------


def build_sample_catalog(
    out_dir: Path,
    cache_dir: Path,
    seed: int = 0,
    max_objects: int | None = 300,
    canvas: int = 256,
    source: str = "auto",
) -> SampleCatalog:
    """Build `out_dir/feed.csv` and `out_dir/images/` from Tux Paint stamps or the fallback.

    `source`: "auto" tries Tux Paint and falls back to scikit-image's photos (saying why),
    "tuxpaint" raises `SampleSourceError` when the package cannot be had, "skimage" forces the
    fallback (no download). "fashion-mnist" is another catalog altogether: Zalando's 28x28
    greyscale product photos with 10 category labels (style=studio only; `canvas` unused), for
    the GAN and the category-conditioned GAN; it raises `SampleSourceError` when unavailable.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown sample source {source!r}; use one of {', '.join(SOURCES)}")
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    if source == "fashion-mnist":
        dataset = fetch_debian_package(FASHION_MNIST_PACKAGE, cache_dir / "fashion-mnist", FASHION_MNIST_SUBDIR)
        return build_fashion_mnist_catalog(dataset / FASHION_MNIST_SUBDIR, out_dir, seed=seed, max_objects=max_objects)
    if source in ("auto", "tuxpaint"):
        try:
            stamps_root = fetch_tux_stamps(cache_dir)
            return build_catalog_from_stamps(stamps_root, out_dir, seed=seed, max_objects=max_objects, canvas=canvas)
        except SampleSourceError as exc:
            if source == "tuxpaint":
                raise
            reason = f"Tux Paint stamps unavailable ({exc}); used scikit-image's bundled photos instead"
            return write_sample_catalog(
                skimage_objects(), out_dir, seed=seed, max_objects=max_objects, canvas=canvas,
                source="skimage", sku_prefix="SKI", fallback_reason=reason,
            )
    return write_sample_catalog(
        skimage_objects(), out_dir, seed=seed, max_objects=max_objects, canvas=canvas,
        source="skimage", sku_prefix="SKI",
    )


def build_catalog_from_stamps(
    stamps_root: Path,
    out_dir: Path,
    seed: int = 0,
    max_objects: int | None = 300,
    canvas: int = 256,
) -> SampleCatalog:
    """Build the catalog from an extracted stamp tree (`<category>/<subcategory>/.../*.png`)."""
    objects = scan_tux_stamps(stamps_root)
    if not objects:
        raise SampleSourceError(f"no usable photographed stamps under {stamps_root}")
    return write_sample_catalog(
        objects, out_dir, seed=seed, max_objects=max_objects, canvas=canvas, source="tuxpaint", sku_prefix="TUX"
    )


# -- fetching Debian packages ----------------------------------------------------------------


def fetch_tux_stamps(cache_dir: Path, timeout: float = 900) -> Path:
    """The stamps folder of `tuxpaint-stamps-default`, downloaded and extracted once into
    `<cache_dir>/tuxpaint` (see `fetch_debian_package`)."""
    extracted = fetch_debian_package(TUX_PACKAGE, Path(cache_dir) / "tuxpaint", TUX_STAMPS_SUBDIR, timeout)
    return extracted / TUX_STAMPS_SUBDIR


def fetch_debian_package(package: str, target: Path, expect: Path, timeout: float = 900) -> Path:
    """`target`, holding the files of a Debian package; downloaded and extracted only once.

    No root needed: `apt-get download` fetches the .deb into the current folder and `dpkg-deb -x`
    unpacks it anywhere. When the machine has never run `apt-get update` the download fails for
    lack of package lists; only then, and only as root, the lists are updated once and the
    download retried. The extraction is committed by a rename, so a `target` holding `expect`
    is complete, and later runs reuse it without downloading.
    """
    target = Path(target)
    if (target / expect).exists():
        return target
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise SampleSourceError(f"{' and '.join(missing)} not found (not a Debian-based system?)")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        deb = _apt_download(package, work, timeout)
        unpacked = work / "root"
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout, f"dpkg-deb -x {deb.name}")
        if not (unpacked / expect).exists():
            raise SampleSourceError(f"{deb.name} has no {expect}")
        if target.exists():  # an extraction without the expected files: replace it
            shutil.rmtree(target)
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the .deb: the extraction is what is reused
    return target


def _apt_download(package: str, folder: Path, timeout: float) -> Path:
    result = _run(["apt-get", "download", package], timeout, f"apt-get download {package}", cwd=folder, check=False)
    if result.returncode != 0 and _lists_missing(result.stderr) and _is_root():
        _run(["apt-get", "update"], timeout, "apt-get update")
        result = _run(["apt-get", "download", package], timeout, f"apt-get download {package}", cwd=folder, check=False)
    if result.returncode != 0:
        hint = " (package lists missing: run `apt-get update` once as root)" if _lists_missing(result.stderr) else ""
        raise SampleSourceError(f"apt-get download {package} failed: {_last_line(result.stderr)}{hint}")
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if not debs:
        raise SampleSourceError(f"apt-get download {package} produced no .deb")
    return debs[-1]


def _lists_missing(stderr: str) -> bool:
    # What apt-get says when it has no package lists (never updated, or lists cleaned).
    return any(s in stderr for s in ("Unable to locate package", "has no installation candidate", "No packages found"))


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run(cmd: list[str], timeout: float, what: str, cwd: Path | None = None, check: bool = True):
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SampleSourceError(f"{what} failed: {exc}") from None
    if check and result.returncode != 0:
        raise SampleSourceError(f"{what} failed: {_last_line(result.stderr)}")
    return result


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


# -- Tux Paint stamps ------------------------------------------------------------------------


def scan_tux_stamps(stamps_root: Path) -> list[SampleObject]:
    """The photographed-object stamps under `stamps_root`, labelled by folder, in path order.

    The filter keeps a stamp only if it is a real cutout of a photographed object:
    - an RGBA PNG (the greyscale `LA` and palette `P` stamps are line art; SVGs are drawings);
    - not marked `colorable` in its .dat file (a mask Tux Paint fills with the user's colour);
    - not under a `cartoon/` folder (Tux Paint's drawings);
    - short side >= MIN_SHORT_SIDE: smaller ones are icons (and would be tiny HR images);
    - between MIN_TRANSPARENT and MAX_TRANSPARENT of its pixels transparent: a background was
      really cut away, and the object is more than a few thin lines;
    - at least MIN_COLOURS distinct opaque colours: photos have thousands, flat art a few hundred.
    On the 2022.06.04 package this keeps 334 of 796 PNGs.
    """
    stamps_root = Path(stamps_root)
    objects: list[SampleObject] = []
    taken: set[str] = set()
    for path in sorted(stamps_root.rglob("*.png")):
        rel = path.relative_to(stamps_root)
        if len(rel.parts) < 2 or LINE_ART_FOLDERS & set(rel.parts[:-1]):
            continue  # a stamp needs a category folder
        if not _is_photo_cutout(path):
            continue
        category = _label(rel.parts[0])
        subcategory = _label(rel.parts[1]) if len(rel.parts) > 2 else "general"
        product_id = _unique(_slug("-".join(rel.with_suffix("").parts)), taken)
        objects.append(
            SampleObject(
                product_id=product_id, category=category, subcategory=subcategory,
                source_name=path.name, license=TUX_LICENSE, load=_png_loader(path),
            )
        )
    return objects


def _is_photo_cutout(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            if im.mode != "RGBA" or min(im.size) < MIN_SHORT_SIDE:
                return False
            if "colorable" in _dat_flags(path):
                return False
            rgba = np.asarray(im.convert("RGBA"))
    except (OSError, ValueError):  # unreadable stamp: not a usable object, not a reason to stop
        return False
    alpha = rgba[..., 3]
    transparent = float((alpha < 8).mean())
    if not MIN_TRANSPARENT <= transparent <= MAX_TRANSPARENT:
        return False
    opaque = rgba[alpha > 128][:, :3].astype(np.uint32)
    colours = np.unique((opaque[:, 0] << 16) | (opaque[:, 1] << 8) | opaque[:, 2]).size
    return colours >= MIN_COLOURS


def _dat_flags(png: Path) -> set[str]:
    dat = png.with_suffix(".dat")
    try:
        return set(dat.read_text(errors="replace").split()) if dat.exists() else set()
    except OSError:
        return set()


def _png_loader(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as im:
            return im.convert("RGBA")

    return load


def _label(folder: str) -> str:
    return folder.strip().lower().replace(" ", "_")


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "object"


def _unique(product_id: str, taken: set[str]) -> str:
    candidate, n = product_id, 2
    while candidate in taken:
        candidate, n = f"{product_id}-{n}", n + 1
    taken.add(candidate)
    return candidate


# -- scikit-image photos ---------------------------------------------------------------------

# Loaders of scikit-image's bundled photos that work offline (others in skimage.data download
# at run time). Licences as the loaders' docstrings state them.
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    # name: (file in skimage/data, licence)
    "astronaut": ("astronaut.png", "public-domain"),
    "brick": ("brick.png", "CC0"),
    "camera": ("camera.png", "CC0"),
    "chelsea": ("chelsea.png", "CC0"),
    "coffee": ("coffee.png", "CC0"),
    "coins": ("coins.png", "public-domain"),
    "grass": ("grass.png", "CC0"),
    "gravel": ("gravel.png", "CC0"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "public-domain"),
    "rocket": ("rocket.jpg", "public-domain"),
    "stereo_motorcycle": ("motorcycle_left.png", "Middlebury-2014-stereo"),
}
# Real photographs used as lifestyle backgrounds (textures and scenes; no synthetic images).
BACKGROUND_PHOTOS = tuple(SKIMAGE_PHOTOS)

# Fallback objects: (product_id, photo, box x0,y0,x1,y1 around the subject, category,
# subcategory). The box gets a soft elliptical matte, so the object is a cutout like a stamp.
SKIMAGE_OBJECTS: tuple[tuple[str, str, tuple[int, int, int, int], str, str], ...] = (
    ("chelsea-cat", "chelsea", (30, 0, 420, 300), "animals", "cat"),
    ("coffee-espresso-cup", "coffee", (75, 25, 482, 392), "household", "dishes"),
    ("astronaut-portrait", "astronaut", (15, 10, 370, 512), "people", "astronaut"),
    ("astronaut-shuttle-model", "astronaut", (352, 0, 478, 285), "toys", "models"),
    ("astronaut-helmet", "astronaut", (272, 340, 512, 512), "clothes", "hats"),
    ("rocket-launcher", "rocket", (292, 120, 358, 410), "vehicles", "rockets"),
    ("motorcycle", "stereo_motorcycle", (85, 90, 695, 455), "vehicles", "motorcycles"),
)


@lru_cache(maxsize=None)
def skimage_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos as an RGB uint8 array (greyscale made RGB)."""
    import skimage.data

    if name not in SKIMAGE_PHOTOS:
        raise KeyError(f"unknown scikit-image photo {name!r}")
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3].astype(np.uint8)
    image.setflags(write=False)  # cached: shared by every caller
    return image


def skimage_objects() -> list[SampleObject]:
    """The fallback objects: subjects of scikit-image's photos, plus each segmented coin."""
    objects = []
    for product_id, photo, box, category, subcategory in SKIMAGE_OBJECTS:
        objects.append(
            SampleObject(
                product_id=product_id, category=category, subcategory=subcategory,
                source_name=SKIMAGE_PHOTOS[photo][0], license=SKIMAGE_PHOTOS[photo][1],
                # A cast: mypy cannot infer a lambda with defaults (they bind the loop variables).
                load=cast("Callable[[], Image.Image]",
                          lambda photo=photo, box=box: _ellipse_cutout(skimage_photo(photo), box)),
            )
        )
    for index in range(len(_coin_boxes())):
        objects.append(
            SampleObject(
                product_id=f"coin-{index:02d}", category="money", subcategory="coins",
                source_name=SKIMAGE_PHOTOS["coins"][0], license=SKIMAGE_PHOTOS["coins"][1],
                load=cast("Callable[[], Image.Image]", lambda index=index: _coin_cutout(index)),
            )
        )
    return objects


def _ellipse_cutout(rgb: np.ndarray, box: tuple[int, int, int, int], feather: float = 3.0) -> Image.Image:
    x0, y0, x1, y1 = box
    crop = rgb[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.sqrt(((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2)
    # Distance inside the rim in pixels (approx.); a ramp of `feather` pixels makes a soft edge.
    inside = (1.0 - radius) * min(w, h) / 2
    alpha = np.clip(inside / feather, 0.0, 1.0)
    return Image.fromarray(np.dstack([crop, np.round(alpha * 255).astype(np.uint8)]), "RGBA")


@lru_cache(maxsize=1)
def _coin_segmentation() -> np.ndarray:
    """Label image of the 24 coins (watershed on the Sobel elevation map, as in skimage's guide)."""
    from scipy import ndimage
    from skimage import filters, measure, segmentation

    grey = skimage_photo("coins")[..., 0]
    markers = np.zeros(grey.shape, dtype=np.int32)
    markers[grey < 30] = 1
    markers[grey > 150] = 2
    coins = segmentation.watershed(filters.sobel(grey), markers) == 2
    labels = measure.label(ndimage.binary_fill_holes(coins))
    labels.setflags(write=False)
    return labels


@lru_cache(maxsize=1)
def _coin_boxes() -> tuple[tuple[int, tuple[int, int, int, int]], ...]:
    from skimage import measure

    regions = [r for r in measure.regionprops(_coin_segmentation()) if r.area >= 300]
    # Reading order (row band of ~60 px, then left to right) gives stable coin numbers.
    regions.sort(key=lambda r: (r.bbox[0] // 60, r.bbox[1]))
    return tuple((r.label, r.bbox) for r in regions)


def _coin_cutout(index: int, pad: int = 2) -> Image.Image:
    from scipy import ndimage

    label, (r0, c0, r1, c1) = _coin_boxes()[index]
    rgb, labels = skimage_photo("coins"), _coin_segmentation()
    r0, c0 = max(r0 - pad, 0), max(c0 - pad, 0)
    r1, c1 = min(r1 + pad, rgb.shape[0]), min(c1 + pad, rgb.shape[1])
    mask = (labels[r0:r1, c0:c1] == label).astype(np.float32)
    alpha = np.clip(ndimage.gaussian_filter(mask, 0.7), 0.0, 1.0)  # anti-aliased edge
    return Image.fromarray(np.dstack([rgb[r0:r1, c0:c1], np.round(alpha * 255).astype(np.uint8)]), "RGBA")


# -- Fashion-MNIST -------------------------------------------------------------------------


def read_idx(path: Path, offset: int, magic: int) -> np.ndarray:
    """The uint8 payload of a (gzipped) idx file: images start at byte 16, labels at byte 8."""
    import gzip

    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise SampleSourceError(f"cannot read {path.name}: {exc}") from None
    found = int.from_bytes(data[:4], "big") if len(data) >= offset else None
    if found != magic:
        raise SampleSourceError(f"{path.name} is not an idx file (magic {found}, expected {magic})")
    return np.frombuffer(data, np.uint8, offset=offset)


def fashion_mnist_objects(dataset_dir: Path) -> list[SampleObject]:
    """Every Fashion-MNIST image (train and t10k) as an object labelled by its class."""
    dataset_dir = Path(dataset_dir)
    objects = []
    for split in ("train", "t10k"):
        images_file = dataset_dir / f"{split}-images-idx3-ubyte.gz"
        images = read_idx(images_file, 16, 2051).reshape(-1, 28, 28)
        labels = read_idx(dataset_dir / f"{split}-labels-idx1-ubyte.gz", 8, 2049)
        if len(images) != len(labels):
            raise SampleSourceError(f"{split}: {len(images)} images but {len(labels)} labels")
        for index, label in enumerate(labels.tolist()):
            category, subcategory = FASHION_MNIST_CLASSES[label]
            objects.append(
                SampleObject(
                    product_id=f"fmnist-{split}-{index:05d}", category=category, subcategory=subcategory,
                    source_name=f"{images_file.name}#{index}", license=FASHION_MNIST_LICENSE,
                    load=cast("Callable[[], Image.Image]",
                              lambda images=images, index=index: Image.fromarray(images[index], "L")),
                )
            )
    return objects


def build_fashion_mnist_catalog(
    dataset_dir: Path, out_dir: Path, seed: int = 0, max_objects: int | None = 2000
) -> SampleCatalog:
    """A seeded, category-stratified feed of Fashion-MNIST images as 28x28 greyscale PNGs."""
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    chosen = select_objects(fashion_mnist_objects(dataset_dir), max_objects, seed)
    rows, written = [], 0
    for obj in chosen:
        name = f"{obj.product_id}_studio.png"
        written += write_if_changed(images_dir / name, _encode(obj.load(), "PNG"))
        rows.append(_feed_row("FMN", obj, "studio", name))
    return _finish(out_dir, chosen, rows, written, source="fashion-mnist")


# -- selection and compositing ---------------------------------------------------------------


def select_objects(objects: Sequence[SampleObject], max_objects: int | None, seed: int) -> list[SampleObject]:
    """A seeded draw of at most `max_objects`, stratified: categories take turns, in a seeded
    order, each giving a seeded random object, so small categories are all kept and large ones
    are capped. Returned in product_id order."""
    objects = sorted(objects, key=lambda o: o.product_id)
    if max_objects is None or max_objects >= len(objects):
        return objects
    if max_objects <= 0:
        return []
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[SampleObject]] = {}
    for obj in objects:
        by_category.setdefault(obj.category, []).append(obj)
    order = sorted(by_category)
    order = [order[i] for i in rng.permutation(len(order))]
    queues = {c: [by_category[c][i] for i in rng.permutation(len(by_category[c]))] for c in order}
    chosen: list[SampleObject] = []
    while len(chosen) < max_objects:
        for category in order:
            if queues[category] and len(chosen) < max_objects:
                chosen.append(queues[category].pop())
    return sorted(chosen, key=lambda o: o.product_id)


def fit_object(cutout: Image.Image, canvas: int) -> Image.Image:
    """The cutout trimmed to its visible pixels and scaled DOWN to fit OBJECT_FILL of the canvas.

    Never upscaled: these images become the HR targets of super-resolution, and an upscaled
    image is a blurred one. Pillow resizes RGBA in premultiplied form, so no dark fringes.
    """
    cutout = cutout.convert("RGBA")
    bbox = cutout.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError("cutout is fully transparent")
    cutout = cutout.crop(bbox)
    limit = OBJECT_FILL * canvas
    scale = min(1.0, limit / cutout.width, limit / cutout.height)
    if scale < 1.0:
        size = (max(1, round(cutout.width * scale)), max(1, round(cutout.height * scale)))
        cutout = cutout.resize(size, Image.Resampling.LANCZOS)
    return cutout


def compose_studio(obj: Image.Image, canvas: int) -> Image.Image:
    """The fitted object centred on plain white (RGB)."""
    base = Image.new("RGBA", (canvas, canvas), (255, 255, 255, 255))
    base.alpha_composite(obj, dest=((canvas - obj.width) // 2, (canvas - obj.height) // 2))
    return base.convert("RGB")


def compose_lifestyle(obj: Image.Image, background: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The fitted object on a background (RGB, canvas-sized), moved a little off-centre."""
    canvas = background.width
    base = background.convert("RGBA")
    free_x, free_y = canvas - obj.width, canvas - obj.height
    jx, jy = int(free_x * LIFESTYLE_JITTER), int(free_y * LIFESTYLE_JITTER)
    x = free_x // 2 + int(rng.integers(-jx, jx + 1))
    y = free_y // 2 + int(rng.integers(-jy, jy + 1))
    base.alpha_composite(obj, dest=(x, y))
    return base.convert("RGB")


def compose_cutout(obj: Image.Image, canvas: int) -> Image.Image:
    """The fitted object centred on a transparent canvas (RGBA)."""
    base = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    base.alpha_composite(obj, dest=((canvas - obj.width) // 2, (canvas - obj.height) // 2))
    return base


def background_crop(
    rng: np.random.Generator, canvas: int, photos: Sequence[str] = BACKGROUND_PHOTOS
) -> tuple[str, Image.Image]:
    """A seeded square crop of one of the background photos, resized to the canvas.

    The crop side is drawn between the canvas and the photo's short side, so the crop is only
    ever scaled down; a photo smaller than the canvas (none at the default 256) is scaled up,
    which only softens the background, never the object.
    """
    name = photos[int(rng.integers(len(photos)))]
    photo = skimage_photo(name)
    h, w = photo.shape[:2]
    short = min(h, w)
    side = int(rng.integers(canvas, short + 1)) if short >= canvas else short
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(photo[y:y + side, x:x + side]), "RGB")
    if side != canvas:
        crop = crop.resize((canvas, canvas), Image.Resampling.LANCZOS)
    return name, crop


def _object_rng(seed: int, product_id: str) -> np.random.Generator:
    # Per object, so an object's images do not change when the selection around it changes.
    return np.random.default_rng([seed, zlib.crc32(product_id.encode())])


# -- writing ---------------------------------------------------------------------------------


def write_sample_catalog(
    objects: Sequence[SampleObject],
    out_dir: Path,
    seed: int = 0,
    max_objects: int | None = 300,
    canvas: int = 256,
    source: str = "tuxpaint",
    sku_prefix: str = "TUX",
    fallback_reason: str | None = None,
) -> SampleCatalog:
    """Draw, composite and write the images and `feed.csv`; identical files are left untouched."""
    if canvas < 8:
        raise ValueError(f"canvas must be at least 8 pixels, not {canvas}")
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    chosen = select_objects(objects, max_objects, seed)
    cutout_rng = np.random.default_rng([seed, 1])
    n_cutouts = min(len(chosen), max(1, round(CUTOUT_FRACTION * len(chosen)))) if chosen else 0
    with_cutout = {chosen[i].product_id for i in cutout_rng.permutation(len(chosen))[:n_cutouts]}

    rows: list[dict[str, str]] = []
    written = 0
    drawn: list[SampleObject] = []
    skipped: list[str] = []
    for obj in chosen:
        rng = _object_rng(seed, obj.product_id)
        try:
            fitted = fit_object(obj.load(), canvas)
        except (OSError, ValueError) as exc:  # one unreadable object must not stop the catalog
            skipped.append(f"{obj.product_id}: {exc}")
            continue
        drawn.append(obj)
        _, background = background_crop(rng, canvas)
        images = {
            "studio": _encode(compose_studio(fitted, canvas), "JPEG"),
            "lifestyle": _encode(compose_lifestyle(fitted, background, rng), "JPEG"),
        }
        if obj.product_id in with_cutout:
            images["cutout"] = _encode(compose_cutout(fitted, canvas), "PNG")
        for style, data in images.items():
            name = f"{obj.product_id}_{style}.{'png' if style == 'cutout' else 'jpg'}"
            written += write_if_changed(images_dir / name, data)
            rows.append(_feed_row(sku_prefix, obj, style, name))
    return _finish(out_dir, drawn, rows, written, source=source, fallback_reason=fallback_reason, skipped=skipped)


def _feed_row(sku_prefix: str, obj: SampleObject, style: str, image_name: str) -> dict[str, str]:
    return {
        "sku": f"{sku_prefix}-{obj.product_id}-{style.upper()}",
        "image_uri": f"images/{image_name}",  # relative to the feed's folder
        "category": obj.category,
        "style": style,
        "product_id": obj.product_id,
        "subcategory": obj.subcategory,
        "source_name": obj.source_name,
        "license": obj.license,
    }


def _finish(
    out_dir: Path, chosen: Sequence[SampleObject], rows: list[dict[str, str]], written: int,
    source: str, fallback_reason: str | None = None, skipped: Sequence[str] = (),
) -> SampleCatalog:
    """Write the feed (after the images it lists), prune stale images, and summarise."""
    feed_path = out_dir / "feed.csv"
    written += write_if_changed(feed_path, _feed_csv(rows))
    removed = _remove_stale_images(out_dir / "images", {row["image_uri"].split("/", 1)[1] for row in rows})
    return SampleCatalog(
        feed_path=feed_path,
        n_objects=len(chosen),
        n_images=len(rows),
        categories=dict(sorted(Counter(o.category for o in chosen).items())),
        styles=dict(Counter(row["style"] for row in rows)),
        source=source,
        fallback_reason=fallback_reason,
        files_written=written,
        files_removed=removed,
        skipped=tuple(skipped),
    )


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        # 4:4:4 chroma: these are HR training targets, keep the colour detail.
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _feed_csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FEED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically (temp file in the same folder, then os.replace) unless the file already
    holds exactly these bytes. Returns True if it wrote. A local-folder helper: the out_dir is a
    plain folder a user opens, not the lake (the lake has `Lake.write_bytes`)."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


_OUR_IMAGE = re.compile(r"^[a-z0-9-]+_(studio|lifestyle|cutout)\.(jpg|png)$")


def _remove_stale_images(images_dir: Path, keep: set[str]) -> int:
    """Remove images an earlier build wrote that this feed no longer lists (e.g. another seed)."""
    removed = 0
    for path in images_dir.iterdir():
        if path.is_file() and _OUR_IMAGE.match(path.name) and path.name not in keep:
            path.unlink()
            removed += 1
    return removed

