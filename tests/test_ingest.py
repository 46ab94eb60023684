"""Catalog ingestion: bad rows quarantined with their reason while good rows land; incremental
re-runs; every feed format; http(s) sources; the Prefect flow on a small feed."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_fixtures import corrupt_png, encode, noise, png_bomb

from catalog_enhance.data_contracts.contracts import CATALOG, QUARANTINE
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.sources import uris as sources
from catalog_enhance.tasks.imaging.codec import load_image
from catalog_enhance.tasks.ingest.run import ingest_feed
from catalog_enhance.tasks.lake.manifests import current_catalog
from catalog_enhance.tasks.sources.feeds import FeedError, read_feed
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.sources.uris import SourceRejected, fetch, resolve

COLUMNS = ("sku", "image_uri", "category", "style")


def settings_for(lake, **overrides):
    return load_settings(lake_url=lake.url, io_concurrency=4, batch_size=4, **overrides)


def write_feed(path: Path, rows: list[dict], fmt: str | None = None) -> str:
    fmt = fmt or path.suffix.lstrip(".")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def row(sku, uri, category="shoes", style="studio", **labels):
    return {"sku": sku, "image_uri": uri, "category": category, "style": style, **labels}


def lake_state(lake) -> dict[str, int]:
    """Every object in the lake (temporaries included) with its mtime: to prove nothing is written."""
    return {path: lake.fs.info(path)["mtime"] for path in lake.fs.find(lake.root)}


def catalog_of(lake):
    table = manifests.read(lake, "catalog")
    CATALOG.check(table)
    return table


def quarantine_of(lake):
    table = manifests.read(lake, "quarantine")
    QUARANTINE.check(table)
    return table


@pytest.fixture()
def shop(tmp_path):
    """A feed folder with three good images: a JPEG, an RGBA PNG and a WebP."""
    folder = tmp_path / "shop"
    (folder / "img").mkdir(parents=True)
    rgba = np.dstack([noise(seed=2), np.full((24, 32), 255, np.uint8)])
    rgba[:3, :3, 3] = 0
    (folder / "img" / "a.jpg").write_bytes(encode(noise(seed=1), "JPEG"))
    (folder / "img" / "b.png").write_bytes(encode(rgba, "PNG"))
    (folder / "img" / "c.webp").write_bytes(encode(noise(seed=3), "WEBP"))
    return folder


GOOD = [row("A1", "img/a.jpg", colour="red"), row("B2", "img/b.png", "bags", "cutout"), row("C3", "img/c.webp")]


def test_every_bad_row_is_quarantined_with_its_reason_and_good_rows_land(shop, tmp_path, lake):
    bad = shop / "bad"
    bad.mkdir()
    jpeg, png = encode(noise(64, 64), "JPEG"), encode(noise(64, 64), "PNG")
    (bad / "corrupt.png").write_bytes(corrupt_png())
    (bad / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "cut.png").write_bytes(png[: len(png) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("not an image, just text with a .jpg name\n")
    (bad / "huge.png").write_bytes(encode(noise(200, 200, seed=9), "PNG"))  # ~120 kB > limit below
    (bad / "bomb.png").write_bytes(png_bomb())
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(encode(noise(), "JPEG"))
    (shop / "img" / "escape.jpg").symlink_to(secret)
    rows = GOOD + [
        row("Q01", "bad/corrupt.png"),
        row("Q02", "bad/cut.jpg"),
        row("Q03", "bad/cut.png"),
        row("Q04", "bad/empty.jpg"),
        row("Q05", "bad/notes.jpg"),
        row("Q06", "bad/huge.png"),
        row("Q07", "bad/bomb.png"),
        row("Q08", "ftp://example.com/a.jpg"),
        row("Q09", "javascript:alert(1)"),
        row("Q10", "../../etc/passwd"),
        row("Q11", "img/escape.jpg"),
        row("Q12", "bad/missing.jpg"),
        row("Q13", "img/a.jpg", category=""),
        row("Q14", "img/a.jpg", style=""),
        row("Q15", "img/a.jpg"),
        row("Q15", "img/b.png"),  # same SKU, different image: both rows refused
        row("", "img/a.jpg"),
        row("Q16", ""),
    ]
    feed = write_feed(shop / "feed.csv", rows)
    summary = ingest_feed(lake, settings_for(lake, max_image_bytes=60_000), feed)

    expected = {
        "Q01": "corrupt", "Q02": "truncated", "Q03": "truncated", "Q04": "empty", "Q05": "not_an_image",
        "Q06": "too_large", "Q07": "decompression_bomb", "Q08": "unknown_scheme", "Q09": "unknown_scheme",
        "Q10": "unsafe_path", "Q11": "unsafe_path", "Q12": "not_found", "Q13": "missing_label",
        "Q14": "missing_label", "Q16": "missing_field",
    }
    quarantine = quarantine_of(lake).to_pylist()
    reasons = {r["sku"]: r["reason"] for r in quarantine if r["sku"] not in {None, "Q15"}}
    assert reasons == expected
    assert [r["reason"] for r in quarantine if r["sku"] == "Q15"] == ["duplicate_conflict"] * 2
    assert [r["reason"] for r in quarantine if r["sku"] is None] == ["missing_field"]
    for record in quarantine:
        assert record["stage"] == "ingest" and record["detail"] and record["run_id"] == summary.run_id
    # Each record points at its feed row (1-based data rows).
    assert {(r["sku"], r["feed_row"]) for r in quarantine} <= {(r["sku"] or None, i) for i, r in enumerate(rows, 1)}
    assert summary.quarantined == len(quarantine) == 18
    assert summary.by_reason["unknown_scheme"] == 2 and summary.by_reason["duplicate_conflict"] == 2

    catalog = catalog_of(lake)
    assert sorted(catalog["sku"].to_pylist()) == ["A1", "B2", "C3"]
    assert summary.ingested_new == 3 and summary.new_versions == 0
    by_sku = {r["sku"]: r for r in catalog.to_pylist()}
    assert by_sku["A1"]["label_colour"] == "red" and by_sku["B2"]["label_colour"] is None
    assert by_sku["B2"]["mode"] == "RGBA" and by_sku["B2"]["has_alpha"] is True
    assert by_sku["C3"]["source_format"] == "WEBP" and by_sku["A1"]["product_id"] == "A1"
    assert CATALOG.stored_version(catalog) == CATALOG.version
    for record in by_sku.values():
        assert load_image(lake.read_bytes(record["image_key"])).shape[:2] == (record["height"], record["width"])
        assert lake.exists(record["original_key"]) and record["original_key"].endswith(
            {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[record["source_format"]])
    # Nothing from the rejected rows reached the lake: 3 originals + 3 normalised images.
    assert len(lake.list("images")) == 6 and summary.objects_written == 6


def test_identical_duplicates_are_merged_silently(shop, lake):
    feed = write_feed(shop / "feed.csv", GOOD + [GOOD[0], GOOD[0]])
    summary = ingest_feed(lake, settings_for(lake), feed)
    assert summary.duplicates_dropped == 2 and summary.quarantined == 0
    assert catalog_of(lake).num_rows == 3 and not manifests.exists(lake, "quarantine")


def test_second_run_reads_and_writes_nothing(shop, lake, monkeypatch):
    bad = shop / "img" / "broken.jpg"
    bad.write_bytes(b"garbage")
    feed = write_feed(shop / "feed.csv", GOOD + [row("X9", "img/broken.jpg"), row("Y9", "gopher://x")])
    settings = settings_for(lake)
    first = ingest_feed(lake, settings, feed)
    assert (first.ingested_new, first.quarantined) == (3, 2)
    assert sorted(first.manifests_written) == sorted([manifest_key("catalog"), manifest_key("quarantine")])
    before = lake_state(lake)

    reads = []
    real_fetch = sources.fetch
    monkeypatch.setattr(sources, "fetch", lambda *a, **k: reads.append(a[0].uri) or real_fetch(*a, **k))
    second = ingest_feed(lake, settings, feed)
    assert lake_state(lake) == before  # no object added, removed or rewritten (mtimes equal)
    assert second.manifests_written == [] and second.objects_written == 0
    assert (second.unchanged, second.ingested_new, second.new_versions) == (3, 0, 0)
    assert second.quarantined == 2  # still reported, not recorded twice
    assert reads == ["img/broken.jpg"]  # only the row that never made it is looked at again


def test_changed_image_gets_a_new_version_and_the_rest_stay(shop, lake):
    feed_rows = [dict(r) for r in GOOD]
    feed = write_feed(shop / "feed.csv", feed_rows)
    settings = settings_for(lake)
    ingest_feed(lake, settings, feed)
    v1 = {r["sku"]: r for r in catalog_of(lake).to_pylist()}

    (shop / "img" / "a.jpg").write_bytes(encode(noise(seed=42), "JPEG"))  # new content
    stat = os.stat(shop / "img" / "b.png")
    os.utime(shop / "img" / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched only
    feed_rows[2]["style"] = "lifestyle"  # label change only
    write_feed(shop / "feed.csv", feed_rows)
    summary = ingest_feed(lake, settings, feed)
    assert (summary.new_versions, summary.ingested_new, summary.unchanged) == (2, 0, 1)

    catalog = catalog_of(lake)
    assert sorted(zip(catalog["sku"].to_pylist(), catalog["version"].to_pylist())) == [
        ("A1", 1), ("A1", 2), ("B2", 1), ("C3", 1), ("C3", 2)]
    current = {r["sku"]: r for r in current_catalog(catalog).to_pylist()}
    assert current["A1"]["version"] == 2 and current["A1"]["image_sha256"] != v1["A1"]["image_sha256"]
    assert current["B2"]["version"] == 1 and current["B2"]["image_sha256"] == v1["B2"]["image_sha256"]
    assert current["B2"]["source_fingerprint"] != v1["B2"]["source_fingerprint"]  # refreshed in place
    assert current["C3"]["version"] == 2 and current["C3"]["style"] == "lifestyle"
    assert current["C3"]["image_key"] == v1["C3"]["image_key"]  # same pixels, not stored again
    assert summary.objects_written == 2  # only A1's new original and normalised image

    before = lake_state(lake)
    again = ingest_feed(lake, settings, feed)
    assert lake_state(lake) == before and again.unchanged == 3 and again.manifests_written == []


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_every_feed_format_is_read(shop, lake, fmt):
    rows = [dict(r, **{"Colour Name": "navy", "product_id": "P-1" if r["sku"] == "A1" else ""}) for r in GOOD]
    feed = write_feed(shop / f"feed.{fmt}", rows)
    parsed, feed_dir = read_feed(feed)
    assert feed_dir == os.path.realpath(shop)
    assert [r.sku for r in parsed] == ["A1", "B2", "C3"] and [r.feed_row for r in parsed] == [1, 2, 3]
    assert dict(parsed[0].labels) == {"label_colour": "red", "label_colour_name": "navy"}
    assert [r.product_id for r in parsed] == ["P-1", "B2", "C3"]  # product_id defaults to the SKU
    summary = ingest_feed(lake, settings_for(lake), feed)
    assert summary.ingested_new == 3
    assert set(catalog_of(lake)["label_colour_name"].to_pylist()) == {"navy"}


def test_missing_required_column_refuses_the_feed_in_one_line(shop, lake):
    feed = write_feed(shop / "feed.csv", [{k: v for k, v in r.items() if k != "style"} for r in GOOD])
    with pytest.raises(FeedError) as info:
        ingest_feed(lake, settings_for(lake), feed)
    message = str(info.value)
    assert "feed.csv" in message and "'style'" in message and "\n" not in message
    assert lake.list() == []


def test_unparseable_jsonl_line_is_quarantined_not_fatal(shop, lake):
    feed = shop / "feed.jsonl"
    write_feed(feed, GOOD)
    feed.write_text(feed.read_text() + "{not json\n[1, 2]\n")
    summary = ingest_feed(lake, settings_for(lake), str(feed))
    assert summary.ingested_new == 3 and summary.by_reason == {"malformed_row": 2}
    assert sorted(quarantine_of(lake)["feed_row"].to_pylist()) == [4, 5]


def test_resolve_refuses_schemes_and_escapes(shop, tmp_path):
    settings = load_settings(lake_url=str(tmp_path / "lake"))
    feed_dir = str(shop)
    ok = resolve("img/a.jpg", feed_dir=feed_dir, settings=settings)
    assert ok.scheme == "file" and ok.path == str(shop / "img" / "a.jpg")
    assert resolve(f"file://{shop}/img/a.jpg", feed_dir=feed_dir, settings=settings).path == ok.path
    assert resolve(str(shop / "img" / "a.jpg"), feed_dir=feed_dir, settings=settings).path == ok.path
    refused = {
        "ftp://example.com/x.jpg": "unknown_scheme",
        "javascript:alert(1)": "unknown_scheme",
        "data:image/png;base64,AAAA": "unknown_scheme",
        "../../etc/passwd": "unsafe_path",
        "/etc/passwd": "unsafe_path",
        "file:///etc/passwd": "unsafe_path",
        "file://otherhost/share/x.jpg": "unsafe_path",
        "img/../../outside.jpg": "unsafe_path",
        "img/a.jpg\x00.png": "unsafe_path",
    }
    for uri, reason in refused.items():
        with pytest.raises(SourceRejected) as info:
            resolve(uri, feed_dir=feed_dir, settings=settings)
        assert info.value.reason == reason, uri
    # A folder listed in CE_LOCAL_ROOTS is allowed; schemes can be narrowed by configuration.
    outside = tmp_path / "shared"
    outside.mkdir()
    wider = load_settings(lake_url=str(tmp_path / "lake"), local_roots=[str(outside)],
                          allowed_uri_schemes=["file"])
    assert resolve(str(outside / "x.jpg"), feed_dir=feed_dir, settings=wider).path == str(outside / "x.jpg")
    with pytest.raises(SourceRejected, match="not allowed"):
        resolve("https://example.com/x.jpg", feed_dir=feed_dir, settings=wider)


def test_relative_paths_in_a_remote_feed_stay_beside_it(tmp_path, monkeypatch):
    settings = load_settings(lake_url=str(tmp_path / "lake"))
    source = resolve("img/a.jpg", feed_dir="s3://shop/feeds", settings=settings)
    assert (source.scheme, source.path) == ("s3", "shop/feeds/img/a.jpg")
    with pytest.raises(SourceRejected) as info:
        resolve("../private/x.jpg", feed_dir="s3://shop/feeds", settings=settings)
    assert info.value.reason == "unsafe_path"
    # s3 sources use the configured endpoint/credentials even when the lake is local.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("CE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = load_settings(lake_url=str(tmp_path / "lake"))
    assert s3.storage_options() == {} and s3.s3_options()["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"


def test_fetch_limits_and_special_files(shop, tmp_path):
    settings = load_settings(lake_url=str(tmp_path / "lake"), max_image_bytes=100)
    blob = shop / "blob.bin"
    blob.write_bytes(b"x" * 101)
    source = resolve("blob.bin", feed_dir=str(shop), settings=settings)
    with pytest.raises(SourceRejected) as info:
        fetch(source, settings)
    assert info.value.reason == "too_large"
    assert fetch(source, settings, max_bytes=101) == b"x" * 101
    os.mkfifo(shop / "pipe.jpg")  # would block forever if opened
    with pytest.raises(SourceRejected) as info:
        fetch(resolve("pipe.jpg", feed_dir=str(shop), settings=settings), settings)
    assert info.value.reason == "fetch_error"


@pytest.fixture()
def http_shop(shop):
    """The shop folder served over HTTP on a free loopback port."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(shop)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_sources_are_ingested_incrementally(shop, http_shop, lake, tmp_path):
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    rows = [row("H1", f"{http_shop}/img/a.jpg"), row("H2", f"{http_shop}/img/b.png"),
            row("H3", f"{http_shop}/img/nope.jpg")]
    feed = write_feed(feeds / "feed.jsonl", rows)
    settings = settings_for(lake)
    summary = ingest_feed(lake, settings, feed)
    assert (summary.ingested_new, summary.by_reason) == (2, {"not_found": 1})
    by_sku = {r["sku"]: r for r in catalog_of(lake).to_pylist()}
    assert by_sku["H1"]["source_fingerprint"].startswith("http:") and by_sku["H2"]["mode"] == "RGBA"
    assert lake.read_bytes(by_sku["H1"]["original_key"]) == (shop / "img" / "a.jpg").read_bytes()
    before = lake_state(lake)
    again = ingest_feed(lake, settings, feed)  # Last-Modified + Content-Length unchanged
    assert again.unchanged == 2 and lake_state(lake) == before


