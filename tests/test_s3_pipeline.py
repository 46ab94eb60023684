"""Ingestion + pairs, unchanged, on a lake in a real S3-API server (moto over HTTP on loopback).

The flows get nothing but `lake_url=s3://...`; the manifests are then read back through an
independent path (pandas + s3fs storage options) to check what landed.
"""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from catalog_enhance.data_contracts.contracts import CATALOG, PAIRS
from catalog_enhance.flows.ingest import ingest_catalog
from catalog_enhance.flows.pairs import make_pairs
from catalog_enhance.tasks.catalog.pairs_config import PairsConfig
from catalog_enhance.demo_data.sample_catalog import build_sample_catalog
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake

pytestmark = pytest.mark.s3


def _object_times(lake: Lake) -> dict[str, str]:
    lake.fs.invalidate_cache()
    return {key: str(lake.fs.info(lake.path(key))["LastModified"]) for key in lake.list()}


def test_ingest_and_pairs_on_s3(tmp_path, s3_server, s3_lake_url, prefect_harness):
    sample = build_sample_catalog(tmp_path / "catalog", tmp_path / "cache", seed=3, max_objects=6, source="skimage")
    # One bad row rides along: it must be quarantined while the rest lands.
    with open(sample.feed_path, "a", newline="") as handle:
        csv.writer(handle).writerow(["BAD-1", "ftp://example.invalid/x.jpg", "toys", "studio", "bad", "", "", ""])
    config = PairsConfig(scales=(2, 4), hr_size=96, crops_per_image=1)

    ingest = ingest_catalog(feed=str(sample.feed_path), lake_url=s3_lake_url)
    pairs = make_pairs(lake_url=s3_lake_url, config=config)

    assert ingest.ingested_new == sample.n_images
    assert ingest.by_reason == {"unknown_scheme": 1}
    assert pairs.pairs_written > 0

    options = {"client_kwargs": {"endpoint_url": s3_server}, "key": "testing", "secret": "testing"}
    lake = Lake.from_url(s3_lake_url)
    # Another tool reads a manifest's snapshot from the part URIs its log entry names.
    catalog = pd.concat([pd.read_parquet(uri, storage_options=options)
                         for uri in manifests.snapshot_uris(lake, "catalog")])
    pair_rows = pd.concat([pd.read_parquet(uri, storage_options=options)
                           for uri in manifests.snapshot_uris(lake, "pairs")])
    assert len(catalog) == sample.n_images
    assert set(catalog["style"]) >= {"studio", "lifestyle"}
    assert len(pair_rows) == pairs.pairs_written
    assert set(pair_rows["scale"]) == {2, 4}

    assert CATALOG.validate(manifests.read(lake, "catalog")) == []
    assert PAIRS.validate(manifests.read(lake, "pairs")) == []
    # Every key the manifests name is really in the bucket.
    keys = set(lake.list())
    assert set(catalog["image_key"]) | set(catalog["original_key"]) <= keys
    assert set(pair_rows["hr_key"]) | set(pair_rows["lr_key"]) <= keys
    assert not any(key.startswith("_tmp/") for key in keys)

    # A second run over the same feed writes nothing to the bucket.
    before = _object_times(lake)
    again = ingest_catalog(feed=str(sample.feed_path), lake_url=s3_lake_url)
    pairs_again = make_pairs(lake_url=s3_lake_url, config=config)
    assert again.ingested_new == 0 and again.unchanged == sample.n_images
    assert pairs_again.pairs_written == 0
    assert _object_times(lake) == before
