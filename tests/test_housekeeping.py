"""The nightly's housekeeping: `_tmp/` leftovers of killed runs older than the age limit go,
younger ones (possibly a write in progress) and every real key stay."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catalog_enhance.data_contracts.layout import TMP_PREFIX
from catalog_enhance.tasks.lake.housekeeping import remove_stale_temporaries
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake

DAY = 24 * 3600


def test_old_temporaries_go_and_fresh_ones_and_real_keys_stay(lake):
    lake.write_bytes("manifests/kept.parquet", b"real")
    tmp = Path(lake.root) / TMP_PREFIX
    old, fresh = tmp / "killed-run", tmp / "in-progress"
    old.write_bytes(b"x" * 10)  # the atomic writes made the folder
    fresh.write_bytes(b"y")
    two_days_ago = time.time() - 2 * DAY
    os.utime(old, (two_days_ago, two_days_ago))

    result = remove_stale_temporaries(lake, timedelta(hours=load_settings().tmp_max_age_hours))
    assert not old.exists() and fresh.exists() and lake.read_bytes("manifests/kept.parquet") == b"real"
    assert (len(result.removed), result.kept, result.bytes_removed, result.errors) == (1, 1, 10, [])

    # The age is configurable: at 0 the fresh one is stale too; with nothing left, nothing happens.
    assert len(remove_stale_temporaries(lake, timedelta(0), now=datetime.now(UTC) + timedelta(seconds=5)).removed) == 1
    assert remove_stale_temporaries(lake, timedelta(0)).counts()["temporaries removed"] == 0


def test_the_age_limit_is_a_setting(monkeypatch):
    monkeypatch.setenv("CE_TMP_MAX_AGE_HOURS", "6")
    assert load_settings().tmp_max_age_hours == 6
    with pytest.raises(ValueError):
        remove_stale_temporaries(Lake.from_url("memory://x"), timedelta(hours=-1))


@pytest.mark.s3
def test_on_s3_the_age_is_the_objects_last_modified_time(s3_lake_url):
    lake = Lake.from_url(s3_lake_url)
    lake.fs.pipe_file(f"{lake.root}/{TMP_PREFIX}/leftover", b"z")
    lake.write_bytes("images/kept.png", b"real")
    assert remove_stale_temporaries(lake, timedelta(hours=24)).kept == 1  # written just now
    later = remove_stale_temporaries(lake, timedelta(hours=24), now=datetime.now(UTC) + timedelta(days=2))
    assert len(later.removed) == 1 and not lake.fs.exists(f"{lake.root}/{TMP_PREFIX}/leftover")
    assert lake.read_bytes("images/kept.png") == b"real"


def test_the_nightly_pass_also_compacts_and_vacuums_the_manifests(lake):
    """Many small commits (one part each) become one part; parts no recent snapshot names go once
    they are older than the vacuum's safety age (the newest log entries, and the parts they name,
    stay for readers of a recent snapshot), and no row is lost."""
    from catalog_enhance.tasks.lake import manifests
    from catalog_enhance.tasks.lake.housekeeping import housekeep
    from catalog_enhance.tasks.lake.manifests.upkeep import KEEP_LOG_ENTRIES

    def commit(i: int) -> None:
        row = {"stage": "ingest", "sku": f"s{i}", "feed_row": i, "image_uri": f"x{i}.jpg", "reason": "not_found",
               "detail": "gone"}
        manifests.quarantine(lake, [row], run_id="r", now=datetime.now(UTC))

    later = datetime.now(UTC) + timedelta(days=2)
    for i in range(20):  # 20 commits: 20 parts
        commit(i)
    originals = set(manifests.snapshot(lake, "quarantine").parts)
    assert len(originals) == 20

    first = housekeep(lake, timedelta(hours=24), now=later).counts()
    assert first["manifests compacted"] == 1 and len(manifests.snapshot(lake, "quarantine").parts) == 1
    assert first["manifest log entries deleted"] == 20 - KEEP_LOG_ENTRIES + 1  # the oldest, no longer needed
    for i in range(20, 20 + KEEP_LOG_ENTRIES):  # the compacted snapshot becomes old news
        commit(i)
    second = housekeep(lake, timedelta(hours=24), now=later).counts()
    assert second["manifests compacted"] == 0 and second["manifest parts deleted"] == 20
    assert not originals & set(lake.list("manifests/quarantine"))
    assert sorted(manifests.read(lake, "quarantine").column("sku").to_pylist()) == sorted(f"s{i}" for i in range(30))
