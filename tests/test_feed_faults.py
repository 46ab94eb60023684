"""Faults in what users hand us (issue 11, items 2, 3, 8, 9, 10): every physical feed row lands in
the catalog or in quarantine exactly once, missing-value spellings are missing labels, a refused
connection is a retried `fetch_error`, a mistyped bucket is an error, and ad-hoc runs check their
paths first, never overwrite one output with another and always leave their summary."""

from __future__ import annotations

import csv
import functools
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_fixtures import encode, noise
from PIL import Image

from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.ingest.run import ingest_feed
from catalog_enhance.tasks.lake.access import LakeError
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.sources import uris
from catalog_enhance.tasks.sources.feeds import FeedError, read_feed
from catalog_enhance.tasks.sources.uris import SourceRejected, fetch, resolve


def settings_for(lake, **overrides):
    return load_settings(lake_url=lake.url, io_concurrency=2, batch_size=8, **overrides)


@pytest.fixture()
def shop(tmp_path):
    folder = tmp_path / "shop"
    (folder / "img").mkdir(parents=True)
    for i in range(4):
        (folder / "img" / f"{i}.png").write_bytes(encode(noise(seed=i), "PNG"))
    return folder


def quarantine_rows(lake) -> list[dict]:
    return manifests.read(lake, "quarantine").to_pylist()


def catalog_skus(lake) -> list[str]:
    return manifests.read(lake, "catalog").column("sku").to_pylist()


# -- item 3: one physical line, one row -------------------------------------------------------
def test_an_unterminated_quote_spoils_only_its_own_line(shop, lake):
    feed = shop / "feed.csv"
    feed.write_text("sku,image_uri,category,style\n"
                    "A,img/0.png,toys,studio\n"
                    'B,"img/1.png,toys,studio\n'  # the quote never closes
                    "C,img/2.png,toys,studio\n"
                    "D,img/3.png,toys,studio\n")
    summary = ingest_feed(lake, settings_for(lake), str(feed))

    assert summary.counts()["feed rows"] == 4
    assert sorted(catalog_skus(lake)) == ["A", "C", "D"]
    [bad] = quarantine_rows(lake)
    assert bad["reason"] == "malformed_row" and bad["feed_row"] == 2
    assert "line 3" in bad["detail"] and "unterminated quote" in bad["detail"]


def test_every_physical_row_lands_once_whatever_is_wrong_with_it(shop, lake):
    """BOM, CRLF, blank lines, a ragged short row, a row with too many fields, bad quoting, a
    non-UTF-8 line and NaN-spelled labels, in one feed: each data line is in the catalog or in
    quarantine exactly once."""
    lines = [
        "A,img/0.png,toys,studio",
        "B,img/1.png,toys",  # ragged: style missing
        "C,img/2.png,toys,studio,extra",  # more fields than columns
        'D,"img/3.png"x,toys,studio',  # text after a closing quote
        "E,img/0.png,NaN,studio",  # a missing label spelled NaN
        "",  # blank: not a row
        "F,img/1.png,toys,null",
        "G,img/2.png,toys,studio",
    ]
    data = b"\xef\xbb\xbfsku,image_uri,category,style\r\n" + "\r\n".join(lines).encode() + b"\r\n"
    data += b"H,img/3.png,caf\xe9,studio\r\n"  # Latin-1, not UTF-8
    data += b'I,img/3.png,toys,"studio\r\n'  # unterminated quote on the last line
    feed = shop / "feed.csv"
    feed.write_bytes(data)
    summary = ingest_feed(lake, settings_for(lake), str(feed))

    skus = {line.split(",")[0] for line in lines if line} | {"H", "I"}
    assert summary.counts()["feed rows"] == len(skus) == 9
    quarantine = quarantine_rows(lake)
    landed = catalog_skus(lake) + [r["sku"] or f"row {r['feed_row']}" for r in quarantine]
    assert len(landed) == len(skus)
    assert sorted(catalog_skus(lake)) == ["A", "G"]
    reasons = {r["sku"] or r["feed_row"]: r["reason"] for r in quarantine}
    # Unparseable lines have no SKU: they are known by their row number.
    assert reasons == {"B": "missing_label", "E": "missing_label", "F": "missing_label",
                       3: "malformed_row", 4: "malformed_row", 8: "malformed_row", 9: "malformed_row"}
    details = " | ".join(r["detail"] for r in quarantine)
    for needle in ("line 4 has 5 fields", "line 5 is not valid CSV", "line 10 is not UTF-8",
                   "line 11 is not valid CSV (unterminated quote"):
        assert needle in details


