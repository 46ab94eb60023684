"""Append-only manifests under concurrent writers (issue 11, item 1): real processes racing on one
lake (local and S3) lose nothing; a lost race re-reads and re-plans; legacy single-file manifests
migrate; compaction and vacuum keep every row; a writer killed mid-commit leaves no trace but an
orphan part that vacuum removes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog_enhance.data_contracts.contracts import CATALOG
from catalog_enhance.data_contracts.layout import legacy_manifest_key, manifest_log_key, manifest_parts_prefix
from catalog_enhance.tasks.ingest.run import catalog_additions
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.manifests import store
from catalog_enhance.tasks.lake.storage import Lake
from manifest_processes import check_finished, run_together, write_feed
from manifest_writers import enhancement_row

LATER = datetime.now(timezone.utc) + timedelta(days=2)  # "now" for vacuum: everything is old enough


def catalog_row(sku: str, version: int = 1, *, uri: str = "img/a.png", sha: str = "a" * 64, style: str = "studio") -> dict:
    return {
        "sku": sku, "version": version, "source_uri": uri, "source_fingerprint": f"fp-{uri}",
        "product_id": sku, "category": "toys", "style": style,
        "source_sha256": sha, "source_format": "PNG", "source_bytes": 10,
        "original_key": f"images/original/{sha[:2]}/{sha}.png", "image_key": f"images/normalized/{sha[:2]}/{sha}.png",
        "image_sha256": sha, "width": 4, "height": 4, "mode": "RGB", "has_alpha": False, "exif_orientation": 1,
        "icc_profile": None, "sharpness": 1.0, "ingested_at": datetime(2026, 12, 1, tzinfo=timezone.utc), "run_id": None,
    }


def enhancement_skus(lake: Lake) -> list[str]:
    return sorted(manifests.read(lake, "enhancements")["sku"].to_pylist())


# -- the bug, reproduced with real processes ------------------------------------------------------


def test_two_ingest_processes_at_once_keep_both_feeds(tmp_path, lake):
    small = write_feed(tmp_path / "small", [{"sku": f"s{i:03d}", "image": i} for i in range(20)], image_seed=1)
    large = write_feed(tmp_path / "large", [{"sku": f"l{i:03d}", "image": i} for i in range(150)], image_seed=2)
    # Both merge into the same catalog they read (the first commit of each waits for the other's
    # read): without compare-and-swap the second writer overwrote the first one's rows.
    writers = run_together([["ingest", lake.url, small], ["ingest", lake.url, large]], tmp_path,
                           race_first_commit=True)
    check_finished(writers)

    catalog = manifests.read(lake, "catalog")
    assert sorted(catalog["sku"].to_pylist()) == [f"l{i:03d}" for i in range(150)] + [f"s{i:03d}" for i in range(20)]
    assert set(catalog["version"].to_pylist()) == {1}
    assert manifests.snapshot(lake, "catalog").sequence == 1  # two commits: one per ingest
    quarantine = manifests.read(lake, "quarantine")
    assert quarantine.num_rows == 0


def _concurrent_appends(lake: Lake, tmp_path, processes: int = 4, each: int = 15) -> None:
    jobs = [["append", lake.url, "enhancements", f"w{p}", str(each)] for p in range(processes)]
    check_finished(run_together(jobs, tmp_path, timeout=300))
    expected = sorted(f"sku-w{p}-{i}" for p in range(processes) for i in range(each))
    assert enhancement_skus(lake) == expected
    snap = manifests.snapshot(lake, "enhancements")
    assert snap.sequence == processes * each - 1 and len(snap.parts) == processes * each


def test_concurrent_appends_from_four_processes_keep_every_row(tmp_path, lake):
    _concurrent_appends(lake, tmp_path)


@pytest.mark.s3
def test_concurrent_appends_on_s3_keep_every_row(tmp_path, s3_lake_url):
    _concurrent_appends(Lake.from_url(s3_lake_url), tmp_path, processes=3, each=8)


@pytest.mark.s3
def test_put_if_absent_refuses_an_existing_key_on_s3(s3_lake_url):
    lake = Lake.from_url(s3_lake_url)
    assert lake.create("a/b.json", b"first") is True
    assert lake.create("a/b.json", b"second") is False  # the S3 server refused the conditional PUT
    assert lake.read_bytes("a/b.json") == b"first"


def test_put_if_absent_refuses_an_existing_key_locally(lake):
    assert lake.create("a/b.json", b"first") is True
    assert lake.create("a/b.json", b"second") is False
    assert lake.read_bytes("a/b.json") == b"first"
    assert lake.fs.find(f"{lake.root}/_tmp") == []


# -- losing the race ------------------------------------------------------------------------------


def test_a_lost_race_re_reads_and_recomputes_the_change(lake, monkeypatch):
    """Another writer commits between our read and our log entry: ours is refused, the change is
    asked again against the table with the rival's rows, and both rows end up in the manifest."""
    real_create = Lake.create
    rival_done = []

    def rival_first(self, key, data):
        if not rival_done and "/_log/" in key:
            rival_done.append(True)
            manifests.append(lake, "enhancements", [enhancement_row(lake, "rival")])  # commits entry N+1
        return real_create(self, key, data)

    monkeypatch.setattr(Lake, "create", rival_first)
    seen: list[list[str]] = []
    mine = enhancement_row(lake, "mine")

    def change(current: pa.Table) -> list[dict] | None:
        seen.append(sorted(current["sku"].to_pylist()))
        return [mine]

    manifests.commit(lake, "enhancements", change)
    assert seen == [[], ["sku-rival"]]  # called again, on the table the rival left
    assert enhancement_skus(lake) == ["sku-mine", "sku-rival"]
    snap = manifests.snapshot(lake, "enhancements")
    assert snap.sequence == 1 and len(snap.parts) == 2
    # The refused attempt's part was removed: every part in the folder is named by the snapshot.
    assert sorted(lake.list(manifest_parts_prefix("enhancements"))) == sorted(snap.parts)


