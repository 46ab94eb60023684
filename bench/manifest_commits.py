"""Append-only manifests (issue 11, item 1): bytes a commit writes, and reads before and after
compaction. Prints figures; asserts nothing. `python -m bench.manifest_commits [--s3]`

- bytes per commit: a 1-row change to a 10k-row catalog. Before: the whole manifest rewritten
  (one Parquet file of 10,001 rows). Now: one part of 1 row + one log entry (which names every
  live part: larger with `PARTS` parts, small once compacted; both measured).
- read time: the same 10k rows as `PARTS` parts (a month of small nightly commits) vs one part
  after `compact`, read cold (no decoded part cached), best of `ROUNDS`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
import time
from datetime import datetime, timezone

import pyarrow.parquet as pq

ROWS = 10_000
PARTS = 200
ROUNDS = 3


def catalog_rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        rows.append({
            "sku": f"sku-{i:07d}", "version": 1, "source_uri": f"https://shop.example/img/{i}.jpg",
            "source_fingerprint": f"etag-{sha[:16]}", "product_id": f"p{i // 2}", "category": "toys",
            "style": "studio" if i % 2 else "lifestyle", "source_sha256": sha, "source_format": "JPEG",
            "source_bytes": 50_000 + i, "original_key": f"images/original/{sha[:2]}/{sha}.jpg",
            "image_key": f"images/normalized/{sha[:2]}/{sha}.png", "image_sha256": sha, "width": 800,
            "height": 800, "mode": "RGB", "has_alpha": False, "exif_orientation": 1, "icc_profile": None,
            "sharpness": 1.0 + i % 7, "ingested_at": datetime(2026, 12, 1, tzinfo=timezone.utc), "run_id": "bench",
        })
    return rows


def _object_sizes(lake, prefix: str) -> dict[str, int]:
    return {key: lake.fs.info(lake.path(key))["size"] for key in lake.list(prefix)}


def measure(lake_url: str) -> dict[str, float]:
    from catalog_enhance.data_contracts.contracts import CATALOG
    from catalog_enhance.data_contracts.layout import manifest_key
    from catalog_enhance.tasks.lake import manifests
    from catalog_enhance.tasks.lake.manifests import store
    from catalog_enhance.tasks.lake.storage import Lake

    lake = Lake.from_url(lake_url)
    figures: dict[str, float] = {}

    # Before: every commit rewrote the whole manifest.
    whole = io.BytesIO()
    pq.write_table(CATALOG.table(catalog_rows(ROWS + 1)), whole, compression="zstd")
    figures["old_bytes_per_1_row_commit"] = len(whole.getvalue())

    # Now: the catalog as many small parts, then one more 1-row commit.
    per_part = ROWS // PARTS
    for p in range(PARTS):
        manifests.append(lake, "catalog", CATALOG.table(catalog_rows(per_part, p * per_part)))
    before = _object_sizes(lake, manifest_key("catalog"))
    manifests.append(lake, "catalog", CATALOG.table(catalog_rows(1, ROWS)))
    after = _object_sizes(lake, manifest_key("catalog"))
    new = {k: v for k, v in after.items() if k not in before}
    figures["new_bytes_per_1_row_commit"] = sum(new.values())
    figures["new_part_bytes"] = sum(v for k, v in new.items() if "/parts/" in k)
    figures["new_log_entry_bytes"] = sum(v for k, v in new.items() if "/_log/" in k)

    def cold_read() -> float:
        best = float("inf")
        for _ in range(ROUNDS):
            store._PARTS.clear()
            started = time.perf_counter()
            table = manifests.read(lake, "catalog")
            best = min(best, time.perf_counter() - started)
            assert table.num_rows == ROWS + 1
        return best

    figures["parts_before_compaction"] = len(manifests.snapshot(lake, "catalog").parts)
    figures["read_seconds_many_parts"] = cold_read()
    manifests.compact(lake, "catalog", min_parts=2)
    figures["read_seconds_compacted"] = cold_read()
    figures["compacted_part_bytes"] = sum(v for k, v in _object_sizes(lake, manifest_key("catalog")).items()
                                          if k in manifests.snapshot(lake, "catalog").parts)
    # The usual night: a compacted catalog, one small commit (the log entry names 2 parts).
    before = _object_sizes(lake, manifest_key("catalog"))
    manifests.append(lake, "catalog", CATALOG.table(catalog_rows(1, ROWS + 1)))
    new = {k: v for k, v in _object_sizes(lake, manifest_key("catalog")).items() if k not in before}
    figures["compacted_bytes_per_1_row_commit"] = sum(new.values())
    figures["compacted_log_entry_bytes"] = sum(v for k, v in new.items() if "/_log/" in k)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--s3", action="store_true", help="also on a loopback moto S3 server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        targets = [("local", os.path.join(scratch, "lake"))]
        server = None
        if args.s3:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                              AWS_DEFAULT_REGION="us-east-1", CE_S3_ENDPOINT_URL=f"http://{host}:{port}")
            targets.append(("s3 (moto, loopback)", "s3://bench-manifests/lake"))
        try:
            for label, url in targets:
                figures = measure(url)
                print(f"{label}: 1-row commit on a {ROWS}-row catalog: before {figures['old_bytes_per_1_row_commit']:,.0f} B "
                      f"(whole manifest), now {figures['new_bytes_per_1_row_commit']:,.0f} B "
                      f"(part {figures['new_part_bytes']:,.0f} + log entry {figures['new_log_entry_bytes']:,.0f})")
                print(f"{label}: the same commit on the compacted catalog: "
                      f"{figures['compacted_bytes_per_1_row_commit']:,.0f} B (log entry {figures['compacted_log_entry_bytes']:,.0f})")
                print(f"{label}: cold read of {ROWS + 1} rows: {figures['parts_before_compaction']:.0f} parts "
                      f"{figures['read_seconds_many_parts'] * 1000:.0f} ms, compacted (1 part, "
                      f"{figures['compacted_part_bytes']:,.0f} B) {figures['read_seconds_compacted'] * 1000:.0f} ms")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