@pytest.mark.parametrize("spelling", ["NaN", "nan", "null", "None", "NULL", "N/A", ""])
def test_missing_value_spellings_are_missing_labels_not_categories(shop, spelling):
    feed = shop / "feed.csv"
    feed.write_text(f"sku,image_uri,category,style,colour\nA,img/0.png,{spelling},studio,{spelling}\n"
                    f"B,img/1.png,toys,studio,{spelling.lower()}\n")
    rows, _ = read_feed(str(feed))
    assert rows[0].category is None and dict(rows[0].labels) == {"label_colour": None}
    assert rows[1].category == "toys" and dict(rows[1].labels) == {"label_colour": None}


def test_parquet_nan_cells_are_missing_too(shop):
    feed = shop / "feed.parquet"
    pq.write_table(pa.table({"sku": ["A"], "image_uri": ["img/0.png"], "category": ["toys"],
                             "style": ["studio"], "weight": [float("nan")]}), feed)
    [row], _ = read_feed(str(feed))
    assert dict(row.labels) == {"label_weight": None}


def test_a_catalog_ingested_before_still_reads_nan_labels_as_missing():
    from catalog_enhance.tasks.catalog.labels import UNKNOWN_LABEL, LabelVocabulary

    table = pa.table({"category": ["toys", "NaN", None, "null", "hats"], "style": ["studio"] * 5})
    vocab = LabelVocabulary.from_table(table, ["category"])
    assert vocab.labels == ((UNKNOWN_LABEL, "hats", "toys"),)
    assert vocab.encode(table).flatten().tolist() == [2, 0, 0, 0, 1]


@pytest.mark.parametrize("content, reason", [
    (b"", "the feed is empty"),
    (b"\xef\xbb\xbf \r\n\n", "the feed is empty"),
    ("sku,image_uri,category,style\nA,a.png,toys,studio\n".encode("utf-16"), "UTF-16/32"),
    ("sku,image_uri,category,style\n".encode("utf-16-be"), "UTF-16/32"),  # no BOM
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "the header line is not UTF-8 text"),
    (b'sku,"image_uri,category,style\n', "the header line is not valid CSV"),
])
def test_a_feed_that_cannot_be_read_is_refused_in_one_line(tmp_path, content, reason):
    feed = tmp_path / "feed.csv"
    feed.write_bytes(content)
    with pytest.raises(FeedError) as info:
        read_feed(str(feed))
    assert str(info.value).startswith(f"{feed}: ") and reason in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["feed.csv", "feed.parquet", "feed.jsonl"])
def test_check_feed_refuses_a_missing_column_in_every_format_without_reading_rows(tmp_path, name):
    from catalog_enhance.tasks.sources.feeds import check_feed

    feed = tmp_path / name
    rows = [{"sku": "A", "image_uri": "a.png", "category": "toys"}]
    if name.endswith(".csv"):
        feed.write_text('sku,image_uri,category\nA,"a.png,toys\n')  # a bad row: not looked at
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), feed)
    else:
        feed.write_text('{"sku": "A", "image_uri": "a.png", "category": "toys"}\n')
    with pytest.raises(FeedError, match=r"missing required column 'style' \(found: sku, image_uri, category\)"):
        check_feed(str(feed))
    if name.endswith(".csv"):  # a good header: the columns, whatever the rows hold
        feed.write_text('sku,image_uri,category,style\nA,"a.png,toys\n')
        assert check_feed(str(feed)) == ["sku", "image_uri", "category", "style"]


def test_jsonl_lines_that_are_not_utf8_are_quarantined_alone(shop, lake):
    feed = shop / "feed.jsonl"
    feed.write_bytes(b'{"sku": "A", "image_uri": "img/0.png", "category": "toys", "style": "studio"}\n'
                     b'{"sku": "B", "image_uri": "img/1.png", "category": "caf\xe9", "style": "studio"}\n'
                     b'{"sku": "C", "image_uri": "img/2.png", "category": "toys", "style": "studio"}\n')
    summary = ingest_feed(lake, settings_for(lake), str(feed))
    assert summary.counts()["feed rows"] == 3 and sorted(catalog_skus(lake)) == ["A", "C"]
    [bad] = quarantine_rows(lake)
    assert bad["reason"] == "malformed_row" and "line 2 is not UTF-8" in bad["detail"]


# -- item 10: a refused connection is a retried fetch_error --------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def delays(monkeypatch):
    recorded: list[float] = []
    monkeypatch.setattr(uris, "_sleep", recorded.append)
    return recorded


