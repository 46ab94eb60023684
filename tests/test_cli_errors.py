"""A user's mistake at the command line is one line naming the item and the reason, exit 2, found
before any flow (so any Prefect server) starts or any model loads; `--debug` shows the traceback
(issue 11, items 7, 8, 9). Each case runs the real CLI in-process with typer's runner; the flows
and the model loader are replaced by tripwires that fail the test if they are ever reached."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from catalog_enhance.flows import cli

RUNNER = CliRunner()
# Variables a case must not inherit from the environment or from another test.
CLEAN_ENV = {name: None for name in ("CE_LOCAL_ROOTS", "CE_MAX_IMAGE_PIXELS", "CE_LAKE_URL", "CE_CREATE_BUCKET")}


@pytest.fixture(autouse=True)
def tripwires(monkeypatch):
    """Reaching a flow or loading a model fails the case: every check must come first."""
    import catalog_enhance.flows.ingest
    import catalog_enhance.flows.nightly
    import catalog_enhance.flows.pairs
    import catalog_enhance.tasks.enhance

    monkeypatch.setattr(catalog_enhance.flows.ingest, "ingest_catalog", tripwire)
    monkeypatch.setattr(catalog_enhance.flows.pairs, "make_pairs", tripwire)
    monkeypatch.setattr(catalog_enhance.flows.nightly, "nightly", tripwire)
    monkeypatch.setattr(catalog_enhance.tasks.enhance, "load_for_params", tripwire)


def tripwire(*args, **kwargs):
    raise AssertionError("a flow started or a model loaded before the mistake was found")


def run(args: list[str], **env: str | None):
    result = RUNNER.invoke(cli.app, args, env={**CLEAN_ENV, **env})
    lines = result.output.splitlines()
    return result.exit_code, lines


def assert_one_line(code: int, lines: list[str], expected_start: str, *reasons: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected_start), lines[0]
    assert all(reason in lines[0] for reason in reasons), lines[0]
    assert "Traceback" not in lines[0]


@pytest.fixture()
def feeds(tmp_path, monkeypatch):
    """The feeds of the issue, in the working folder, so messages name them as typed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "missing-column.csv").write_text("sku,image_uri,category\nA,a.png,toys\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "garbage.csv").write_bytes(bytes(range(128, 256)) * 4)
    (tmp_path / "utf16.csv").write_bytes("sku,image_uri,category,style\nA,a.png,toys,studio\n".encode("utf-16"))
    (tmp_path / "feed.txt").write_text("sku,image_uri,category,style\n")
    return tmp_path


@pytest.mark.parametrize("command", [["ingest", "--feed"], ["nightly", "--feed"], ["enhance", "--feed"]])
@pytest.mark.parametrize("feed, message", [
    ("missing-column.csv",
     "feed error: missing-column.csv: missing required column 'style' (found: sku, image_uri, category)"),
    ("empty.csv", "feed error: empty.csv: the feed is empty"),
    ("garbage.csv", "feed error: garbage.csv: the header line is not UTF-8 text"),
    ("utf16.csv", "feed error: utf16.csv: the feed is UTF-16/32 text; save it as UTF-8"),
    ("nonexistent.csv", "feed error: nonexistent.csv: feed not found"),
    ("feed.txt", "feed error: feed.txt: unknown feed format (use .csv, .jsonl, .ndjson, .parquet, .pq)"),
])
def test_a_feed_that_cannot_be_used_is_one_line_and_exit_2(feeds, command, feed, message):
    code, lines = run([*command, feed, "--lake", str(feeds / "lake")])
    assert_one_line(code, lines, message)
    assert not (feeds / "lake").exists()  # refused before the lake was even created


@pytest.mark.parametrize("variable, value, message", [
    ("CE_LOCAL_ROOTS", "/data/images", "configuration error: CE_LOCAL_ROOTS='/data/images': not valid JSON ("),
    ("CE_MAX_IMAGE_PIXELS", "abc", "configuration error: CE_MAX_IMAGE_PIXELS='abc': not an integer"),
    ("CE_CREATE_BUCKET", "perhaps", "configuration error: CE_CREATE_BUCKET='perhaps': not true or false"),
])
def test_a_bad_setting_is_named_with_its_value(tmp_path, variable, value, message):
    code, lines = run(["pairs", "--lake", str(tmp_path / "lake")], **{variable: value})
    assert_one_line(code, lines, message)


def test_a_bad_training_preset_is_one_line(tmp_path, monkeypatch):
    import catalog_enhance.flows.train

    monkeypatch.setattr(catalog_enhance.flows.train, "train_models", tripwire)
    code, lines = run(["train", "espcn", "--preset", "nope", "--lake", str(tmp_path / "lake")])
    assert_one_line(code, lines, "configuration error: model 'espcn' has no preset 'nope'")


@pytest.mark.parametrize("model, option", [("srcnn", "data.scael=3"), ("gan", "data.z_dmi=8")])
def test_a_mistyped_training_option_is_one_line_before_training_starts(tmp_path, monkeypatch, model, option):
    """An unknown option (an SR data key, a GAN key) is refused by the trainer's typed options,
    naming the key, before any flow runs."""
    import catalog_enhance.flows.train

    monkeypatch.setattr(catalog_enhance.flows.train, "train_models", tripwire)
    code, lines = run(["train", model, "--set", option, "--lake", str(tmp_path / "lake")])
    assert_one_line(code, lines, "configuration error:", option.split("=")[0].split(".")[-1])


def test_a_missing_or_unusable_enhance_input_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "photos").mkdir()
    lake = ["--lake", str(tmp_path / "lake")]
    assert_one_line(*run(["enhance", "--input", "nope/", "--output", "out", *lake]),
                    "input error: nope/: no such file or folder")
    assert_one_line(*run(["enhance", "--input", "photos", "--output", "a-file/out", *lake]),
                    "input error: a-file/out: cannot write the output there (")
    assert_one_line(*run(["enhance", "--input", "a-file", "--output", "out", *lake]),
                    "input error: a-file: neither a folder, an image")
    assert_one_line(*run(["enhance", "--input", "photos", *lake]), "input error: --input needs --output")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_an_s3_endpoint_that_is_down_is_one_line_not_a_minute_of_retries(tmp_path):
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    code, lines = run(["pairs", "--lake", "s3://shop/lake"], CE_S3_ENDPOINT_URL=endpoint, **S3_ENV)
    assert_one_line(code, lines, f"lake error: s3://shop/lake: cannot reach the S3 endpoint {endpoint} (tried 2 times)")


