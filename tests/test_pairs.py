"""LR/HR pairs: product-level split, sizes, labels, quarantine, and re-runs that write nothing."""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter, defaultdict
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pydantic
import pytest
from PIL import Image

from catalog_enhance.data_contracts.contracts import CATALOG, PAIRS, QUARANTINE
from catalog_enhance.data_contracts.layout import normalized_image_key, original_image_key
from catalog_enhance.tasks.imaging.degrade import (
    BicubicStage,
    DegradationConfig,
    NoiseStage,
    canonical_json,
    config_hash,
    named_degradation,
)
from catalog_enhance.flows.rendering import counts_markdown
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.tasks.catalog.splits import SplitFractions, assign_split
from catalog_enhance.tasks.pairs.image import crop_origins, make_pairs_for_image
from catalog_enhance.tasks.pairs.run import build_pairs, record_quarantine
from catalog_enhance.tasks.imaging.resize import imresize

TINY = PairsConfig(hr_size=36, crops_per_image=2)  # x4 LR crops: 9 px


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _pixels(h, w, seed, channels=3):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(x / (3 + seed % 5)) * np.cos(y / 4)
    img = np.stack([base, base[::-1], base[:, ::-1]], axis=-1) + rng.integers(-20, 20, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 4:
        alpha = np.zeros((h, w, 1), np.uint8)
        alpha[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255  # an opaque object, transparent around it
        img = np.concatenate([img, alpha], axis=-1)
    return img


def _catalog(lake, specs):
    """Write each spec's PNG to the lake and return a CATALOG table built by hand.

    spec: dict(sku, product_id, h, w, seed[, channels, version, category, style, labels, data]).
    """
    rows = []
    for spec in specs:
        data = spec.get("data")
        if data is None:
            data = _png(_pixels(spec["h"], spec["w"], spec["seed"], spec.get("channels", 3)))
        sha = hashlib.sha256(data).hexdigest()
        if spec.get("write", True):
            lake.write_bytes(normalized_image_key(sha), data)
        rgba = spec.get("channels", 3) == 4
        rows.append(
            {
                "sku": spec["sku"],
                "version": spec.get("version", 1),
                "product_id": spec.get("product_id", spec["sku"]),
                "category": spec.get("category", "food/fruit"),
                "style": spec.get("style", "studio"),
                "source_uri": f"file:///feed/{spec['sku']}.png",
                "source_fingerprint": None,
                "source_sha256": sha,
                "source_format": "PNG",
                "source_bytes": len(data),
                "original_key": original_image_key(sha, "png"),
                "image_key": normalized_image_key(sha),
                "image_sha256": sha,
                "width": spec["w"],
                "height": spec["h"],
                "mode": "RGBA" if rgba else "RGB",
                "has_alpha": rgba,
                "exif_orientation": None,
                "icc_profile": None,
                "sharpness": 1.0,
                "ingested_at": datetime(2026, 11, 23, tzinfo=timezone.utc),
                "run_id": None,
                **{f"label_{k}": v for k, v in spec.get("labels", {}).items()},
            }
        )
    table = CATALOG.table(rows)
    manifests.remove(lake, "catalog")
    manifests.append(lake, "catalog", table)
    return table


def _snapshot(lake):
    root = lake.root
    return {
        os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, files in os.walk(root)
        for f in files
    }


def _decode(lake, key):
    return np.asarray(Image.open(io.BytesIO(lake.read_bytes(key))))


# -- split --------------------------------------------------------------------------------------


def test_split_is_deterministic_stable_and_close_to_the_fractions():
    rng = np.random.default_rng(0)
    ids = [f"product-{rng.integers(1 << 60):x}" for _ in range(1000)]
    splits = {pid: assign_split(pid) for pid in ids}
    # Determinism, independent of order and of the other products (new arrivals change nothing).
    assert {pid: assign_split(pid) for pid in reversed(ids)} == splits
    assert all(assign_split(pid) == splits[pid] for pid in ids[:10])
    counts = Counter(splits.values())
    assert set(counts) == {"train", "val", "test"}
    # Binomial std at n=1000: 0.013 (train), 0.009 (val/test); 4 sigma tolerances.
    assert abs(counts["train"] / 1000 - 0.8) < 0.05
    assert abs(counts["val"] / 1000 - 0.1) < 0.04
    assert abs(counts["test"] / 1000 - 0.1) < 0.04
    # Fractions and the salt are honoured.
    halves = Counter(assign_split(pid, (0.5, 0.0, 0.5)) for pid in ids)
    assert halves["val"] == 0 and abs(halves["train"] / 1000 - 0.5) < 0.07
    other_salt = {pid: assign_split(pid, salt="another") for pid in ids}
    assert other_salt != splits


def test_no_product_in_two_splits(lake):
    # 40 products, each with a studio and a lifestyle SKU (and so two different images).
    specs = []
    for p in range(40):
        for k, style in enumerate(("studio", "lifestyle")):
            specs.append(
                {"sku": f"p{p}-{style}", "product_id": f"p{p}", "h": 20, "w": 20, "seed": 2 * p + k, "style": style}
            )
    catalog = _catalog(lake, specs)
    config = PairsConfig(hr_size=24, scales=(2,))
    result = build_pairs(lake, catalog, config)
    by_product = defaultdict(set)
    for row in result.rows:
        by_product[row["product_id"]].add(row["split"])
    assert len(by_product) == 40
    assert all(len(s) == 1 for s in by_product.values())
    assert all(s == {assign_split(p)} for p, s in by_product.items())


# -- pairs --------------------------------------------------------------------------------------


def test_pairs_rows_sizes_pixels_and_labels(lake):
    catalog = _catalog(
        lake,
        [
            {"sku": "a", "h": 40, "w": 52, "seed": 1, "labels": {"colour": "red"}},
            {"sku": "b", "h": 40, "w": 33, "seed": 2, "category": "clothes/hats", "style": "lifestyle"},
            {"sku": "c", "h": 36, "w": 36, "seed": 3, "channels": 4},
        ],
    )
    result = build_pairs(lake, catalog, TINY)
    manifest = manifests.read(lake, "pairs")
    assert result.manifest_written and manifest.num_rows == len(result.rows)
    assert PAIRS.validate(manifest) == []
    assert PAIRS.stored_version(manifest) == PAIRS.version
    # a and c are big enough for two 36 px crops per scale; b (33 px wide) gives one full image.
    per_sku = Counter(manifest.column("sku").to_pylist())
    assert per_sku == {"a": 6, "c": 6, "b": 3}
    for row in manifest.to_pylist():
        s = row["scale"]
        hr, lr = _decode(lake, row["hr_key"]), _decode(lake, row["lr_key"])
        assert hr.shape == (row["hr_height"], row["hr_width"], 3) and lr.shape == (row["lr_height"], row["lr_width"], 3)
        assert row["hr_width"] % s == 0 and row["hr_height"] % s == 0
        assert (row["lr_width"] * s, row["lr_height"] * s) == (row["hr_width"], row["hr_height"])
        # Default degradation: LR is MATLAB bicubic of the stored HR, rounded like im2uint8.
        expected = np.clip(np.floor(imresize(hr / 255.0, 1 / s) * 255 + 0.5), 0, 255)
        np.testing.assert_array_equal(lr, expected)
        assert row["split"] == assign_split(row["product_id"])
        assert row["config_hash"] == TINY.config_hash
    rows = {r["sku"]: r for r in manifest.to_pylist()}
    assert rows["a"]["label_colour"] == "red" and rows["b"]["label_colour"] is None
    assert (rows["b"]["category"], rows["b"]["style"]) == ("clothes/hats", "lifestyle")
    b3 = [r for r in manifest.to_pylist() if r["sku"] == "b" and r["scale"] == 3][0]
    assert (b3["hr_width"], b3["hr_height"]) == (33, 39)  # 33x40 mod-cropped by 3


def test_rgba_is_composited_on_white(lake):
    catalog = _catalog(lake, [{"sku": "cutout", "h": 24, "w": 24, "seed": 4, "channels": 4}])
    build_pairs(lake, catalog, PairsConfig(hr_size=24, crops_per_image=1, scales=(2,)))
    row = manifests.read(lake, "pairs").to_pylist()[0]
    hr = _decode(lake, row["hr_key"])
    assert hr.shape == (24, 24, 3)
    assert (hr[:6] == 255).all() and (hr[:, :6] == 255).all()  # transparent border -> white
    source = _pixels(24, 24, 4, channels=4)
    np.testing.assert_array_equal(hr[6:18, 6:18], source[6:18, 6:18, :3])  # opaque object kept


def test_crops_are_deterministic_per_image_config_and_seed():
    data = _png(_pixels(64, 80, 7))
    row = {
        "sku": "x", "product_id": "x", "version": 1, "category": "c", "style": "studio",
        "image_sha256": hashlib.sha256(data).hexdigest(), "image_key": "images/x.png",
    }
    first = make_pairs_for_image(data, row, TINY)
    second = make_pairs_for_image(data, row, TINY)
    assert [(h, l) for h, l, _ in first] == [(h, l) for h, l, _ in second]
    assert len(first) == 6  # 3 scales x 2 crops, the same two crops for every scale
    origins = crop_origins(row["image_sha256"], 80, 64, TINY)
    assert [(r["crop_x"], r["crop_y"]) for _, _, r in first] == origins * 3
    reseeded = PairsConfig(hr_size=36, crops_per_image=2, seed=1)
    assert crop_origins(row["image_sha256"], 80, 64, reseeded) != origins
    assert reseeded.config_hash != TINY.config_hash
    other_size = PairsConfig(hr_size=48, crops_per_image=2)
    assert crop_origins(row["image_sha256"], 80, 64, other_size) != origins


def test_rerun_writes_nothing(lake):
    catalog = _catalog(lake, [{"sku": f"s{i}", "h": 40, "w": 44, "seed": i} for i in range(4)])
    first = build_pairs(lake, catalog, TINY)
    assert len(first.rows) == 4 * 3 * 2
    before = _snapshot(lake)
    second = build_pairs(lake, catalog, TINY, manifests.read(lake, "pairs"))
    assert second.rows == [] and not second.manifest_written
    assert second.skipped_existing == 4 * 3
    assert _snapshot(lake) == before  # same objects, same mtimes


def test_new_scale_or_new_image_adds_only_what_is_missing(lake):
    specs = [{"sku": f"s{i}", "h": 30, "w": 30, "seed": i} for i in range(2)]
    catalog = _catalog(lake, specs)
    only_x2 = PairsConfig(hr_size=24, crops_per_image=1, scales=(2,))
    build_pairs(lake, catalog, only_x2)
    x2_keys = set(manifests.read(lake, "pairs").column("hr_key").to_pylist())
    both = PairsConfig(hr_size=24, crops_per_image=1, scales=(2, 3))
    assert both.config_hash == only_x2.config_hash  # scales are not part of the identity
    result = build_pairs(lake, catalog, both, manifests.read(lake, "pairs"))
    assert {r["scale"] for r in result.rows} == {3} and len(result.rows) == 2
    catalog = _catalog(lake, [*specs, {"sku": "s9", "h": 30, "w": 30, "seed": 9}])
    result = build_pairs(lake, catalog, both, manifests.read(lake, "pairs"))
    assert {r["sku"] for r in result.rows} == {"s9"}
    manifest = manifests.read(lake, "pairs")
    assert manifest.num_rows == 6 and x2_keys <= set(manifest.column("hr_key").to_pylist())


def test_only_the_latest_version_of_a_sku_is_paired_and_shared_images_once(lake):
    catalog = _catalog(
        lake,
        [
            {"sku": "a", "version": 1, "h": 30, "w": 30, "seed": 1},
            {"sku": "a", "version": 2, "h": 30, "w": 30, "seed": 2},
            {"sku": "b", "product_id": "pb", "h": 30, "w": 30, "seed": 3},
            {"sku": "c", "product_id": "pc", "h": 30, "w": 30, "seed": 3},  # same pixels as b
        ],
    )
    result = build_pairs(lake, catalog, PairsConfig(hr_size=24, crops_per_image=1, scales=(2,)))
    latest_a = catalog.filter(pa.compute.equal(catalog.column("version"), 2)).column("image_sha256")[0].as_py()
    assert {(r["sku"], r["image_sha256"]) for r in result.rows if r["sku"] == "a"} == {("a", latest_a)}
    assert {r["sku"] for r in result.rows} == {"a", "b"} and result.duplicate_images == 1
    assert all(r["catalog_version"] == 2 for r in result.rows if r["sku"] == "a")


def test_bad_images_are_quarantined_while_others_pair(lake):
    catalog = _catalog(
        lake,
        [
            {"sku": "good", "h": 40, "w": 40, "seed": 1},
            {"sku": "tiny", "h": 20, "w": 20, "seed": 2},  # x2 -> 10 px fine; x3 -> 6, x4 -> 5 too small
            {"sku": "broken", "h": 40, "w": 40, "seed": 0, "data": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40},
            {"sku": "cut", "h": 40, "w": 40, "seed": 0, "data": _png(_pixels(40, 40, 5))[:300]},  # truncated
            {"sku": "gone", "h": 40, "w": 40, "seed": 3, "write": False},
        ],
    )
    result = build_pairs(lake, catalog, TINY)
    paired = Counter((r["sku"], r["scale"]) for r in result.rows)
    assert paired == {("good", 2): 2, ("good", 3): 2, ("good", 4): 2, ("tiny", 2): 1}
    reasons = sorted((q["sku"], q["reason"]) for q in result.quarantine)
    assert reasons == [
        ("broken", "corrupt"), ("cut", "corrupt"), ("gone", "not_found"),
        ("tiny", "unsupported_image"), ("tiny", "unsupported_image"),
    ]
    tiny = [q["detail"] for q in result.quarantine if q["sku"] == "tiny"]
    assert any("x3" in d and "6 px" in d for d in tiny) and any("x4" in d for d in tiny)
    assert all(q["stage"] == "pairs" for q in result.quarantine)

    assert record_quarantine(lake, result.quarantine, run_id="run-1") == 5
    table = manifests.read(lake, "quarantine")
    assert QUARANTINE.validate(table) == [] and table.num_rows == 5
    # The re-run finds the same problems but appends nothing and writes nothing.
    before = _snapshot(lake)
    again = build_pairs(lake, catalog, TINY, manifests.read(lake, "pairs"))
    assert again.rows == [] and len(again.quarantine) == 5
    assert record_quarantine(lake, again.quarantine, run_id="run-2") == 0
    assert _snapshot(lake) == before


def test_degradation_config_changes_the_pairs(lake):
    catalog = _catalog(lake, [{"sku": "a", "h": 30, "w": 30, "seed": 1}])
    noisy = PairsConfig(
        hr_size=24, crops_per_image=1, scales=(2,),
        degradation=DegradationConfig(stages=[BicubicStage(), NoiseStage(sigma=(20.0, 20.0))]),
    )
    clean_rows = build_pairs(lake, catalog, PairsConfig(hr_size=24, crops_per_image=1, scales=(2,))).rows
    noisy_rows = build_pairs(lake, catalog, noisy, manifests.read(lake, "pairs")).rows
    assert noisy_rows[0]["config_hash"] != clean_rows[0]["config_hash"]
    assert '"noise"' in noisy_rows[0]["degradation"]
    clean_lr, noisy_lr = _decode(lake, clean_rows[0]["lr_key"]), _decode(lake, noisy_rows[0]["lr_key"])
    # Same HR crop (crops depend on image, seed and hr_size only), different LR.
    assert np.array_equal(_decode(lake, clean_rows[0]["hr_key"]), _decode(lake, noisy_rows[0]["hr_key"]))
    assert 10 < np.abs(clean_lr.astype(int) - noisy_lr).mean() < 25
    assert manifests.read(lake, "pairs").num_rows == 2


def test_config_validation():
    with pytest.raises(pydantic.ValidationError, match="multiple of 12"):
        PairsConfig(hr_size=100)
    with pytest.raises(pydantic.ValidationError, match="scales"):
        PairsConfig(scales=(2, 8))
    with pytest.raises(pydantic.ValidationError, match="min_lr_side"):
        PairsConfig(hr_size=24)  # 6 px LR crops at x4
    with pytest.raises(pydantic.ValidationError, match="sum to 1"):
        SplitFractions(train=0.9, val=0.1, test=0.1)
    assert PairsConfig(scales=(4, 2)).scales == (2, 4)


def test_flow_makes_pairs_then_nothing_on_rerun(lake, prefect_harness):
    from catalog_enhance.flows.pairs import make_pairs

    _catalog(
        lake,
        [
            {"sku": "a", "h": 40, "w": 40, "seed": 1},
            {"sku": "b", "h": 40, "w": 40, "seed": 2, "labels": {"material": "wool"}},
            {"sku": "c", "h": 40, "w": 40, "seed": 3},
            {"sku": "tiny", "h": 12, "w": 12, "seed": 4},
        ],
    )
    config = PairsConfig(hr_size=36, crops_per_image=1)
    summary = make_pairs(lake_url=lake.root, config=config, chunk_size=2)
    assert summary.pairs_written == 9 and sum(summary.pairs_by_split_scale.values()) == 9
    assert summary.quarantined == 3 and summary.quarantine_appended == 3 and summary.manifest_written
    assert summary.counts()["pairs written"] == 9 and "| pairs written | 9 |" in counts_markdown("## make-pairs", summary.counts())
    manifest = manifests.read(lake, "pairs")
    assert PAIRS.validate(manifest) == [] and manifest.num_rows == 9
    assert "label_material" in manifest.column_names
    quarantine = manifests.read(lake, "quarantine")
    assert quarantine.num_rows == 3 and set(quarantine.column("sku").to_pylist()) == {"tiny"}
    assert all(quarantine.column("run_id").to_pylist())

    before = _snapshot(lake)
    again = make_pairs(lake_url=lake.root, config=config, chunk_size=2)
    assert again.pairs_written == 0 and again.skipped_existing == 9
    assert again.quarantine_appended == 0 and not again.manifest_written
    assert _snapshot(lake) == before


def test_flow_and_cli_make_pairs_with_a_named_degradation(lake, prefect_harness):
    """`--degradation realistic`: the manifest records the config's canonical JSON, under its own
    pairs config hash, next to the bicubic pairs of the same HR crops."""
    from typer.testing import CliRunner

    from catalog_enhance.flows import cli
    from catalog_enhance.flows.pairs import make_pairs
    from catalog_enhance.tasks.evaluate.sr_test import pairs_degradation

    _catalog(lake, [{"sku": "a", "h": 40, "w": 40, "seed": 1}, {"sku": "b", "h": 40, "w": 40, "seed": 2}])
    config = PairsConfig(hr_size=36, crops_per_image=1)
    bicubic = make_pairs(lake_url=lake.root, config=config)
    realistic = make_pairs(lake_url=lake.root, config=config, degradation="realistic")
    assert bicubic.pairs_written == realistic.pairs_written == 6
    manifest = manifests.read(lake, "pairs")
    assert PAIRS.validate(manifest) == [] and manifest.num_rows == 12
    by_json = Counter(manifest.column("degradation").to_pylist())
    recorded = canonical_json(named_degradation("realistic"))
    assert by_json == {canonical_json(DegradationConfig()): 6, recorded: 6}
    assert '"final"' in recorded and '"resize"' in recorded and '"sinc"' in recorded
    rows = manifest.to_pylist()
    real_hash = config.model_copy(update={"degradation": named_degradation("realistic")}).config_hash
    assert {r["config_hash"] for r in rows if r["degradation"] == recorded} == {real_hash} != {config.config_hash}
    # Same HR crops, a different (degraded) LR of the exact same size.
    pairs = {(r["sku"], r["scale"], r["config_hash"]): r for r in rows}
    for sku in ("a", "b"):
        for scale in (2, 3, 4):
            clean, real = pairs[(sku, scale, config.config_hash)], pairs[(sku, scale, real_hash)]
            assert np.array_equal(_decode(lake, clean["hr_key"]), _decode(lake, real["hr_key"]))
            clean_lr, real_lr = _decode(lake, clean["lr_key"]), _decode(lake, real["lr_key"])
            assert clean_lr.shape == real_lr.shape == (real["lr_height"], real["lr_width"], 3)
            assert np.abs(clean_lr.astype(int) - real_lr).mean() > 2
    # Evaluation reads the recorded config back (here the latest made: the default hr_size's absent).
    assert pairs_degradation(lake) == named_degradation("realistic")

    # The CLI on a new lake: only realistic pairs, at the default pairs config.
    other = lake.root + "-cli"
    from catalog_enhance.tasks.lake.storage import Lake

    cli_lake = Lake.from_url(other)
    _catalog(cli_lake, [{"sku": "a", "h": 40, "w": 40, "seed": 1}])
    result = CliRunner().invoke(cli.app, ["pairs", "--degradation", "realistic", "--lake", other])
    assert result.exit_code == 0, result.output
    cli_manifest = manifests.read(cli_lake, "pairs")
    assert set(cli_manifest.column("degradation").to_pylist()) == {recorded}
    assert cli_manifest.num_rows == 3 and pairs_degradation(cli_lake) == named_degradation("realistic")
    assert config_hash(pairs_degradation(cli_lake)) == config_hash(named_degradation("realistic"))


def test_cli_unknown_degradation_is_one_line_exit_2_listing_the_known_ones(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import catalog_enhance.flows.pairs
    from catalog_enhance.flows import cli

    def tripwire(*args, **kwargs):
        raise AssertionError("the flow started before the unknown degradation was reported")

    monkeypatch.setattr(catalog_enhance.flows.pairs, "make_pairs", tripwire)
    result = CliRunner().invoke(cli.app, ["pairs", "--degradation", "realstic", "--lake", str(tmp_path / "lake")])
    lines = result.output.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == "configuration error: unknown degradation 'realstic'; known: bicubic, light, realistic"
    assert not (tmp_path / "lake").exists()  # found before the lake was touched