def test_a_refused_connection_is_a_fetch_error_retried_with_bounded_jittered_backoff(delays):
    settings = load_settings(fetch_retries=3, fetch_backoff_seconds=0.5)
    source = resolve(f"http://127.0.0.1:{_closed_port()}/x.jpg", feed_dir="/nowhere", settings=settings)
    with pytest.raises(SourceRejected) as info:
        fetch(source, settings)
    assert info.value.reason == "fetch_error"
    assert "tried 4 times" in info.value.detail and "refused" in info.value.detail.lower()
    assert len(delays) == 3  # a retry after each failed attempt but the last
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(uris.MAX_BACKOFF_SECONDS, 0.5 * 2 ** attempt)


class _Statuses(http.server.BaseHTTPRequestHandler):
    """404 for /missing.png; /flaky.png answers 503 `fails` times, then an image."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        state = self.server.state  # type: ignore[attr-defined]
        state["requests"] += 1
        if self.path == "/flaky.png" and state["fails"] > 0:
            state["fails"] -= 1
            self.send_response(503)
            self.end_headers()
            return
        if self.path != "/flaky.png":
            self.send_response(404)
            self.end_headers()
            return
        body = encode(noise(seed=3), "PNG")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802 - answers without counting toward /flaky.png's failures
        self.send_response(200 if self.path == "/flaky.png" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Statuses)
    server.state = {"requests": 0, "fails": 2}  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_404_is_not_found_at_once_and_a_503_is_retried_until_it_answers(http_server, delays):
    settings = load_settings(fetch_retries=3)
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    with pytest.raises(SourceRejected) as info:
        fetch(resolve(f"{base}/missing.png", feed_dir="/nowhere", settings=settings), settings)
    assert info.value.reason == "not_found" and delays == []
    data = fetch(resolve(f"{base}/flaky.png", feed_dir="/nowhere", settings=settings), settings)
    assert data.startswith(b"\x89PNG") and len(delays) == 2


def test_an_unreachable_image_is_quarantined_as_fetch_error_not_not_found(shop, lake, delays):
    feed = shop / "feed.csv"
    feed.write_text(f"sku,image_uri,category,style\nA,img/0.png,toys,studio\n"
                    f"B,http://127.0.0.1:{_closed_port()}/x.jpg,toys,studio\n")
    ingest_feed(lake, settings_for(lake, fetch_retries=1), str(feed))
    [bad] = quarantine_rows(lake)
    assert (bad["sku"], bad["reason"]) == ("B", "fetch_error") and len(delays) == 1


# -- item 8: a mistyped bucket is an error ------------------------------------------------------
@pytest.mark.s3
def test_a_missing_bucket_is_an_error_unless_creation_is_asked_for(s3_server):
    import uuid

    bucket = f"ce-typo-{uuid.uuid4().hex[:8]}"
    with pytest.raises(LakeError, match=rf"s3://{bucket}/lake: bucket '{bucket}' does not exist "
                                        r"\(set CE_CREATE_BUCKET=true to create it\)"):
        Lake.from_url(f"s3://{bucket}/lake")
    lake = Lake.from_url(f"s3://{bucket}/lake", create_bucket=True)
    lake.write_bytes("a.bin", b"x")
    assert Lake.from_url(f"s3://{bucket}/lake").read_bytes("a.bin") == b"x"


# -- items 2 and 9: ad-hoc runs -----------------------------------------------------------------
@pytest.fixture(scope="module")
def model_lake(tmp_path_factory) -> Lake:
    """A lake with one tiny trained x2 ESPCN (a few steps: the pixels do not matter here)."""
    from sr_lake import build_sr_lake

    from catalog_enhance.tasks.lake.model_registry import register_version
    from catalog_enhance.tasks.runtime import select_runtime
    from catalog_enhance.tasks.train.config import make_config
    from catalog_enhance.tasks.train.loop import train_model

    lake = Lake.from_url(str(tmp_path_factory.mktemp("models") / "lake"))
    build_sr_lake(lake, train=2, val=1, size=24)
    register_version(lake, train_model(make_config("espcn", "tiny", steps=2), lake, runtime=select_runtime("cpu")))
    return lake


@pytest.fixture()
def enhance_into(model_lake):
    """`enhance_folder` with the lake's model loaded once (call it with input and output)."""
    from catalog_enhance.tasks.enhance import EnhanceParams, load_for_params
    from catalog_enhance.tasks.runtime import select_runtime

    params = EnhanceParams()
    runtime = select_runtime("cpu")
    _, models = load_for_params(model_lake, params, model="espcn", runtime=runtime)  # no gate ran: name it
    return functools.partial(_run_folder, models=models, params=params, runtime=runtime,
                             settings=load_settings(lake_url=model_lake.root))


