"""The lake on a real S3-API server (moto, over HTTP on loopback) behaves like the local one."""

from __future__ import annotations

import pyarrow as pa
import pytest

from catalog_enhance.data_contracts.layout import UnsafeKeyError
from catalog_enhance.tasks.lake.settings import ConfigError, load_settings
from catalog_enhance.tasks.lake.storage import Lake

pytestmark = pytest.mark.s3


def test_s3_lake_roundtrip_and_atomic_writes(s3_lake_url):
    lake = Lake.from_url(s3_lake_url)
    assert lake.uri("a/b.bin").startswith("s3://")
    lake.write_bytes("a/b.bin", b"payload")
    assert lake.read_bytes("a/b.bin") == b"payload"
    assert lake.write_bytes_if_absent("a/b.bin", b"other") is False
    assert lake.read_bytes("a/b.bin") == b"payload"
    table = pa.table({"x": [1, 2, 3]})
    lake.write_table("m/t.parquet", table)
    assert lake.read_table("m/t.parquet").equals(table)
    # Temporaries are gone after commit and never listed.
    assert lake.list() == ["a/b.bin", "m/t.parquet"]
    assert not lake.fs.exists(f"{lake.root}/_tmp") or lake.fs.ls(f"{lake.root}/_tmp") == []
    assert lake.read_many(["a/b.bin", "m/t.parquet"])["a/b.bin"] == b"payload"
    with pytest.raises(UnsafeKeyError):
        lake.write_bytes("../escape", b"x")


def test_s3_without_credentials_fails_with_one_line(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError) as info:
        load_settings(lake_url="s3://bucket/prefix")
    assert "AWS_ACCESS_KEY_ID" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url, fragment",
    [("ftp://host/x", "not supported"), ("s3://", "needs a bucket"), ("   ", "empty")],
)
def test_bad_lake_url_fails_with_one_line(url, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(lake_url=url)
    assert fragment in str(info.value)


def test_s3_lake_makes_one_request_per_object_read_or_written(s3_lake_url):
    """A content-addressed write is one conditional PUT, a read one GET: no HEAD before either
    (s3fs would HEAD to look for folders or to split big objects), as bench/NOTES.md measured."""
    lake = Lake.from_url(s3_lake_url)
    lake.write_bytes("warm/up", b"x")  # connects s3fs's client
    calls: list[str] = []
    lake.fs.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))

    assert lake.write_bytes_if_absent("img/new.bin", b"new") is True
    assert lake.write_bytes_if_absent("img/new.bin", b"new") is False  # refused by the server: 412
    assert calls == ["PutObject", "PutObject"]
    calls.clear()
    assert lake.read_many(["img/new.bin", "warm/up"]) == {"img/new.bin": b"new", "warm/up": b"x"}
    assert lake.read_bytes("img/new.bin") == b"new"
    assert calls == ["GetObject"] * 3
    with pytest.raises(FileNotFoundError):
        lake.read_many(["img/new.bin", "img/missing.bin"])