def test_flow_ingests_a_small_feed_in_batches(prefect_harness, shop, lake, tmp_path):
    from catalog_enhance.flows.ingest import ingest_catalog

    feed = write_feed(shop / "feed.csv", GOOD + [row("Z1", "ftp://x/y.jpg"), row("Z2", "img/a.jpg", style="")])
    summary = ingest_catalog(feed=feed, lake_url=lake.url, batch_size=2)
    assert (summary.rows, summary.ingested_new, summary.quarantined) == (5, 3, 2)
    assert summary.by_reason == {"unknown_scheme": 1, "missing_label": 1}
    assert sorted(catalog_of(lake)["sku"].to_pylist()) == ["A1", "B2", "C3"]
    assert sorted(quarantine_of(lake)["sku"].to_pylist()) == ["Z1", "Z2"]
    assert summary.counts()["quarantined"] == 2
    artifacts = {a["key"]: a for a in _artifacts_of(summary.run_id)}
    assert set(artifacts) == {"ingest-summary", "ingest-quarantine"}
    assert "| quarantined | 2 |" in artifacts["ingest-summary"]["data"]
    assert "Z1" in str(artifacts["ingest-quarantine"]["data"])


def _artifacts_of(flow_run_id: str) -> list[dict]:
    # Straight to the API: Artifact.get's request body (nulls) is refused by this server version.
    import httpx
    from prefect.settings import PREFECT_API_URL

    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter",
                          json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 10})
    response.raise_for_status()
    return response.json()


