"""The sample catalog: feed shape and pairing, determinism, alpha handling, the Tux Paint stamp
filter on a fake stamp tree, and the fetch logic with fake apt-get/dpkg-deb (no download)."""

from __future__ import annotations

import csv
import gzip
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalog_enhance.data_contracts.contracts import FEED, FEED_KNOWN_COLUMNS, LABEL_PREFIX
from catalog_enhance.demo_data import sample_catalog as sc
from catalog_enhance.demo_data.sample_catalog import (
    FEED_COLUMNS,
    SampleObject,
    SampleSourceError,
    build_catalog_from_stamps,
    build_fashion_mnist_catalog,
    build_sample_catalog,
    compose_lifestyle,
    compose_studio,
    fetch_tux_stamps,
    fit_object,
    scan_tux_stamps,
    select_objects,
    write_sample_catalog,
)

CANVAS = 64


def read_feed(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def skimage_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    result = build_sample_catalog(out, out / "cache", seed=0, max_objects=10, canvas=CANVAS, source="skimage")
    return out, result


# -- feed shape, pairing, URIs ---------------------------------------------------------------


def test_feed_columns_pairing_and_labels(skimage_build):
    out, result = skimage_build
    rows = read_feed(result.feed_path)
    assert list(rows[0]) == list(FEED_COLUMNS)
    assert result.source == "skimage" and result.fallback_reason is None
    assert result.n_objects == 10 and result.n_images == len(rows)
    assert len({r["sku"] for r in rows}) == len(rows)

    by_product: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_product[row["product_id"]].append(row)
        assert row["sku"] == f"SKI-{row['product_id']}-{row['style'].upper()}"
        assert all(row[c] for c in FEED_COLUMNS), row
    assert len(by_product) == 10
    for product_id, images in by_product.items():
        styles = sorted(r["style"] for r in images)
        assert styles in (["lifestyle", "studio"], ["cutout", "lifestyle", "studio"]), product_id
        assert len({(r["category"], r["subcategory"], r["source_name"]) for r in images}) == 1
    assert result.styles["cutout"] == 1  # ~10% of 10 objects
    assert sum(result.categories.values()) == 10

    # The feed passes the input contract the way ingestion reads it (extra columns are labels).
    table_rows = [
        {(k if k in FEED_KNOWN_COLUMNS else LABEL_PREFIX + k): v for k, v in row.items()} for row in rows
    ]
    FEED.table(table_rows)


def test_image_uris_are_relative_and_resolve(skimage_build):
    out, result = skimage_build
    for row in read_feed(result.feed_path):
        uri = row["image_uri"]
        assert not Path(uri).is_absolute() and ".." not in uri and uri.startswith("images/")
        with Image.open(result.feed_path.parent / uri) as im:
            assert im.size == (CANVAS, CANVAS)
            assert (im.format, im.mode) == (("PNG", "RGBA") if row["style"] == "cutout" else ("JPEG", "RGB"))


def test_cutout_is_transparent_and_studio_is_white_there(skimage_build):
    out, result = skimage_build
    cutouts = [r for r in read_feed(result.feed_path) if r["style"] == "cutout"]
    assert cutouts
    for row in cutouts:
        alpha = np.asarray(Image.open(out / row["image_uri"]).getchannel("A"))
        assert (alpha == 0).mean() > 0.05 and (alpha == 255).mean() > 0.05
        studio = np.asarray(Image.open(out / f"images/{row['product_id']}_studio.jpg")).astype(int)
        lifestyle = np.asarray(Image.open(out / f"images/{row['product_id']}_lifestyle.jpg")).astype(int)
        # Away from the object's edge (JPEG ringing), the studio background is white.
        far = alpha == 0
        for _ in range(2):
            far[1:-1, 1:-1] &= far[:-2, 1:-1] & far[2:, 1:-1] & far[1:-1, :-2] & far[1:-1, 2:]
        assert far.sum() > 50
        assert studio[far].min() >= 240
        # Where the object is opaque the studio shot shows it: not just white.
        assert studio[alpha == 255].mean() < 240
        # The lifestyle shot has a photo behind the object, not white.
        assert lifestyle[far].mean() < 235


def test_compose_studio_is_exactly_white_under_transparency():
    obj = Image.new("RGBA", (20, 10), (200, 0, 0, 255))
    obj.paste((0, 0, 255, 0), (0, 0, 10, 10))  # left half transparent, with blue "garbage" RGB
    obj.putpixel((15, 5), (0, 0, 0, 128))  # one half-transparent black pixel
    fitted = fit_object(obj, 32)
    assert fitted.size == (10, 10)  # trimmed to the visible half, not upscaled
    image = np.asarray(compose_studio(fitted, 32)).astype(int)  # pasted at (11, 11)
    outside = np.ones((32, 32), bool)
    outside[11:21, 11:21] = False
    assert (image[outside] == 255).all()  # the margin is pure white
    assert tuple(image[12, 12]) == (200, 0, 0)  # an opaque object pixel
    assert abs(image[16, 16] - 127).max() <= 1  # 50% black over white: proper alpha blending


def test_compose_lifestyle_shows_the_background_under_transparency():
    obj = Image.new("RGBA", (10, 10), (200, 0, 0, 255))
    obj.paste((0, 0, 255, 0), (0, 0, 10, 5))  # top half transparent, blue "garbage" RGB
    background = Image.new("RGB", (32, 32), (0, 90, 0))
    image = np.asarray(compose_lifestyle(obj, background, np.random.default_rng(0))).astype(int)
    red = (image == (200, 0, 0)).all(axis=2)
    assert red.sum() == 50  # only the opaque half of the object shows, wherever it landed
    assert ((image == (0, 90, 0)).all(axis=2) | red).all()  # everything else is the background


def test_fit_object_scales_down_only():
    small = Image.new("RGBA", (40, 20), (10, 20, 30, 255))
    assert fit_object(small, 256).size == (40, 20)
    big = Image.new("RGBA", (600, 300), (10, 20, 30, 255))
    fitted = fit_object(big, 256)
    assert max(fitted.size) <= round(0.85 * 256) and fitted.size[0] == 2 * fitted.size[1]
    with pytest.raises(ValueError, match="transparent"):
        fit_object(Image.new("RGBA", (5, 5)), 256)


# -- determinism and cheap re-runs -----------------------------------------------------------


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, skimage_build):
    out0, _ = skimage_build
    same = tmp_path / "same"
    build_sample_catalog(same, tmp_path / "cache", seed=0, max_objects=10, canvas=CANVAS, source="skimage")
    assert all_files(same) == all_files(out0)

    other = tmp_path / "other"
    build_sample_catalog(other, tmp_path / "cache", seed=1, max_objects=10, canvas=CANVAS, source="skimage")
    assert (other / "feed.csv").read_bytes() != (out0 / "feed.csv").read_bytes()
    # Even a product drawn by both seeds gets another background/offset under another seed.
    shared = set(all_files(other)) & set(all_files(out0))
    lifestyle = [name for name in shared if name.endswith("_lifestyle.jpg")]
    assert lifestyle and any((other / n).read_bytes() != (out0 / n).read_bytes() for n in lifestyle)


