"""The lake's atomic writes and key safety; the data contracts' validation and versioning."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog_enhance.data_contracts.contracts import (
    CATALOG,
    FEED,
    QUARANTINE,
    ContractError,
    Violation,
)
from catalog_enhance.data_contracts.layout import (
    UnsafeKeyError,
    legacy_manifest_key,
    normalized_image_key,
    original_image_key,
    safe_key,
)
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake

SHA = "ab" * 32


# -- atomic writes ---------------------------------------------------------------------------
def _crash_during(lake_root: str, key: str, stage: str) -> subprocess.CompletedProcess:
    """Write `key` in a child process that dies abruptly (os._exit, no cleanup) at `stage`:
    'pipe' = halfway through writing the temporary, 'commit' = just before the move."""
    script = textwrap.dedent(
        f"""
        import os
        from catalog_enhance.tasks.lake.storage import Lake

        lake = Lake.from_url({lake_root!r})
        if {stage!r} == "pipe":
            real_pipe = lake.fs.pipe_file
            def pipe_half_then_die(path, data, **kw):
                real_pipe(path, data[: len(data) // 2])
                os._exit(9)
            lake.fs.pipe_file = pipe_half_then_die
        else:
            def die(tmp, final):
                os._exit(9)
            lake._commit = die
        lake.write_bytes({key!r}, b"NEW" * 1000)
        """
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)


@pytest.mark.parametrize("stage", ["pipe", "commit"])
def test_crash_mid_write_leaves_no_object_under_the_real_key(tmp_path, stage):
    root = str(tmp_path / "lake")
    lake = Lake.from_url(root)
    lake.write_bytes("kept/old.bin", b"OLD")
    for key in ("fresh/new.bin", "kept/old.bin"):
        assert _crash_during(root, key, stage).returncode == 9
    assert not lake.exists("fresh/new.bin")
    assert lake.read_bytes("kept/old.bin") == b"OLD"  # an overwrite that crashed changed nothing
    assert lake.list() == ["kept/old.bin"]  # the orphaned temporary is never listed as an object
    leftovers = lake.fs.find(f"{lake.root}/_tmp")
    assert leftovers and all("/_tmp/" in p for p in leftovers)


def test_failed_commit_raises_and_cleans_its_temporary(lake, monkeypatch):
    def refuse(src, dst, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lake.fs, "mv", refuse)
    with pytest.raises(OSError, match="disk full"):
        lake.write_bytes("a/b.bin", b"data")
    assert not lake.exists("a/b.bin")
    assert lake.fs.find(f"{lake.root}/_tmp") == []


def test_write_if_absent_and_tables_round_trip(lake):
    assert lake.write_bytes_if_absent("x/y.bin", b"one") is True
    assert lake.write_bytes_if_absent("x/y.bin", b"two") is False
    assert lake.read_bytes("x/y.bin") == b"one"
    table = QUARANTINE.table([_quarantine_row("corrupt")])
    lake.write_table(legacy_manifest_key("quarantine"), table)
    assert lake.read_table(legacy_manifest_key("quarantine")).equals(table)
    assert lake.list() == [legacy_manifest_key("quarantine"), "x/y.bin"]


# -- keys ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../b", "/etc/passwd", "", "a//b", "a/./b", "..", "sku with space/x",
     "a\\..\\b", "~/x", "a/b\x00c", "x" * 201, "ünïcode/x"],
)
def test_unsafe_keys_are_refused_and_nothing_is_written(lake, tmp_path, key):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeKeyError):
        lake.write_bytes(key, b"evil")
    with pytest.raises(UnsafeKeyError):
        lake.path(key)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_image_keys_are_content_addressed_and_input_cannot_steer_them():
    assert original_image_key(SHA, "JPG") == f"images/original/ab/{SHA}.jpg"
    assert normalized_image_key(SHA) == f"images/normalized/ab/{SHA}.png"
    for bad in ("../" + SHA[3:], SHA.upper(), "sku-123", SHA[:-1]):
        with pytest.raises(UnsafeKeyError):
            normalized_image_key(bad)
    with pytest.raises(UnsafeKeyError):
        original_image_key(SHA, "../../etc")
    assert safe_key("a", "b/c") == "a/b/c"


# -- contracts -------------------------------------------------------------------------------
def _catalog_row(**changes) -> dict:
    row = {
        "sku": "A1", "version": 1, "product_id": "A1", "category": "shoes", "style": "studio",
        "source_uri": "img/a.jpg", "source_fingerprint": "file:size=1", "source_sha256": SHA,
        "source_format": "JPEG", "source_bytes": 10, "original_key": original_image_key(SHA, "jpg"),
        "image_key": normalized_image_key(SHA), "image_sha256": SHA, "width": 4, "height": 3,
        "mode": "RGB", "has_alpha": False, "exif_orientation": None, "icc_profile": None,
        "sharpness": 1.5, "ingested_at": datetime.now(timezone.utc), "run_id": "r1",
    }
    row.update(changes)
    return row


def _quarantine_row(reason: str) -> dict:
    return {"stage": "ingest", "sku": "A1", "feed_row": 1, "image_uri": "x", "reason": reason,
            "detail": "d", "run_id": "r", "quarantined_at": datetime.now(timezone.utc)}


def test_validation_names_row_column_and_reason():
    rows = [_catalog_row(), _catalog_row(sku="B2", image_sha256="nope", mode="CMYK", width=0, style="  ")]
    with pytest.raises(ContractError) as info:
        CATALOG.table(rows)
    violations = set(info.value.violations)
    assert Violation(1, "image_sha256", "'nope': not a sha256 hex digest") in violations
    assert Violation(1, "mode", "'CMYK' not in ['RGB', 'RGBA']") in violations
    assert Violation(1, "width", "0: must be > 0") in violations
    assert Violation(1, "style", "missing value") in violations
    assert all(v.row == 1 for v in violations)  # the good row 0 is not blamed
    message = str(info.value)
    assert message.startswith("catalog_manifest:") and "row 1, column 'image_sha256'" in message


def test_table_level_problems_have_no_row():
    table = CATALOG.table([_catalog_row()])
    assert CATALOG.validate(table.drop_columns(["image_key"])) == [Violation(None, "image_key", "missing column")]
    wrong = table.set_column(table.schema.get_field_index("width"), "width", pa.array(["4"]))
    assert CATALOG.validate(wrong) == [Violation(None, "width", "type string is not int32")]
    extra = table.append_column("colour", pa.array(["red"]))
    assert CATALOG.validate(extra) == [Violation(None, "colour", "column not in the contract")]
    # Free labels are first-class: label_<name> columns are allowed beside category/style.
    labelled = CATALOG.table([_catalog_row(label_colour="red")])
    assert labelled.column_names[-1] == "label_colour" and CATALOG.validate(labelled) == []
    assert QUARANTINE.validate(QUARANTINE.table([_quarantine_row("corrupt")])) == []
    with pytest.raises(ContractError, match="'made_up' not in"):
        QUARANTINE.table([_quarantine_row("made_up")])
    assert FEED.validate(pa.table({"sku": ["1"]}))[0] == Violation(None, "image_uri", "missing column")


def test_schema_version_is_stored_in_the_parquet_metadata(lake):
    manifests.append(lake, "catalog", CATALOG.table([_catalog_row()]))
    snap = manifests.snapshot(lake, "catalog")
    assert snap.schema_version == CATALOG.version  # in the log entry, and in every part
    (part,) = snap.parts
    with lake.fs.open(lake.path(part), "rb") as handle:
        metadata = pq.read_schema(handle).metadata
    assert metadata[b"schema_version"] == CATALOG.version.encode()
    assert metadata[b"contract"] == b"catalog_manifest"
    assert CATALOG.stored_version(manifests.read(lake, "catalog")) == CATALOG.version
    assert CATALOG.stored_version(pa.table({"x": [1]})) is None
