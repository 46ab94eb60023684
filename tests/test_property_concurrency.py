"""Property test (issue 11, acceptance): random feeds, run as concurrent ingest / enhance / register
processes with kill -9 at random moments, on a local lake and on the moto S3 server, keep the
manifests' invariants:

- every feed row ends up in the catalog or in quarantine, exactly once;
- every key a manifest names exists and decodes;
- no manifest row is ever lost (a row seen in any snapshot during the run is still there);
- reruns converge: running the feeds again changes no current product, and records nothing new
  unless two feeds disagree about a SKU (then the later feed's row wins, each time).

The writers are real processes (`manifest_writers.py`); enhancement and registration append the
rows those stages append (a model is not trained here: the manifests are what is under test).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from catalog_enhance.data_contracts.enhancements import ENHANCEMENT_KEY_COLUMNS
from catalog_enhance.tasks.ingest.run import ingest_feed
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake
from conftest import make_s3_bucket
from manifest_processes import check_finished, run_together, write_feed
from manifest_writers import png

SKUS = ["A", "B", "C", "D"]
# Row identity of each manifest: a row seen once must be found again under this key.
IDENTITY = {
    "catalog": ("sku", "version", "image_sha256", "style"),
    "quarantine": manifests.QUARANTINE_KEY,
    "enhancements": ENHANCEMENT_KEY_COLUMNS,
    "models": ("name", "version"),
    "training_curves": ("model", "version", "step", "loss"),
}

# A feed row: a SKU, a style ("" is a missing label), an image (None: a file that does not exist).
feed_rows = st.lists(
    st.fixed_dictionaries({
        "sku": st.sampled_from(SKUS),
        "style": st.sampled_from(["studio", "studio", "lifestyle", ""]),
        "image": st.one_of(st.integers(0, 3), st.integers(0, 3), st.none()),
    }),
    min_size=1, max_size=8,
)
kill_point = st.one_of(st.none(), st.none(), st.floats(0.0, 2.5))


@dataclass
class Scenario:
    feeds: list[list[dict]]
    ingest_kills: list[float | None]
    extra: list[tuple[str, float | None]]  # ("enhancements" | "models", kill point)


scenarios = st.builds(
    Scenario,
    feeds=st.lists(feed_rows, min_size=1, max_size=3),
    ingest_kills=st.lists(kill_point, min_size=3, max_size=3),
    extra=st.lists(st.tuples(st.sampled_from(["enhancements", "models"]), kill_point), max_size=2),
)


def identities(table, name: str) -> set[tuple]:
    columns = IDENTITY[name]
    return set(zip(*(table.column(c).to_pylist() for c in columns))) if table.num_rows else set()


class Watcher:
    """Reads every manifest over and over while the writers run: what any snapshot ever held."""

    def __init__(self, lake: Lake):
        self.lake, self.seen = lake, {name: set() for name in IDENTITY}
        self.snapshots = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._stop.wait(0.1)

    def look(self) -> None:
        for name in IDENTITY:
            self.seen[name] |= identities(manifests.read(self.lake, name), name)
        self.snapshots += 1

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.look()


def expected_outcome(rows: list[dict]) -> list[bool]:
    """Whether each row of a feed must be ingested (True) or quarantined (False), from the feed
    alone, as ingestion plans it: a missing label is quarantined; every row of a SKU that appears
    with different content (image, style) is quarantined; identical repeats are merged; an image
    that does not exist is quarantined when fetched."""
    content: dict[str, set] = {}
    for row in rows:
        if row["style"]:
            content.setdefault(row["sku"], set()).add((row["style"], row["image"]))
    return [bool(row["style"]) and len(content[row["sku"]]) == 1 and row["image"] is not None for row in rows]


def current_products(lake: Lake) -> list[dict]:
    bookkeeping = {"version", "ingested_at", "run_id"}
    rows = manifests.current_catalog(manifests.read(lake, "catalog")).to_pylist()
    return [{k: v for k, v in row.items() if k not in bookkeeping} for row in rows]


def check_invariants(lake: Lake, feeds: list[list[dict]], feed_dirs: list[Path], watcher: Watcher) -> None:
    catalog = manifests.read(lake, "catalog")
    quarantine = manifests.read(lake, "quarantine").to_pylist()
    versions = set(zip(catalog["sku"].to_pylist(), catalog["style"].to_pylist(), catalog["image_sha256"].to_pylist()))
    sha_of = {}

    # Every feed row: in the catalog or in quarantine, exactly once. A row's identity is its
    # content (SKU, image URI, style): identical repeats in a feed are one product, merged.
    for rows, folder in zip(feeds, feed_dirs):
        numbers: dict[tuple, list[int]] = {}
        outcome: dict[tuple, bool] = {}
        for number, (row, ingested) in enumerate(zip(rows, expected_outcome(rows)), start=1):
            uri = f"img/{folder.name}_{row['image'] if row['image'] is not None else 'missing'}.png"
            identity = (row["sku"], uri, row["style"], row["image"])
            numbers.setdefault(identity, []).append(number)
            outcome[identity] = ingested
        for (sku, uri, style, image), ingested in outcome.items():
            records = [r["feed_row"] for r in quarantine
                       if (r["stage"], r["image_uri"], r["sku"]) == ("ingest", uri, sku)
                       and r["feed_row"] in numbers[(sku, uri, style, image)]]
            where = f"{folder.name} rows {numbers[(sku, uri, style, image)]} ({sku}, {style!r}, image {image})"
            if ingested:
                sha = sha_of.setdefault(image, _normalized_sha(lake, catalog, image))
                assert (sku, style, sha) in versions, f"{where}: not in the catalog"
                assert records == [], f"{where}: ingested and quarantined: {records}"
            else:
                assert records, f"{where}: neither in the catalog nor in quarantine"
                assert len(records) == len(set(records)), f"{where}: quarantined twice: {records}"

    # Every key a manifest names exists and decodes.
    for key in set(catalog["image_key"].to_pylist()) | set(catalog["original_key"].to_pylist()):
        Image.open(io.BytesIO(lake.read_bytes(key))).load()
    for row in manifests.read(lake, "enhancements").to_pylist():
        image = Image.open(io.BytesIO(lake.read_bytes(row["output_key"])))
        assert hashlib.sha256(lake.read_bytes(row["output_key"])).hexdigest() == row["output_sha256"]
        assert image.size == (row["width"], row["height"])
    for row in manifests.read(lake, "models").to_pylist():
        assert lake.exists(row["checkpoint_key"])
    for name in IDENTITY:
        for key in manifests.snapshot(lake, name).parts:
            assert lake.exists(key), f"{name}: snapshot names a missing part {key}"

    # No row of any manifest is lost: whatever a snapshot ever showed is still there.
    for name in IDENTITY:
        lost = watcher.seen[name] - identities(manifests.read(lake, name), name)
        assert not lost, f"{name}: rows lost: {sorted(lost)[:5]}"


def _normalized_sha(lake: Lake, catalog, image: int) -> str:
    """The catalog's image_sha256 for feed image `image` (found by its source bytes' sha256)."""
    source = hashlib.sha256(png(image, size=8)).hexdigest()
    found = {row["image_sha256"] for row in catalog.to_pylist() if row["source_sha256"] == source}
    assert len(found) == 1, f"image {image}: {len(found)} normalised images"
    return found.pop()


def run_scenario(scenario: Scenario, lake_url: str, work: Path) -> None:
    lake = Lake.from_url(lake_url)
    feed_dirs = [work / f"feed{i}-{uuid.uuid4().hex[:6]}" for i in range(len(scenario.feeds))]
    feeds = [write_feed(folder, rows) for folder, rows in zip(feed_dirs, scenario.feeds)]
    jobs = [["ingest", lake_url, feed] for feed in feeds]
    kills = list(scenario.ingest_kills[:len(feeds)])
    for n, (manifest, kill) in enumerate(scenario.extra):
        jobs.append(["append", lake_url, manifest, f"x{n}", "3"])
        kills.append(kill)

    with Watcher(lake) as watcher:
        writers = run_together(jobs, work, kill_after=kills, slow_commit=0.3)
    check_finished(writers)
    # A run that finished (not killed) accounted for every row of its feed, whatever ran beside it.
    finished = [i for i, writer in enumerate(writers[:len(feeds)]) if not writer.killed]
    check_invariants(lake, [scenario.feeds[i] for i in finished], [feed_dirs[i] for i in finished], watcher)
    for writer in writers:  # a writer that finished wrote all its rows
        if writer.args[0] == "append" and not writer.killed:
            manifest, tag = writer.args[2], writer.args[3]
            names = manifests.read(lake, manifest)["sku" if manifest == "enhancements" else "version"].to_pylist()
            prefix = "sku" if manifest == "enhancements" else "espcn"
            assert {f"{prefix}-{tag}-{i}" for i in range(3)} <= set(names)

    # Reruns (killed runs included) complete every feed; a second round changes nothing.
    settings_ = load_settings(lake_url=lake_url, io_concurrency=2, batch_size=4)
    for feed in feeds:
        ingest_feed(lake, settings_, feed)
    products, quarantined = current_products(lake), manifests.snapshot(lake, "quarantine").sequence
    catalog_sequence = manifests.snapshot(lake, "catalog").sequence
    for feed in feeds:
        ingest_feed(lake, settings_, feed)
    assert current_products(lake) == products
    assert manifests.snapshot(lake, "quarantine").sequence == quarantined
    if not _feeds_disagree(scenario.feeds):
        assert manifests.snapshot(lake, "catalog").sequence == catalog_sequence
    watcher.look()
    check_invariants(lake, scenario.feeds, feed_dirs, watcher)


def _feeds_disagree(feeds: list[list[dict]]) -> bool:
    """Whether two feeds give one SKU different content or a different image URI: then alternating
    reruns rightly record versions (new content) or refreshes (same bytes, new URI: a later row
    wins). Each feed's images live in its own folder, so one SKU in two feeds always has two URIs."""
    contents: dict[str, set] = {}
    for feed, rows in enumerate(feeds):
        for row, ingested in zip(rows, expected_outcome(rows)):
            if ingested:
                contents.setdefault(row["sku"], set()).add((row["style"], row["image"], feed))
    return any(len(c) > 1 for c in contents.values())


PROPERTY = settings(max_examples=5, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(scenario=scenarios)
def test_concurrent_writers_keep_the_invariants_on_a_local_lake(scenario):
    with tempfile.TemporaryDirectory(prefix="ce-prop-") as work:
        run_scenario(scenario, str(Path(work) / "lake"), Path(work))


@pytest.mark.s3
@settings(PROPERTY, max_examples=2)
@given(scenario=scenarios)
def test_concurrent_writers_keep_the_invariants_on_s3(s3_server, scenario):
    bucket = f"ce-prop-{uuid.uuid4().hex[:12]}"
    make_s3_bucket(s3_server, bucket)  # a lake never creates its bucket unless asked
    with tempfile.TemporaryDirectory(prefix="ce-prop-") as work:
        run_scenario(scenario, f"s3://{bucket}/lake", Path(work))