def test_second_run_writes_nothing_and_new_seed_prunes_stale_images(tmp_path):
    out = tmp_path / "out"
    kwargs = dict(max_objects=6, canvas=CANVAS, source="skimage")
    first = build_sample_catalog(out, tmp_path / "cache", seed=3, **kwargs)
    assert first.files_written == first.n_images + 1
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = build_sample_catalog(out, tmp_path / "cache", seed=3, **kwargs)
    assert second.files_written == 0 and second.files_removed == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temporaries left behind

    third = build_sample_catalog(out, tmp_path / "cache", seed=4, **kwargs)
    listed = {row["image_uri"] for row in read_feed(third.feed_path)}
    on_disk = {f"images/{p.name}" for p in (out / "images").iterdir()}
    assert on_disk == listed and third.files_removed > 0


def test_stratified_selection_keeps_small_categories():
    def obj(pid: str, category: str) -> SampleObject:
        return SampleObject(pid, category, "x", f"{pid}.png", "test", load=lambda: None)

    objects = [obj(f"a{i:02d}", "a") for i in range(20)]
    objects += [obj("b0", "b"), obj("b1", "b"), obj("c0", "c"), obj("c1", "c"), obj("c2", "c")]
    chosen = select_objects(objects, 9, seed=0)
    counts = {c: sum(o.category == c for o in chosen) for c in "abc"}
    assert counts == {"a": 4, "b": 2, "c": 3}
    assert chosen == select_objects(list(reversed(objects)), 9, seed=0)  # order-independent
    assert {o.product_id for o in select_objects(objects, 9, seed=1)} != {o.product_id for o in chosen}
    assert select_objects(objects, None, seed=0) == sorted(objects, key=lambda o: o.product_id)


# -- Tux Paint stamps on a fake tree ---------------------------------------------------------


