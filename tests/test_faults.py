"""The fault suite for the hostile cases that already hold, so they keep holding (issue 11,
Acceptance): every image kind, path and URI trick, feed oddity, kill -9 at every stage, bit-identical
resume, malicious pickles and transparent cutouts, each driven through the public entry points
(ingestion, pairs, training, enhancement, the feature extractor).

Cases already proved elsewhere are not repeated here (truncated/empty/non-image files, PNG header
bombs, ftp:/javascript:/`../..` URIs, a file symlink out of the feed folder and conflicting and
identical duplicate SKUs through ingestion: tests/test_ingest.py; every decoder mode unit by unit:
tests/test_imaging.py; `load_checkpoint` refusing a crafted file: tests/test_train_infra.py).

Manifests are read only through `manifests.read` and objects are found only through the keys
manifest rows name, so these tests hold whatever the manifest storage layout is. Every enhancement
names its model, so they hold whether or not enhancement needs a gate champion.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from image_fixtures import encode, noise
from PIL import Image

from catalog_enhance.data_contracts.layout import checkpoint_key, feature_extractor_key
from catalog_enhance.tasks.enhance import EnhanceParams, enhance_catalog, enhance_folder, load_for_params
from catalog_enhance.tasks.imaging.codec import load_image
from catalog_enhance.tasks.ingest.run import ingest_feed
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.checkpoints import CheckpointError
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.runtime import select_runtime

CPU = select_runtime("cpu")
WORKTREE = Path(__file__).resolve().parents[1]
HEADER = ("sku", "image_uri", "category", "style")


# -- helpers ----------------------------------------------------------------------------------------


def settings_for(lake: Lake, **overrides):
    return load_settings(lake_url=lake.url, io_concurrency=2, batch_size=4, **overrides)


def write_csv(path: Path, rows: list[tuple], header: tuple[str, ...] = HEADER) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below `folder` (symlinks not followed) with its (mtime_ns, size)."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            found[str(path.relative_to(folder))] = (stat.st_mtime_ns, stat.st_size)
    return found


def current(lake: Lake) -> dict[str, dict]:
    return manifests.latest_by_sku(manifests.read(lake, "catalog"))


def reasons_by_sku(lake: Lake, stage: str = "ingest") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in manifests.read(lake, "quarantine").to_pylist():
        if record["stage"] == stage:
            found.setdefault(record["sku"], []).append(record["reason"])
    return found


def assert_named_keys_decode(lake: Lake, name: str, columns: tuple[str, ...]) -> None:
    """Every key the manifest names exists and decodes as an image (or, for .pt, as a checkpoint)."""
    for row in manifests.read(lake, name).to_pylist():
        for column in columns:
            key = row[column]
            assert key and lake.exists(key), (name, column, key)
            data = lake.read_bytes(key)
            if key.endswith(".pt"):
                torch.load(io.BytesIO(data), weights_only=True)
            elif key.endswith(".png"):
                assert load_image(data).size > 0, key
            else:  # an original, as fetched
                with Image.open(io.BytesIO(data)) as image:
                    image.load()


def unnamed_objects(lake: Lake, prefix: str, name: str, columns: tuple[str, ...]) -> set[str]:
    """Objects under `prefix` that no row of the manifest names (what a killed run left behind)."""
    named = {row[c] for row in manifests.read(lake, name).to_pylist() for c in columns}
    return set(lake.list(prefix)) - named


def assert_no_duplicate_rows(table: pa.Table, key: tuple[str, ...]) -> None:
    keys = list(zip(*(table[c].to_pylist() for c in key)))
    assert len(keys) == len(set(keys)), f"duplicate {key} rows"


# Columns that differ between two equivalent runs by construction: when and by which run.
VOLATILE = {"run_id", "ingested_at", "created_at", "quarantined_at", "seconds", "registered_at",
            "evaluated_at", "trained_at"}


def comparable(table: pa.Table, sort_by: tuple[str, ...]) -> list[dict]:
    keep = [c for c in table.column_names if c not in VOLATILE]
    rows = table.select(keep).to_pylist()
    return sorted(rows, key=lambda r: tuple(str(r[c]) for c in sort_by))


# -- images through ingestion -----------------------------------------------------------------------


def _palette(transparent: bool = True) -> Image.Image:
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    return image


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (10, 8), colour) for colour in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:5] = (255, 0, 0)  # a red band along the top of the stored image
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return encode(pixels, "JPEG", exif=exif.tobytes(), quality=95)


def _gif_bomb() -> bytes:
    """A tiny GIF whose logical screen claims 65535 x 65535 pixels."""
    data = bytearray(encode(Image.new("P", (4, 4), 0), "GIF"))
    data[6:10] = b"\xff\xff\xff\xff"
    return bytes(data)


def _zlib_bomb() -> bytes:
    """A genuinely 3000 x 3000 PNG (9 MP of zeros, a few kB on disk)."""
    return encode(np.zeros((3000, 3000), np.uint8), "PNG", optimize=False)


def _truncated(fmt: str, **options) -> bytes:
    data = encode(noise(48, 48), fmt, **options)
    return data[: len(data) // 2]


RGBA_PIXELS = np.dstack([noise(seed=5), np.full((24, 32), 255, np.uint8)])
RGBA_PIXELS[:4, :4, 3] = 0
RGBA_PIXELS[4:8, 4:8, 3] = 100
RGB_PIXELS = noise(seed=6)

# name -> (bytes, expected (mode, width, height)) for images that must be ingested.
GOOD_IMAGES = {
    "cmyk.jpg": (encode(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), "JPEG"), ("RGB", 16, 12)),
    "cmyk.tif": (encode(Image.new("CMYK", (16, 12), (0, 255, 255, 0)), "TIFF"), ("RGB", 16, 12)),
    "grey16.png": (encode(Image.fromarray(np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))), "PNG"),
                   ("RGB", 32, 8)),
    "palette.png": (encode(_palette(), "PNG", transparency=0), ("RGBA", 6, 4)),
    "palette.gif": (encode(_palette(), "GIF", transparency=0), ("RGBA", 6, 4)),
    "la.png": (encode(Image.fromarray(np.dstack([noise(channels=1), np.full((24, 32), 128, np.uint8)]), "LA"),
                      "PNG"), ("RGBA", 32, 24)),
    "rgba.png": (encode(RGBA_PIXELS, "PNG"), ("RGBA", 32, 24)),
    "exif6.jpg": (_exif_rotated(), ("RGB", 20, 40)),
    "one.png": (encode(np.array([[[10, 200, 30]]], np.uint8), "PNG"), ("RGB", 1, 1)),
    "animated.gif": (_animated_gif(), ("RGB", 10, 8)),
    "lossless.webp": (encode(RGBA_PIXELS, "WEBP", lossless=True), ("RGBA", 32, 24)),
    "rgb.tif": (encode(RGB_PIXELS, "TIFF", compression="tiff_deflate"), ("RGB", 32, 24)),
}

# name -> (bytes, quarantine reason) for images that must be refused.
BAD_IMAGES = {
    "cut.webp": (_truncated("WEBP"), "truncated"),
    "cut.gif": (_truncated("GIF"), {"truncated", "corrupt"}),
    "cut.tif": (_truncated("TIFF"), {"truncated", "corrupt"}),
    "empty.webp": (b"", "empty"),
    "page.png": (b"<!doctype html><html><body>404</body></html>", "not_an_image"),
    "bomb.gif": (_gif_bomb(), "decompression_bomb"),
    "zlib-bomb.png": (_zlib_bomb(), "decompression_bomb"),
}


def test_every_image_kind_is_normalised_or_quarantined_and_the_feed_goes_on(tmp_path):
    shop = tmp_path / "shop"
    shop.mkdir()
    rows = []
    for name, (data, _) in {**GOOD_IMAGES, **BAD_IMAGES}.items():
        (shop / name).write_bytes(data)
        rows.append((name.replace(".", "-"), name, "things", "studio"))
    feed = write_csv(shop / "feed.csv", rows)
    lake = Lake.from_url(str(tmp_path / "lake"))

    summary = ingest_feed(lake, settings_for(lake, max_image_pixels=1_000_000), feed)

    assert summary.rows == len(rows)
    assert summary.ingested_new == len(GOOD_IMAGES) and summary.quarantined == len(BAD_IMAGES)
    reasons = reasons_by_sku(lake)
    for name, (_, reason) in BAD_IMAGES.items():
        (got,) = reasons[name.replace(".", "-")]
        assert got in ({reason} if isinstance(reason, str) else reason), name
    details = {r["sku"]: r["detail"] for r in manifests.read(lake, "quarantine").to_pylist()}
    assert all(details[name.replace(".", "-")] for name in BAD_IMAGES)

    catalog = current(lake)
    assert set(catalog) == {name.replace(".", "-") for name in GOOD_IMAGES}
    pixels = {}
    for name, (_, (mode, width, height)) in GOOD_IMAGES.items():
        record = catalog[name.replace(".", "-")]
        image = load_image(lake.read_bytes(record["image_key"]))
        assert (record["mode"], record["width"], record["height"]) == (mode, width, height), name
        assert image.shape == (height, width, 4 if mode == "RGBA" else 3), name
        assert record["has_alpha"] == (mode == "RGBA"), name
        assert lake.read_bytes(record["original_key"]) == (shop / name).read_bytes(), name
        pixels[name] = image

    assert pixels["cmyk.jpg"].reshape(-1, 3).mean(axis=0)[0] > 230  # CMYK red came out red
    assert pixels["cmyk.tif"].reshape(-1, 3).mean(axis=0)[1] < 30
    assert pixels["grey16.png"][0, 0, 0] == 0 and pixels["grey16.png"][0, -1, 0] == 255
    assert 100 < pixels["grey16.png"][0, 16, 0] < 160  # scaled to 8 bits, not clipped
    assert pixels["palette.png"][0, 0, 3] == 0 and tuple(pixels["palette.png"][0, 1]) == (200, 10, 10, 255)
    assert pixels["palette.gif"][0, 0, 3] == 0 and tuple(pixels["palette.gif"][0, 1]) == (200, 10, 10, 255)
    assert (pixels["la.png"][..., 3] == 128).all()
    assert (pixels["la.png"][..., 0] == pixels["la.png"][..., 1]).all()
    np.testing.assert_array_equal(pixels["rgba.png"], RGBA_PIXELS)
    np.testing.assert_array_equal(pixels["lossless.webp"][..., 3], RGBA_PIXELS[..., 3])
    np.testing.assert_array_equal(pixels["rgb.tif"], RGB_PIXELS)
    assert catalog["exif6-jpg"]["exif_orientation"] == 6
    assert pixels["exif6.jpg"][:, -3:, 0].mean() > 200 and pixels["exif6.jpg"][:, :10, 0].mean() < 60
    assert tuple(pixels["one.png"][0, 0]) == (10, 200, 30)
    first = pixels["animated.gif"].reshape(-1, 3).mean(axis=0)
    assert first[0] > 200 and first[1] < 50 and first[2] < 50  # the first frame, not a later one
    assert catalog["animated-gif"]["source_format"] == "GIF" and catalog["rgb-tif"]["source_format"] == "TIFF"

    # A rerun is a no-op: nothing new, nothing recorded twice.
    again = ingest_feed(lake, settings_for(lake, max_image_pixels=1_000_000), feed)
    assert again.unchanged == len(GOOD_IMAGES) and again.manifests_written == []


# -- paths and URIs ---------------------------------------------------------------------------------


def test_path_and_uri_tricks_are_quarantined_and_nothing_leaves_the_lake(tmp_path):
    # Nested two deep, so that `../../x` from the feed or the lake still lands inside tmp_path
    # where the test can see it.
    base = tmp_path / "a" / "b"
    shop, outside = base / "shop", tmp_path / "outside"
    shop.mkdir(parents=True)
    outside.mkdir()
    (shop / "good.png").write_bytes(encode(noise(seed=1), "PNG"))
    (outside / "x.jpg").write_bytes(encode(noise(seed=2), "JPEG"))
    (shop / "linked-dir").symlink_to(outside, target_is_directory=True)
    (shop / "zero.jpg").symlink_to("/dev/zero")
    rows = [
        ("G1", "good.png"),
        ("P01", "../../../outside/x.jpg"),
        ("P02", str(outside / "x.jpg")),
        ("P03", f"file://{outside}/x.jpg"),
        ("P04", "file://otherhost/x.jpg"),
        ("P05", "file://otherhost/" + str(shop / "good.png")),
        ("P06", "linked-dir/x.jpg"),
        ("P07", "zero.jpg"),
        ("P08", "/dev/zero"),
        ("P09", "file:///dev/zero"),
        ("P10", "ftp://example.com/x.jpg"),
        ("P11", "javascript:alert(document.cookie)"),
        ("P12", "data:image/png;base64," + __import__("base64").b64encode(encode(noise(), "PNG")).decode()),
        ("P13", "good.png/../../../outside/x.jpg"),
        ("P14", "%2e%2e/%2e%2e/%2e%2e/outside/x.jpg"),
        ("P15", "FILE://otherhost/x.jpg"),
    ]
    expected = {"P01": "unsafe_path", "P02": "unsafe_path", "P03": "unsafe_path", "P04": "unsafe_path",
                "P05": "unsafe_path", "P06": "unsafe_path", "P07": "unsafe_path", "P08": "unsafe_path",
                "P09": "unsafe_path", "P10": "unknown_scheme", "P11": "unknown_scheme", "P12": "unknown_scheme",
                "P13": "unsafe_path", "P15": "unsafe_path"}
    feed = write_csv(shop / "feed.csv", [(sku, uri, "things", "studio") for sku, uri in rows])
    # Traversal SKUs: SKUs never shape a key, so these are ordinary SKUs of a good image.
    with open(feed, "a", newline="") as handle:
        writer = csv.writer(handle)
        for sku in ("../../x", "../../../outside/y", "/etc/cron.d/z", "a/../../b"):
            writer.writerow([sku, "good.png", "things", "studio"])
    lake_dir = base / "lake"
    lake = Lake.from_url(str(lake_dir))
    before = files_under(tmp_path)

    summary = ingest_feed(lake, settings_for(lake), feed)

    reasons = reasons_by_sku(lake)
    assert {sku: got for sku, (got,) in reasons.items() if sku in expected} == expected
    # A percent-encoded path is a (missing) file name, never decoded into a traversal.
    assert reasons["P14"] in (["unsafe_path"], ["not_found"])
    details = {r["sku"]: r["detail"] for r in manifests.read(lake, "quarantine").to_pylist()}
    assert all(details[sku] for sku in expected)
    catalog = current(lake)
    assert set(catalog) == {"G1", "../../x", "../../../outside/y", "/etc/cron.d/z", "a/../../b"}
    assert len({r["image_key"] for r in catalog.values()}) == 1  # one content-addressed image
    assert summary.quarantined == len(rows) - 1

    after = files_under(tmp_path)
    changed = {path for path in after if before.get(path) != after[path]}
    assert changed and all(path.startswith("a/b/lake/") for path in changed), changed - {
        p for p in changed if p.startswith("a/b/lake/")}
    assert all(before[path] == after.get(path) for path in before)  # nothing outside was touched


def test_traversal_skus_never_name_an_output_outside_the_output_folder(enhance_template, tmp_path):
    """Ad-hoc enhancement of a feed names outputs by SKU: a traversal SKU stays inside --output."""
    shop = tmp_path / "a" / "b" / "shop"
    shop.mkdir(parents=True)
    (shop / "good.png").write_bytes(encode(noise(16, 20, seed=3), "PNG"))
    skus = ["../../x", "../../../escaped", "/tmp/abs", "ok"]
    feed = write_csv(shop / "feed.csv", [(sku, "good.png", "things", "studio") for sku in skus])
    lake = copy_lake(enhance_template, tmp_path / "lake")
    params = EnhanceParams()
    _, models = load_for_params(lake, params, model=enhance_template["version"], runtime=CPU)
    out = tmp_path / "a" / "b" / "out"
    before = files_under(tmp_path)

    result = enhance_folder(str(feed), out, models, params, runtime=CPU, settings=load_settings(lake_url=lake.url))

    assert result.enhanced == len(skus) and result.failed == 0
    new = {p for p in files_under(tmp_path) if p not in before}
    assert new and all(p.startswith("a/b/out/") for p in new), new
    pngs = sorted(p for p in new if p.endswith(".png"))
    assert len(pngs) == len(skus)  # one output per SKU, none overwritten
    assert all(load_image((tmp_path / p).read_bytes()).shape == (32, 40, 3) for p in pngs)


# -- feeds ------------------------------------------------------------------------------------------


def test_bom_and_ragged_rows(tmp_path):
    shop = tmp_path / "shop"
    shop.mkdir()
    for i in range(4):
        (shop / f"{i}.png").write_bytes(encode(noise(seed=10 + i), "PNG"))
    # A spreadsheet's UTF-8 BOM before the header, CRLF line ends, a row with one field too many,
    # one with a field too few and a blank line.
    text = ("\ufeffsku,image_uri,category,style,colour\r\n"
            "R1,0.png,things,studio,red\r\n"
            "R2,1.png,things,studio,red,EXTRA\r\n"
            "R3,2.png,things\r\n"
            "R4,3.png,things,studio\r\n"
            "\r\n")
    (shop / "feed.csv").write_bytes(text.encode("utf-8"))
    jsonl = shop / "feed.jsonl"
    jsonl.write_bytes("\ufeff".encode() + b'{"sku": "J1", "image_uri": "1.png", "category": "things", '
                      b'"style": "studio"}\n')
    lake = Lake.from_url(str(tmp_path / "lake"))

    summary = ingest_feed(lake, settings_for(lake), str(shop / "feed.csv"))
    assert summary.rows == 4
    catalog = current(lake)
    assert set(catalog) == {"R1", "R4"}
    assert catalog["R1"]["label_colour"] == "red" and catalog["R4"]["label_colour"] is None
    reasons = reasons_by_sku(lake)
    assert reasons["R3"] == ["missing_label"]  # no style: refused, not guessed
    (ragged,) = [r for r in manifests.read(lake, "quarantine").to_pylist() if r["feed_row"] == 2]
    # Too many fields: refused with the row named, never shifted into the wrong columns.
    assert ragged["reason"] == "malformed_row" and "6 fields for 5 columns" in ragged["detail"]
    assert summary.ingested_new + summary.quarantined == summary.rows

    assert ingest_feed(lake, settings_for(lake), str(jsonl)).ingested_new == 1
    assert "J1" in current(lake)  # the BOM did not become part of the first key's name


# -- a small real lake: ingested photos, x2 pairs, one tiny ESPCN version -----------------------------

PAIRS_CONFIG_KW = {"scales": (2,), "hr_size": 24, "crops_per_image": 1}


def pairs_config(scales: tuple[int, ...] = (2,)):
    from catalog_enhance.tasks.catalog.pairs_config import PairsConfig

    return PairsConfig(**{**PAIRS_CONFIG_KW, "scales": scales})


def write_shop(folder: Path, count: int = 6) -> tuple[str, str]:
    """`count` real photo crops (PNG and JPEG) and a feed of them; returns (full feed, first-half feed)."""
    from sr_lake import photo_crops

    folder.mkdir(parents=True)
    rows = []
    for i, crop in enumerate(photo_crops(count, 36, seed=1)):
        name = f"p{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(crop).save(folder / name, quality=95)
        rows.append((f"sku-{i}", name, "photo", "studio" if i % 3 else "lifestyle"))
    rows.append(("bad-1", "missing.png", "photo", "studio"))
    half = write_csv(folder / "half.csv", rows[: count // 2])
    return write_csv(folder / "feed.csv", rows), half


def copy_lake(template: dict, target: Path) -> Lake:
    shutil.copytree(template["root"], target)
    return Lake.from_url(str(target))


@pytest.fixture(scope="module")
def enhance_template(tmp_path_factory):
    from catalog_enhance.tasks.lake.model_registry import register_version
    from catalog_enhance.tasks.pairs.run import build_pairs
    from catalog_enhance.tasks.train.config import make_config
    from catalog_enhance.tasks.train.loop import train_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults")
    feed, _ = write_shop(root / "shop")
    lake = Lake.from_url(str(root / "lake"))
    summary = ingest_feed(lake, settings_for(lake), feed)
    assert summary.ingested_new == 6 and summary.quarantined == 1
    pairs = build_pairs(lake, manifests.read(lake, "catalog"), pairs_config(), manifests.read(lake, "pairs"))
    assert pairs.rows and any(r["split"] == "train" for r in pairs.rows)
    row = register_version(lake, train_model(make_config("espcn", "tiny", steps=2), lake, runtime=CPU))
    return {"root": root / "lake", "feed": feed, "shop": root / "shop", "version": row["version"], "row": row}


# -- kill -9 during every stage, then a consistent rerun ------------------------------------------

# Run in a child process before the stage: after the `AFTER`-th object written whose key starts with
# `PREFIX`, say so (the READY file) and wait to be killed, so the SIGKILL lands while the stage is
# part way through, after it has started writing.
KILL_HOOK = """
import os, sys, threading, time
import torch
torch.set_num_threads(1)
from catalog_enhance.tasks.lake.storage import Lake