def _run_folder(input, output, *, models, params, runtime, settings, **kwargs):
    from catalog_enhance.tasks.enhance import enhance_folder

    return enhance_folder(str(input), Path(output), models, params, runtime=runtime, settings=settings, **kwargs)


def _summary(path: Path) -> dict[str, dict]:
    with path.open() as handle:
        return {row["input"]: row for row in csv.DictReader(handle)}


def test_outputs_of_same_stem_inputs_never_overwrite_each_other(tmp_path, enhance_into):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("a.jpg", 1), ("a.png", 2), ("a_png.png", 3), ("a.jpg.png", 4)):
        Image.fromarray(noise(12, 16, seed=seed)).save(folder / name)
    result = enhance_into(folder, tmp_path / "out")

    assert result.enhanced == 4
    outputs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert outputs == ["a.jpg.png", "a.jpg.png.png", "a.png.png", "a_png.png.png"]
    pixels = {np.asarray(Image.open(tmp_path / "out" / name)).tobytes() for name in outputs}
    assert len(pixels) == 4  # four different images, none written over another
    assert {row["output"] for row in _summary(result.summary_path).values()} == set(outputs)


def test_feed_outputs_are_named_by_sku_injectively(tmp_path, shop, enhance_into):
    feed = shop / "feed.csv"
    feed.write_text("sku,image_uri,category,style\n"
                    "a/b,img/0.png,toys,studio\n"
                    "a_b,img/1.png,toys,studio\n"
                    "a%2Fb,img/2.png,toys,studio\n"
                    "a_b,img/3.png,toys,studio\n"  # a repeated SKU: its own file, by row
                    ",img/3.png,toys,studio\n")
    result = enhance_into(feed, tmp_path / "out")
    outputs = {row["input"]: row["output"] for row in _summary(result.summary_path).values()}
    assert outputs == {"row 1 (SKU a/b)": "a%2Fb.png", "row 2 (SKU a_b)": "a_b.png",
                       "row 3 (SKU a%2Fb)": "a%252Fb.png", "row 4 (SKU a_b)": "a_b@row4.png", "row 5": "@row5.png"}
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


def test_a_single_image_is_an_input(tmp_path, enhance_into):
    image = tmp_path / "one.jpg"
    Image.fromarray(noise(12, 16, seed=1)).save(image)
    result = enhance_into(image, tmp_path / "out")
    assert result.enhanced == 1 and (tmp_path / "out" / "one.jpg.png").is_file()


def test_paths_are_checked_before_anything_loads(tmp_path):
    from catalog_enhance.tasks.enhance import InputError, open_inputs

    (tmp_path / "file").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "in").mkdir()
    cases = {
        str(tmp_path / "nope"): (tmp_path / "out", "no such file or folder"),
        str(tmp_path / "notes.txt"): (tmp_path / "out", "neither a folder, an image"),
        str(tmp_path / "in"): (tmp_path / "file" / "out", "cannot write the output there"),
    }
    for input, (output, reason) in cases.items():
        with pytest.raises(InputError, match=reason):
            open_inputs(input, output)
    with pytest.raises(InputError, match="must not be the input folder"):
        open_inputs(str(tmp_path / "in"), tmp_path / "in")


def test_the_summary_is_written_when_some_images_fail_and_when_the_run_stops(tmp_path, enhance_into,
                                                                            monkeypatch):
    from catalog_enhance.tasks.enhance import folder

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(noise(12, 16, seed=len(name))).save(inputs / name)
    (inputs / "broken.png").write_bytes(b"not a png")
    result = enhance_into(inputs, tmp_path / "out")
    assert (result.enhanced, result.failed) == (3, 1) and len(_summary(result.summary_path)) == 4

    real = folder.enhance_to_png
    calls = []

    def fails_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the machine ran out of something")
        return real(*args, **kwargs)

    monkeypatch.setattr(folder, "enhance_to_png", fails_on_the_second)
    with pytest.raises(RuntimeError):
        enhance_into(inputs, tmp_path / "stopped")
    summary = _summary(tmp_path / "stopped" / folder.SUMMARY_FILE)
    assert list(summary) == ["a.png"] and summary["a.png"]["status"] == "enhanced"