def photo_stamp(path: Path, size=(100, 80), seed=0, transparent_border=True, mode="RGBA") -> Path:
    """A photo-like RGBA stamp: noisy colours (thousands of them) inside an elliptical cutout."""
    rng = np.random.default_rng(seed)
    w, h = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 <= 0.8
    alpha = np.where(inside | (not transparent_border), 255, 0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert(mode).save(path)
    return path


def make_stamp_tree(root: Path) -> Path:
    photo_stamp(root / "food/fruit/apple.png", seed=1)
    photo_stamp(root / "food/fruit/Big Pear.png", seed=2)
    photo_stamp(root / "food/pizza.png", seed=3)  # straight in the category folder
    photo_stamp(root / "animals/mammals/cats/lion.png", size=(300, 200), seed=4)  # deeper folder
    photo_stamp(root / "household/dishes/apple.png", seed=5)  # same file name, other folder
    # Rejected:
    photo_stamp(root / "symbols/chess/pawn.png", size=(40, 40), seed=6)  # icon-sized
    photo_stamp(root / "food/fruit/tile.png", seed=7, transparent_border=False)  # nothing cut away
    photo_stamp(root / "food/fruit/grey.png", seed=8, mode="LA")  # greyscale line art
    photo_stamp(root / "town/cartoon/house.png", seed=9)  # Tux Paint's drawings
    photo_stamp(root / "seasonal/star.png", seed=10)
    (root / "seasonal/star.dat").write_text("colorable\n")  # a mask for the user's colour
    flat = np.zeros((80, 100, 4), np.uint8)
    flat[20:60, 20:80] = (255, 0, 0, 255)
    Image.fromarray(flat, "RGBA").save(root / "food/fruit/flat.png")  # one flat colour
    (root / "food/fruit/apple.svg").write_text("<svg/>")
    photo_stamp(root / "loose.png", seed=11)  # no category folder
    return root


def test_stamp_filter_and_labels(tmp_path):
    root = make_stamp_tree(tmp_path / "stamps")
    objects = {o.product_id: o for o in scan_tux_stamps(root)}
    assert set(objects) == {
        "food-fruit-apple", "food-fruit-big-pear", "food-pizza", "animals-mammals-cats-lion", "household-dishes-apple",
    }
    assert (objects["food-fruit-apple"].category, objects["food-fruit-apple"].subcategory) == ("food", "fruit")
    assert objects["food-pizza"].subcategory == "general"
    assert (objects["animals-mammals-cats-lion"].category, objects["animals-mammals-cats-lion"].subcategory) == (
        "animals", "mammals",
    )
    assert objects["household-dishes-apple"].source_name == "apple.png"
    assert {o.license for o in objects.values()} == {"GPL-2"}
    assert objects["food-fruit-big-pear"].load().mode == "RGBA"


def test_catalog_from_stamp_tree(tmp_path):
    root = make_stamp_tree(tmp_path / "stamps")
    result = build_catalog_from_stamps(root, tmp_path / "out", seed=0, max_objects=None, canvas=CANVAS)
    rows = read_feed(result.feed_path)
    assert result.source == "tuxpaint" and result.n_objects == 5
    assert result.categories == {"animals": 1, "food": 3, "household": 1}
    assert {r["license"] for r in rows} == {"GPL-2"}
    lion = {r["style"]: r for r in rows if r["product_id"] == "animals-mammals-cats-lion"}
    assert lion["studio"]["sku"] == "TUX-animals-mammals-cats-lion-STUDIO"
    assert lion["lifestyle"]["subcategory"] == "mammals" and lion["lifestyle"]["source_name"] == "lion.png"

    with pytest.raises(SampleSourceError, match="no usable"):
        build_catalog_from_stamps(tmp_path / "empty", tmp_path / "out2")


# -- fetching: fake apt-get / dpkg-deb on PATH -----------------------------------------------

FAKE_APT = """#!/bin/sh
# Fake apt-get: without package lists `download` fails the way apt-get does.
echo "$*" >> "{state}/apt-calls"
case "$1" in
  update) touch "{state}/lists" ;;
  download)
    if [ ! -f "{state}/lists" ]; then echo "E: Unable to locate package $2" >&2; exit 100; fi
    echo deb > "$2_1.0_all.deb" ;;
esac
"""
FAKE_DPKG = """#!/bin/sh
# Fake dpkg-deb -x DEB DIR: unpacks one photo-like stamp.
mkdir -p "$3/usr/share/tuxpaint/stamps/food/fruit"
cp "{state}/stamp.png" "$3/usr/share/tuxpaint/stamps/food/fruit/kiwi.png"
"""


@pytest.fixture()
def fake_tools(tmp_path, monkeypatch):
    state = tmp_path / "state"
    bin_dir = tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    photo_stamp(state / "stamp.png", seed=12)
    for name, script in (("apt-get", FAKE_APT), ("dpkg-deb", FAKE_DPKG)):
        tool = bin_dir / name
        tool.write_text(script.format(state=state))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return state


def test_fetch_updates_lists_once_as_root_and_reuses_the_extraction(tmp_path, fake_tools, monkeypatch):
    monkeypatch.setattr(sc, "_is_root", lambda: True)
    cache = tmp_path / "cache"
    stamps = fetch_tux_stamps(cache)
    assert stamps == cache / "tuxpaint/usr/share/tuxpaint/stamps"
    assert (stamps / "food/fruit/kiwi.png").is_file()
    calls = (fake_tools / "apt-calls").read_text().splitlines()
    assert calls == ["download tuxpaint-stamps-default", "update", "download tuxpaint-stamps-default"]
    assert sorted(p.name for p in cache.iterdir()) == ["tuxpaint"]  # no .deb or temp folder left

    result = build_sample_catalog(tmp_path / "out", cache, canvas=CANVAS, source="auto")
    assert (result.source, result.n_objects, result.fallback_reason) == ("tuxpaint", 1, None)
    assert (fake_tools / "apt-calls").read_text().splitlines() == calls  # reused, not re-downloaded


def test_fetch_without_lists_and_not_root_says_what_to_do(tmp_path, fake_tools, monkeypatch):
    monkeypatch.setattr(sc, "_is_root", lambda: False)
    with pytest.raises(SampleSourceError, match="apt-get update"):
        fetch_tux_stamps(tmp_path / "cache")
    assert "update" not in (fake_tools / "apt-calls").read_text().split()
    assert not (tmp_path / "cache/tuxpaint").exists()
    assert not [p for p in (tmp_path / "cache").iterdir()]  # the temp folder is cleaned up


def test_without_apt_auto_falls_back_and_tuxpaint_fails_clearly(tmp_path, monkeypatch):
    empty = tmp_path / "nobin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SampleSourceError, match="apt-get"):
        build_sample_catalog(tmp_path / "out", tmp_path / "cache", source="tuxpaint")
    result = build_sample_catalog(tmp_path / "out", tmp_path / "cache", max_objects=3, canvas=CANVAS, source="auto")
    assert result.source == "skimage" and result.n_objects == 3
    assert "apt-get" in result.fallback_reason and "scikit-image" in result.fallback_reason
    with pytest.raises(ValueError, match="unknown sample source"):
        build_sample_catalog(tmp_path / "out", tmp_path / "cache", source="flickr")


def test_an_unreadable_object_is_skipped_with_its_reason(tmp_path):
    root = make_stamp_tree(tmp_path / "stamps")
    objects = scan_tux_stamps(root)
    (root / "food/fruit/apple.png").write_bytes(b"not a png any more")
    result = write_sample_catalog(objects, tmp_path / "out", max_objects=None, canvas=CANVAS)
    assert result.n_objects == 4 and len(result.skipped) == 1
    assert result.skipped[0].startswith("food-fruit-apple: ")
    assert "food-fruit-apple" not in {r["product_id"] for r in read_feed(result.feed_path)}


# -- Fashion-MNIST on fake idx files ---------------------------------------------------------


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    n = len(images)
    header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes())