def test_racing_ingests_renumber_versions_against_the_winner():
    """Two ingests both planned version 2 of SKU X (from version 1): the loser's retry sees the
    winner's version 2 and makes its row version 3; a row identical to the winner's is dropped."""
    v1 = CATALOG.table([catalog_row("X", 1, sha="1" * 64)])
    winner = CATALOG.table([catalog_row("X", 1, sha="1" * 64), catalog_row("X", 2, sha="2" * 64)])
    different = CATALOG.table([catalog_row("X", 2, sha="3" * 64)])
    same = CATALOG.table([catalog_row("X", 2, sha="2" * 64, uri="elsewhere.png")])

    assert catalog_additions(v1, [different]).rows["version"].to_pylist() == [2]  # nobody raced: as planned
    replanned = catalog_additions(winner, [different])
    assert replanned.rows["version"].to_pylist() == [3] and replanned.new_versions == 1
    dropped = catalog_additions(winner, [same])
    assert dropped.rows is None and dropped.already_there == 1
    # A refresh of version 1 that is no longer the latest is dropped too.
    assert catalog_additions(winner, [], [catalog_row("X", 1, sha="1" * 64, uri="moved.png")]).rows is None


def test_a_refreshed_row_is_appended_and_supersedes_the_old_one(lake):
    manifests.append(lake, "catalog", [catalog_row("X", 1), catalog_row("Y", 1)])
    plan = catalog_additions(manifests.read(lake, "catalog"), [], [catalog_row("X", 1, uri="moved.png")])
    manifests.append(lake, "catalog", plan.rows)
    catalog = manifests.read(lake, "catalog")
    assert catalog.num_rows == 2 and catalog["source_uri"].to_pylist() == ["moved.png", "img/a.png"]
    assert manifests.snapshot(lake, "catalog").rows == 3  # stored rows: the update is a row of its own


def test_giving_up_after_losing_every_race_writes_nothing(lake, monkeypatch):
    monkeypatch.setattr(Lake, "create", lambda self, key, data: False)
    monkeypatch.setattr(store, "backoff", lambda attempt: None)
    with pytest.raises(manifests.ManifestConflictError, match=r"manifest 'enhancements' .* 3 times in a row; nothing was written"):
        manifests.commit(lake, "enhancements", lambda current: [enhancement_row(lake, "x")], attempts=3)
    assert lake.list(manifest_parts_prefix("enhancements")) == [] and not manifests.exists(lake, "enhancements")


# -- migration, compaction, vacuum -----------------------------------------------------------------


def test_a_legacy_single_file_manifest_is_read_then_migrated_on_first_commit(lake):
    legacy = CATALOG.table([catalog_row("A"), catalog_row("B")])
    lake.write_table(legacy_manifest_key("catalog"), legacy)
    assert manifests.exists(lake, "catalog")
    assert manifests.read(lake, "catalog")["sku"].to_pylist() == ["A", "B"]  # before any migration
    assert manifests.snapshot_uris(lake, "catalog") == [lake.uri(legacy_manifest_key("catalog"))]

    manifests.append(lake, "catalog", [catalog_row("C")])
    snap = manifests.snapshot(lake, "catalog")
    assert (snap.sequence, len(snap.parts), snap.rows, snap.schema_version) == (0, 2, 3, CATALOG.version)
    assert manifests.read(lake, "catalog")["sku"].to_pylist() == ["A", "B", "C"]
    imported = pq.read_table(lake.path(snap.parts[0]))
    assert imported.schema.metadata[b"schema_version"] == CATALOG.version.encode()

    manifests.vacuum(lake, now=LATER)  # the legacy file goes once the migration is old
    assert not lake.exists(legacy_manifest_key("catalog"))
    assert manifests.read(lake, "catalog")["sku"].to_pylist() == ["A", "B", "C"]