@pytest.mark.s3
def test_a_mistyped_bucket_is_one_line(s3_server):
    code, lines = run(["pairs", "--lake", "s3://nope-not-made/lake"])
    assert_one_line(code, lines, "lake error: s3://nope-not-made/lake: bucket 'nope-not-made' does not exist "
                                 "(set CE_CREATE_BUCKET=true to create it)")


@pytest.fixture(scope="module")
def s3_with_auth():
    """A moto server that checks credentials (moto's own default is to accept any)."""
    port = _free_port()
    code = ("import sys, time\nfrom moto.server import ThreadedMotoServer\n"
            f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start()\n"
            "print('ready', flush=True)\ntime.sleep(3600)\n")
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.s3
def test_refused_s3_credentials_are_one_line(s3_with_auth):
    code, lines = run(["pairs", "--lake", "s3://shop/lake"], CE_S3_ENDPOINT_URL=s3_with_auth, **S3_ENV)
    assert_one_line(code, lines, f"lake error: s3://shop/lake: {s3_with_auth} refused the credentials (InvalidAccessKeyId")


def test_an_unexpected_error_is_one_line_exit_1_with_a_hint(tmp_path, monkeypatch):
    import catalog_enhance.flows.pairs

    def broken(**kwargs):
        raise ZeroDivisionError("something nobody expected")

    monkeypatch.setattr(catalog_enhance.flows.pairs, "make_pairs", broken)
    monkeypatch.setattr(cli, "_check_catalog", lambda settings: None)  # as if something was ingested
    code, lines = run(["pairs", "--lake", str(tmp_path / "lake")])
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == "error: ZeroDivisionError: something nobody expected (run with --debug for the traceback)"


def test_pairs_before_any_ingestion_is_one_line_before_the_flow(tmp_path):
    code, lines = run(["pairs", "--lake", str(tmp_path / "lake")])
    assert_one_line(code, lines, "input error:", "has no catalog yet", "catalog-enhance ingest")


def test_debug_shows_the_traceback(tmp_path):
    """Through the real entry point in a fresh process (no tripwires needed: the feed fails first)."""
    command = [sys.executable, "-c", "from catalog_enhance.flows.cli import main; main()"]
    args = ["ingest", "--feed", str(tmp_path / "nonexistent.csv"), "--lake", str(tmp_path / "lake")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    quiet = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300)
    loud = subprocess.run([*command, "--debug", *args], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 2 and quiet.stdout == ""
    assert quiet.stderr.strip().splitlines() == [f"feed error: {tmp_path / 'nonexistent.csv'}: feed not found"]
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].endswith("FeedError: " + f"{tmp_path / 'nonexistent.csv'}: feed not found")


def test_the_console_drops_tracebacks_unless_debug(monkeypatch, capsys):
    """An S3 outage mid-run: Prefect logs every failed attempt with its traceback (60+ lines each,
    ~500 for one outage); on the CLI's console each is its one-line message."""
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(cli, "_debug", False)
    cli._quiet_console()
    cli._quiet_console()  # idempotent: one filter per handler
    assert len(handler.filters) == 1
    log = logging.getLogger("test.outage")
    for attempt in range(3):
        try:
            raise ConnectionRefusedError(f"attempt {attempt}: connect call failed")
        except ConnectionRefusedError:
            log.error("Task run failed with exception (attempt %d)", attempt, exc_info=True)
    err = capsys.readouterr().err
    assert err.splitlines() == [f"Task run failed with exception (attempt {i})" for i in range(3)]