def test_a_failing_batch_fails_the_flow(prefect_harness, shop, lake, monkeypatch):
    import catalog_enhance.flows.ingest as ingest_flow

    def broken(*args, **kwargs):
        raise OSError("lake unreachable")

    monkeypatch.setattr(ingest_flow, "ingest_batch", broken)
    monkeypatch.setattr(ingest_flow, "ingest_batch_task", ingest_flow.ingest_batch_task.with_options(retries=0))
    feed = write_feed(shop / "feed.csv", GOOD)
    state = ingest_flow.ingest_catalog(feed=feed, lake_url=lake.url, return_state=True)
    assert state.is_failed()
    with pytest.raises(OSError, match="lake unreachable"):
        state.result()
    assert not manifests.exists(lake, "catalog")


@pytest.mark.s3
def test_s3_feed_and_sources_on_a_loopback_s3_server(s3_server, shop, lake):
    settings = settings_for(lake)
    fs = sources.filesystem("s3", settings)
    bucket = f"ce-sources-{os.getpid()}"
    fs.mkdir(bucket)
    for name in ("a.jpg", "b.png"):
        fs.pipe_file(f"{bucket}/feeds/img/{name}", (shop / "img" / name).read_bytes())
    fs.pipe_file(f"{bucket}/private/c.webp", (shop / "img" / "c.webp").read_bytes())
    feed_rows = [row("S1", "img/a.jpg"), row("S2", f"s3://{bucket}/feeds/img/b.png"),
                 row("S3", "../private/c.webp"), row("S4", "img/missing.jpg")]
    feed = f"s3://{bucket}/feeds/feed.csv"
    fs.pipe_file(f"{bucket}/feeds/feed.csv", Path(write_feed(shop / "feed.csv", feed_rows)).read_bytes())

    summary = ingest_feed(lake, settings, feed)
    assert summary.ingested_new == 2 and summary.by_reason == {"unsafe_path": 1, "not_found": 1}
    by_sku = {r["sku"]: r for r in catalog_of(lake).to_pylist()}
    assert by_sku["S1"]["source_fingerprint"].startswith("s3:etag=") and by_sku["S2"]["mode"] == "RGBA"
    before = lake_state(lake)
    assert ingest_feed(lake, settings, feed).unchanged == 2 and lake_state(lake) == before
