"""Manifest writers run as separate processes by the concurrency tests (`python manifest_writers.py
JOB ...`), and the synthetic rows they append. No torch, no Prefect: a process starts in ~1 s.

Jobs:
  ingest LAKE_URL FEED                       ingest a feed (tasks.ingest.run.ingest_feed)
  append LAKE_URL MANIFEST TAG COUNT         COUNT commits of one row each (enhancements, models, ...)
  die-before-log LAKE_URL MANIFEST TAG       write a part, then kill -9 itself before the log entry
The parent may start several at once; each waits until the file named by $CE_TEST_GO exists, so
they really overlap. With $CE_TEST_SLOW_COMMIT (seconds) every commit waits that long between
reading the manifest and writing, as merging into a large catalog does: the window in which a
writer without compare-and-swap overwrites another's rows. With $CE_TEST_COMMIT_BARRIER
("folder:count") the first commit of each writer waits until `count` writers have read the same
manifest: they then certainly race for the same next snapshot.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone

import numpy as np
from PIL import Image

from catalog_enhance.data_contracts.layout import checkpoint_key, enhanced_image_key
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def png(seed: int, size: int = 4) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _seed(tag: str) -> int:
    return int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16)


def enhancement_row(lake: Lake, tag: str) -> dict:
    """One enhancements row whose output object exists in the lake (written first)."""
    data = png(_seed(tag))
    sha = hashlib.sha256(data).hexdigest()
    key = enhanced_image_key("espcn", "espcn-test", "p0", sha)
    lake.write_bytes_if_absent(key, data)
    return {
        "sku": f"sku-{tag}", "catalog_version": 1, "input_sha256": sha, "input_key": key,
        "model_name": "espcn", "model_version": "espcn-test", "params_hash": "p0", "params_json": "{}",
        "output_key": key, "output_sha256": sha, "width": 4, "height": 4, "mode": "RGB",
        "input_width": 4, "input_height": 4, "seconds": 0.0, "device": "cpu", "created_at": NOW, "run_id": tag,
    }


def model_row(lake: Lake, tag: str) -> dict:
    """One registry row (a registered version) whose checkpoint object exists in the lake."""
    key = checkpoint_key("espcn", f"espcn-{tag}")
    lake.write_bytes_if_absent(key, png(_seed(tag)))
    return {
        "name": "espcn", "version": f"espcn-{tag}", "kind": "sr", "created": NOW, "preset": "tiny",
        "run": tag, "config_hash": "c0", "config_json": "{}", "data_manifest_hash": "d0", "code_version": "test",
        "steps": 1, "final_losses": "{}", "metrics": "{}", "val_metric_name": None, "val_metric": None,
        "metadata_json": "{}", "checkpoint_key": key, "curve_key": None, "train_seconds": 0.0,
        "device": "cpu", "status": "trained",
    }


def register(lake: Lake, tag: str) -> None:
    """What `model_registry.register_version` writes: the curve, then the version row."""
    manifests.append(lake, "training_curves", [{"model": "espcn", "version": f"espcn-{tag}", "step": 0,
                                                "loss": "mse", "value": 1.0}])
    manifests.append(lake, "models", [model_row(lake, tag)])


def append_one(lake: Lake, manifest: str, tag: str) -> None:
    if manifest == "enhancements":
        manifests.append(lake, "enhancements", [enhancement_row(lake, tag)])
    elif manifest == "models":
        register(lake, tag)
    else:
        raise ValueError(f"no synthetic rows for manifest {manifest!r}")


def _wait_for_go() -> None:
    go = os.environ.get("CE_TEST_GO")
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)


def _hold_commits(seconds: float, barrier: str) -> None:
    """Make every commit wait between reading the manifest and writing: `seconds`, and the first
    commit also until every writer sharing `barrier` ("folder:count") has read its snapshot."""
    from catalog_enhance.tasks.lake.manifests import rows, store

    commit = store.commit
    waited = []

    def hold() -> None:
        if barrier and not waited:
            waited.append(True)
            folder, count = barrier.rsplit(":", 1)
            open(os.path.join(folder, f"read-{os.getpid()}"), "w").close()
            deadline = time.monotonic() + 60
            while (len([f for f in os.listdir(folder) if f.startswith("read-")]) < int(count)
                   and time.monotonic() < deadline):
                time.sleep(0.01)
        time.sleep(seconds)

    def held_commit(lake, name, change, **options):
        def held_change(current):
            rows = change(current)
            hold()
            return rows

        return commit(lake, name, held_change, **options)

    for module in (store, rows, manifests):  # every name `commit` is called by
        module.commit = held_commit  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    job, lake_url, *rest = argv
    lake = Lake.from_url(lake_url)
    if os.environ.get("CE_TEST_SLOW_COMMIT") or os.environ.get("CE_TEST_COMMIT_BARRIER"):
        _hold_commits(float(os.environ.get("CE_TEST_SLOW_COMMIT") or 0), os.environ.get("CE_TEST_COMMIT_BARRIER", ""))
    _wait_for_go()
    if job == "ingest":
        from catalog_enhance.tasks.ingest.run import ingest_feed
        from catalog_enhance.tasks.lake.settings import load_settings

        summary = ingest_feed(lake, load_settings(lake_url=lake_url, io_concurrency=2, batch_size=8), rest[0])
        print(json.dumps({"rows": summary.rows, "new": summary.ingested_new, "quarantined": summary.quarantined}))
    elif job == "append":
        manifest, tag, count = rest[0], rest[1], int(rest[2])
        for i in range(count):
            append_one(lake, manifest, f"{tag}-{i}")
    elif job == "die-before-log":
        manifest, tag = rest

        def die(self, key, data):  # the part is written; the process dies before its log entry
            os.kill(os.getpid(), signal.SIGKILL)

        Lake.create = die  # type: ignore[method-assign]
        append_one(lake, manifest, tag)
    else:
        raise SystemExit(f"unknown job {job!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