READY, PREFIX, AFTER = sys.argv[1], sys.argv[2], int(sys.argv[3])
_seen = [0]
_guard = threading.Lock()
_inside = threading.local()  # one object write counts once, whichever method wrote it


def _counting(real):
    def write(self, key, data):
        outermost = not getattr(_inside, "depth", 0)
        _inside.depth = getattr(_inside, "depth", 0) + 1
        try:
            result = real(self, key, data)
        finally:
            _inside.depth -= 1
        if outermost and result is not False and key.startswith(PREFIX):  # False: already there
            with _guard:
                _seen[0] += 1
                hit = _seen[0] == AFTER
            if hit:
                open(READY, "w").close()
                time.sleep(600)
        return result
    return write


Lake.write_bytes = _counting(Lake.write_bytes)
Lake.write_bytes_if_absent = _counting(Lake.write_bytes_if_absent)
"""


def kill_during(tmp_path: Path, stage_code: str, prefix: str, after: int = 1) -> None:
    """Run `stage_code` in a child process and SIGKILL it once it has written `after` objects under
    `prefix`. Fails (with the child's stderr) if the child ends by itself or never gets there."""
    import catalog_enhance

    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    log = tmp_path / f"child-{time.monotonic_ns()}.log"
    package_parent = str(Path(catalog_enhance.__file__).resolve().parents[1])
    paths = [package_parent, str(Path(__file__).parent), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    script = KILL_HOOK + textwrap.dedent(stage_code)
    with log.open("wb") as output:
        child = subprocess.Popen([sys.executable, "-c", script, str(ready), prefix, str(after)],
                                 stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                if child.poll() is not None:
                    pytest.fail(f"the stage ended (exit {child.returncode}) before the kill point:\n"
                                f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the stage never reached the kill point:\n{log.read_text()[-3000:]}")
                time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def test_kill_during_ingestion_then_rerun_equals_a_clean_run(tmp_path):
    feed, half = write_shop(tmp_path / "shop")
    killed, clean = (Lake.from_url(str(tmp_path / name)) for name in ("killed", "clean"))
    for lake in (killed, clean):
        ingest_feed(lake, settings_for(lake), half)  # an earlier night: its rows must survive
    before = manifests.read(killed, "catalog").num_rows

    kill_during(tmp_path, f"""
        from catalog_enhance.tasks.ingest.run import ingest_feed
        from catalog_enhance.tasks.lake.settings import load_settings
        lake = Lake.from_url({killed.url!r})
        ingest_feed(lake, load_settings(lake_url=lake.url, io_concurrency=1, batch_size=2), {feed!r})
    """, prefix="images/", after=2)
    assert manifests.read(killed, "catalog").num_rows == before  # killed before its manifest: nothing half-done
    assert unnamed_objects(killed, "images", "catalog", ("image_key", "original_key"))  # killed after writing

    rerun = ingest_feed(killed, settings_for(killed), feed)
    ingest_feed(clean, settings_for(clean), feed)
    assert rerun.ingested_new == 3 and rerun.quarantined == 1
    for lake in (killed, clean):
        catalog = manifests.read(lake, "catalog")
        assert_no_duplicate_rows(catalog, ("sku", "version"))
        assert_no_duplicate_rows(manifests.read(lake, "quarantine"), manifests.QUARANTINE_KEY)
        assert_named_keys_decode(lake, "catalog", ("image_key", "original_key"))
    assert comparable(manifests.read(killed, "catalog"), ("sku", "version")) == comparable(
        manifests.read(clean, "catalog"), ("sku", "version"))
    assert comparable(manifests.read(killed, "quarantine"), ("sku", "feed_row")) == comparable(
        manifests.read(clean, "quarantine"), ("sku", "feed_row"))
    again = ingest_feed(killed, settings_for(killed), feed)  # converged: a further rerun changes nothing
    assert again.manifests_written == [] and again.unchanged == 6


def test_kill_during_pairs_then_rerun_equals_a_clean_run(enhance_template, tmp_path):
    from catalog_enhance.tasks.pairs.run import build_pairs

    killed, clean = (copy_lake(enhance_template, tmp_path / name) for name in ("killed", "clean"))
    x2 = manifests.read(killed, "pairs").num_rows
    kill_during(tmp_path, f"""
        from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
        from catalog_enhance.tasks.lake import manifests
        from catalog_enhance.tasks.pairs.run import build_pairs
        lake = Lake.from_url({killed.url!r})
        config = PairsConfig(**{{**{PAIRS_CONFIG_KW!r}, "scales": (2, 3)}})
        build_pairs(lake, manifests.read(lake, "catalog"), config, manifests.read(lake, "pairs"), io_workers=1)
    """, prefix="pairs/", after=1)
    assert manifests.read(killed, "pairs").num_rows == x2
    assert unnamed_objects(killed, "pairs", "pairs", ("hr_key", "lr_key"))

    config = pairs_config((2, 3))
    rerun = build_pairs(killed, manifests.read(killed, "catalog"), config, manifests.read(killed, "pairs"))
    build_pairs(clean, manifests.read(clean, "catalog"), config, manifests.read(clean, "pairs"))
    assert rerun.rows and {r["scale"] for r in rerun.rows} == {3}
    for lake in (killed, clean):
        assert_no_duplicate_rows(manifests.read(lake, "pairs"), ("pair_id",))
        assert_named_keys_decode(lake, "pairs", ("hr_key", "lr_key"))
    assert comparable(manifests.read(killed, "pairs"), ("pair_id",)) == comparable(
        manifests.read(clean, "pairs"), ("pair_id",))
    again = build_pairs(killed, manifests.read(killed, "catalog"), config, manifests.read(killed, "pairs"))
    assert not again.manifest_written and again.rows == []


def test_kill_during_training_resumes_to_bit_identical_weights(enhance_template, tmp_path):
    """A real SIGKILL right after a checkpoint, then a resume: the same weights, bit for bit, as an
    uninterrupted run with the same seed (tests/test_train_infra.py proves the in-process stop)."""
    from catalog_enhance.tasks.lake.checkpoints import latest_checkpoint_key, load_checkpoint
    from catalog_enhance.tasks.lake.model_registry import register_version
    from catalog_enhance.tasks.train.config import make_config
    from catalog_enhance.tasks.train.loop import train_model

    lake = copy_lake(enhance_template, tmp_path / "lake")
    overrides = {"steps": 6, "checkpoint_every": 2, "seed": 3}
    kill_during(tmp_path, f"""
        from catalog_enhance.tasks.runtime import select_runtime
        from catalog_enhance.tasks.train.config import make_config
        from catalog_enhance.tasks.train.loop import train_model
        lake = Lake.from_url({lake.url!r})
        train_model(make_config("espcn", "tiny", **{overrides!r}), lake, run="killed", runtime=select_runtime("cpu"))
    """, prefix=checkpoint_key("espcn", "killed", 4), after=1)
    assert latest_checkpoint_key(lake, "espcn", "killed") == checkpoint_key("espcn", "killed", 4)

    config = make_config("espcn", "tiny", **overrides)
    resumed = train_model(config, lake, run="killed", runtime=CPU)
    straight = train_model(config, lake, run="straight", runtime=CPU)
    assert resumed.completed and resumed.resumed_from_step == 4 and resumed.steps_done == 6
    a = load_checkpoint(lake, resumed.checkpoint_key)["trainer"]
    b = load_checkpoint(lake, straight.checkpoint_key)["trainer"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert resumed.curve.rows() == straight.curve.rows()
    initial = load_checkpoint(lake, enhance_template["row"]["checkpoint_key"])["trainer"]["model"]
    assert not all(torch.equal(a["model"][k], initial[k]) for k in initial)  # training moved the weights

    row = register_version(lake, resumed)
    assert_no_duplicate_rows(manifests.read(lake, "models"), ("version",))
    assert_named_keys_decode(lake, "models", ("checkpoint_key",))
    assert row["version"] in {r["version"] for r in manifests.read(lake, "models").to_pylist()}


def test_kill_during_enhancement_then_rerun_equals_a_clean_run(enhance_template, tmp_path):
    killed, clean = (copy_lake(enhance_template, tmp_path / name) for name in ("killed", "clean"))
    version = enhance_template["version"]
    kill_during(tmp_path, f"""
        from catalog_enhance.tasks.enhance import EnhanceParams, enhance_catalog
        from catalog_enhance.tasks.runtime import select_runtime
        lake = Lake.from_url({killed.url!r})
        enhance_catalog(lake, EnhanceParams(), model={version!r}, runtime=select_runtime("cpu"), chunk_size=1)
    """, prefix="enhanced/", after=2)
    assert manifests.read(killed, "enhancements").num_rows == 0
    assert unnamed_objects(killed, "enhanced", "enhancements", ("output_key",))

    rerun = enhance_catalog(killed, EnhanceParams(), model=version, runtime=CPU, chunk_size=2)
    enhance_catalog(clean, EnhanceParams(), model=version, runtime=CPU, chunk_size=2)
    assert rerun.enhanced == 6 and rerun.quarantined == 0 and rerun.resumed >= 1
    for lake in (killed, clean):
        table = manifests.read(lake, "enhancements")
        assert_no_duplicate_rows(table, ("sku", "model_version", "params_hash"))
        assert_named_keys_decode(lake, "enhancements", ("output_key",))
        for row in table.to_pylist():
            assert hashlib.sha256(lake.read_bytes(row["output_key"])).hexdigest() == row["output_sha256"]
    assert comparable(manifests.read(killed, "enhancements"), ("sku",)) == comparable(
        manifests.read(clean, "enhancements"), ("sku",))
    for row in manifests.read(killed, "enhancements").to_pylist():
        assert killed.read_bytes(row["output_key"]) == clean.read_bytes(row["output_key"])
    assert enhance_catalog(killed, EnhanceParams(), model=version, runtime=CPU).enhanced == 0


# -- malicious pickles ------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this creates a file: the shape of a checkpoint crafted to run code on load."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payload(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"step": 2, "trainer": {"model": {"w": torch.zeros(2)}}, "evil": _RunsCode(marker)}, buffer)
    return buffer.getvalue()


def malicious_checkpoint(marker: Path) -> bytes:
    """A torch checkpoint whose pickle creates `marker` when unpickled."""
    probe = marker.with_name(marker.name + "-probe")
    torch.load(io.BytesIO(_payload(probe)), weights_only=False)
    assert probe.exists()  # the payload is live: an unpickling load would run it
    probe.unlink()
    return _payload(marker)


def test_a_malicious_resume_checkpoint_is_refused_naming_its_key(enhance_template, tmp_path):
    from catalog_enhance.tasks.train.config import make_config
    from catalog_enhance.tasks.train.loop import train_model

    lake = copy_lake(enhance_template, tmp_path / "lake")
    marker = tmp_path / "pwned-resume"
    key = checkpoint_key("espcn", "evil", 2)
    lake.write_bytes(key, malicious_checkpoint(marker))

    with pytest.raises(CheckpointError) as info:
        train_model(make_config("espcn", "tiny", steps=4, checkpoint_every=2), lake, run="evil", runtime=CPU)
    assert key in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()
    assert not lake.exists(checkpoint_key("espcn", "evil"))  # nothing trained on top of it


def test_a_malicious_champion_is_refused_before_any_image_is_enhanced(enhance_template, tmp_path):
    from catalog_enhance.tasks.evaluate.gate import promote_if_better

    lake = copy_lake(enhance_template, tmp_path / "lake")
    version, key = enhance_template["version"], enhance_template["row"]["checkpoint_key"]
    decision = promote_if_better(lake, model_name="espcn", kind="sr", version=version, candidate=1.0,
                                 baseline=0.0, dataset_hash="test")
    assert decision.promote, decision.reason
    marker = tmp_path / "pwned-champion"
    lake.write_bytes(key, malicious_checkpoint(marker))  # the champion's checkpoint, swapped in the lake

    for call in (lambda: enhance_catalog(lake, EnhanceParams(), model=version, runtime=CPU),
                 lambda: enhance_catalog(lake, EnhanceParams(), model="espcn", runtime=CPU),
                 lambda: load_for_params(lake, EnhanceParams(), model=version, runtime=CPU)):
        with pytest.raises(CheckpointError) as info:
            call()
        assert key in str(info.value) and "refused" in str(info.value)
        assert not marker.exists()
    assert manifests.read(lake, "enhancements").num_rows == 0
    assert not lake.list("enhanced")


class Recorder(logging.Handler):
    """Keeps the records it sees (works whether or not pytest's logging plugin is loaded)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_malicious_feature_extractor_is_refused_and_retrained(tmp_path):
    from generative_catalog import COLOURS, catalog_row, product_image

    from catalog_enhance.data_contracts.contracts import CATALOG
    from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings, feature_extractor

    lake = Lake.from_url(str(tmp_path / "lake"))
    rng = np.random.default_rng(0)
    rows = [catalog_row(lake, f"{category}-{i}", f"{category}-{i}", category, "studio",
                        product_image(category, "studio", rng, (24, 24)))
            for category in COLOURS for i in range(8)]
    manifests.commit(lake, "catalog", lambda current: CATALOG.table(rows))
    settings = ClassifierSettings(image_size=16, steps=20, width=8)
    first = feature_extractor(lake, settings)
    assert first.trained_now and first.key == feature_extractor_key(first.fingerprint)

    marker = tmp_path / "pwned-features"
    lake.write_bytes(first.key, malicious_checkpoint(marker))
    handler = Recorder()
    logger = logging.getLogger("catalog_enhance.tasks.evaluate.feature_extractor")
    logger.addHandler(handler)
    try:
        second = feature_extractor(lake, settings)
    finally:
        logger.removeHandler(handler)

    assert not marker.exists()
    messages = [record.getMessage() for record in handler.records]
    assert any(first.key in m and "refused" in m for m in messages), messages
    assert second.trained_now and second.key == first.key
    # The refused file was replaced by a plain-data checkpoint of the same (deterministic) weights.
    state = torch.load(io.BytesIO(lake.read_bytes(first.key)), weights_only=True)
    assert all(torch.equal(state["model"][k], v) for k, v in first.classifier.state_dict().items())


# -- transparent cutouts ----------------------------------------------------------------------------


def cutout(colour=(200, 40, 40), garbage=(0, 255, 0), n: int = 40, radius: float = 13.0) -> np.ndarray:
    """An antialiased disc of `colour` on full transparency, with bright `garbage` under alpha = 0
    (what image editors leave there): any of it bleeding into the edge shows as a coloured fringe."""
    yy, xx = np.mgrid[:n, :n] + 0.5
    alpha = np.clip(radius + 0.5 - np.hypot(yy - n / 2, xx - n / 2), 0, 1)
    image = np.zeros((n, n, 4), np.uint8)
    image[..., :3] = colour
    image[..., 3] = np.round(alpha * 255)
    image[image[..., 3] == 0, :3] = garbage
    return image


def assert_no_fringe(output: np.ndarray, colour=(200, 40, 40)) -> None:
    assert output.shape == (80, 80, 4)
    rgb, alpha = output[..., :3].astype(int), output[..., 3]
    assert (alpha[:8] == 0).all() and (alpha[-8:] == 0).all() and (alpha[36:44, 36:44] == 255).all()
    visible = alpha > 25  # the soft edge included: that is where a fringe would show
    assert visible.sum() > 1000
    worst = np.abs(rgb[visible] - np.array(colour)).max(axis=0)
    assert worst.max() <= 30, f"colour fringe at the edge: worst deviation per channel {worst}"


def test_transparent_cutouts_are_enhanced_without_a_colour_fringe(enhance_template, tmp_path):
    lake = copy_lake(enhance_template, tmp_path / "lake")
    shop = tmp_path / "cutouts"
    shop.mkdir()
    Image.fromarray(cutout(), "RGBA").save(shop / "cutout.png")
    feed = write_csv(shop / "feed.csv", [("cut-1", "cutout.png", "photo", "cutout")])
    assert ingest_feed(lake, settings_for(lake), feed).ingested_new == 1
    version = enhance_template["version"]

    summary = enhance_catalog(lake, EnhanceParams(), model=version, runtime=CPU)
    assert summary.quarantined == 0
    (row,) = [r for r in manifests.read(lake, "enhancements").to_pylist() if r["sku"] == "cut-1"]
    assert row["mode"] == "RGBA"
    assert_no_fringe(load_image(lake.read_bytes(row["output_key"])))

    params = EnhanceParams()
    _, models = load_for_params(lake, params, model=version, runtime=CPU)
    result = enhance_folder(str(shop), tmp_path / "out", models, params, runtime=CPU,
                            settings=load_settings(lake_url=lake.url))
    assert result.enhanced == 1
    assert_no_fringe(load_image((tmp_path / "out" / "cutout.png.png").read_bytes()))