def test_fashion_mnist_catalog_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "fashion-mnist"
    data.mkdir()
    train = rng.integers(0, 256, (30, 28, 28))
    write_idx(data, "train", train, np.arange(30) % 10)
    write_idx(data, "t10k", rng.integers(0, 256, (10, 28, 28)), np.arange(10))
    result = build_fashion_mnist_catalog(data, tmp_path / "out", seed=0, max_objects=20)
    rows = read_feed(result.feed_path)
    assert result.source == "fashion-mnist" and result.n_images == 20 == len(rows)
    assert result.categories == {c: 2 for c in result.categories} and len(result.categories) == 10
    assert {r["style"] for r in rows} == {"studio"} and {r["license"] for r in rows} == {"MIT"}
    for row in rows:
        split, index = row["product_id"].split("-")[1:]
        with Image.open(tmp_path / "out" / row["image_uri"]) as im:
            assert (im.mode, im.size) == ("L", (28, 28))
            if split == "train":
                assert (np.asarray(im) == train[int(index)]).all()
                expected = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                            "sneaker", "bag", "ankle_boot"][int(index) % 10]
                assert row["category"] == expected

    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 20))
    with pytest.raises(SampleSourceError, match="t10k-labels-idx1-ubyte.gz is not an idx file"):
        build_fashion_mnist_catalog(data, tmp_path / "out2")