def test_compact_all_migrates_a_legacy_manifest_without_a_write(lake):
    lake.write_table(legacy_manifest_key("quarantine"), manifests.contract_of("quarantine").empty())
    (result,) = manifests.compact_all(lake)
    assert (result.name, result.compacted, result.reason) == ("quarantine", True, "migrated")
    assert manifests.snapshot(lake, "quarantine").operation == "migrate"


def test_compaction_keeps_every_row_and_old_snapshots_stay_readable(lake):
    for i in range(6):
        manifests.append(lake, "catalog", [catalog_row(f"S{i}"), catalog_row(f"S{i}", 2, sha="b" * 64)])
    manifests.append(lake, "catalog", [catalog_row("S0", 2, sha="b" * 64, uri="moved.png")])  # an update
    before = manifests.snapshot(lake, "catalog")
    expected = manifests.read(lake, "catalog")

    assert not manifests.compact(lake, "catalog", min_parts=10).compacted  # 7 parts: below the threshold
    result = manifests.compact(lake, "catalog", min_parts=4)
    assert (result.compacted, result.parts_before, result.parts_after, result.rows) == (True, 7, 1, 12)
    after = manifests.snapshot(lake, "catalog")
    assert after.sequence == before.sequence + 1 and len(after.parts) == 1 and after.operation == "compact"
    assert manifests.read(lake, "catalog").equals(expected)
    # A reader still on the snapshot before compaction reads the same rows from the old parts.
    store._PARTS.clear()
    assert store.read_snapshot(lake, before).equals(expected)

    manifests.vacuum(lake, now=LATER, keep_log=1)
    assert lake.list(manifest_parts_prefix("catalog")) == list(after.parts)
    assert store.log_sequences(lake, "catalog") == [after.sequence]
    store._PARTS.clear()
    assert manifests.read(lake, "catalog").equals(expected)
    manifests.append(lake, "catalog", [catalog_row("T")])  # commits go on after the log was trimmed
    assert manifests.snapshot(lake, "catalog").sequence == after.sequence + 1


def test_vacuum_spares_recent_objects(lake):
    for i in range(3):
        manifests.append(lake, "enhancements", [enhancement_row(lake, str(i))])
    manifests.compact(lake, "enhancements", min_parts=2)
    (result,) = [r for r in manifests.vacuum(lake, older_than=timedelta(0), keep_log=1) if r.name == "enhancements"]
    # Younger than twice the commit window: a commit in flight may still rely on them.
    assert result.parts_deleted == [] and result.log_entries_deleted == []
    assert len(lake.list(manifest_parts_prefix("enhancements"))) == 4


def test_a_writer_killed_between_part_and_log_leaves_an_orphan_that_vacuum_removes(tmp_path, lake):
    manifests.append(lake, "enhancements", [enhancement_row(lake, "kept")])
    (writer,) = run_together([["die-before-log", lake.url, "enhancements", "dead"]], tmp_path)
    assert writer.killed
    snap = manifests.snapshot(lake, "enhancements")
    parts = lake.list(manifest_parts_prefix("enhancements"))
    (orphan,) = set(parts) - set(snap.parts)  # the dead writer's part, named by no snapshot
    assert snap.sequence == 0 and enhancement_skus(lake) == ["sku-kept"]
    assert not lake.exists(manifest_log_key("enhancements", 1))

    (result,) = [r for r in manifests.vacuum(lake, now=LATER) if r.name == "enhancements"]
    assert result.parts_deleted == [orphan]
    assert lake.list(manifest_parts_prefix("enhancements")) == list(snap.parts)
    manifests.append(lake, "enhancements", [enhancement_row(lake, "after")])
    assert enhancement_skus(lake) == ["sku-after", "sku-kept"]


def test_snapshot_uris_are_what_other_readers_read(lake):
    manifests.append(lake, "catalog", [catalog_row("A")])
    manifests.append(lake, "catalog", [catalog_row("B")])
    uris = manifests.snapshot_uris(lake, "catalog")
    assert len(uris) == 2 and all(uri.startswith("file://") for uri in uris)
    table = pa.concat_tables([pq.read_table(uri.removeprefix("file://")) for uri in uris])
    assert sorted(table["sku"].to_pylist()) == ["A", "B"]
