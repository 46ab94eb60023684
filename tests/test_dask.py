"""Scale-out: the ingestion fan-out on a 2-process Dask cluster writes exactly what local threads write.

The batches run in other processes (pickled tasks, their own Lake/fsspec instances, their own
Prefect clients reporting to the test server): any hidden per-process state or ordering
dependence would show up as different bytes or rows here.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
from distributed import Client, LocalCluster, get_task_stream
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from catalog_enhance.tasks.lake import manifests
from catalog_enhance.flows.ingest import ingest_catalog
from catalog_enhance.flows.runners import task_runner_for
from catalog_enhance.demo_data.sample_catalog import build_sample_catalog
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake

# Columns that name the run rather than the content.
RUN_COLUMNS = ("ingested_at", "run_id")


def lake_objects(root: Path) -> dict[str, bytes]:
    """Every object of a local lake except manifests (they carry run ids and times)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] not in ("manifests", "_tmp")
    }


def catalog_rows(lake_url: str) -> list[dict]:
    table = manifests.read(Lake.from_url(lake_url), "catalog")
    table = table.drop_columns([c for c in RUN_COLUMNS if c in table.column_names])
    return table.sort_by([("sku", "ascending")]).to_pylist()


def test_task_runner_follows_the_configured_address(monkeypatch):
    monkeypatch.delenv("CE_DASK_ADDRESS", raising=False)
    assert isinstance(task_runner_for(load_settings(lake_url="lake")), ThreadPoolTaskRunner)
    runner = task_runner_for(load_settings(lake_url="lake", dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://127.0.0.1:8786"


@pytest.mark.dask
def test_ingestion_on_a_local_dask_cluster_is_byte_identical_to_threads(tmp_path, prefect_harness, monkeypatch):
    feed = build_sample_catalog(tmp_path / "shop", tmp_path / "cache", source="skimage", max_objects=3,
                                canvas=64).feed_path
    batch_size = 2
    lakes = {"threads": str(tmp_path / "lake-threads"), "dask": str(tmp_path / "lake-dask")}

    monkeypatch.delenv("CE_DASK_ADDRESS", raising=False)
    threads = ingest_catalog.with_options(task_runner=task_runner_for(load_settings(lake_url=lakes["threads"])))(
        feed=str(feed), lake_url=lakes["threads"], batch_size=batch_size)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # Configured the way a deployment would be: through the environment.
        monkeypatch.setenv("CE_DASK_ADDRESS", cluster.scheduler_address)
        runner = task_runner_for(load_settings(lake_url=lakes["dask"]))
        assert isinstance(runner, DaskTaskRunner)
        with get_task_stream(client) as stream:
            dask = ingest_catalog.with_options(task_runner=runner)(
                feed=str(feed), lake_url=lakes["dask"], batch_size=batch_size)
        workers = set(client.scheduler_info()["workers"])

    batches = -(-threads.rows // batch_size)
    assert batches >= 3, "the workload must fan out into several batches"
    # Every batch ran as a Dask task on one of the cluster's worker processes.
    assert len(stream.data) == batches
    assert {entry["worker"] for entry in stream.data} <= workers

    def counts(summary):
        return {k: v for k, v in summary.counts().items() if k != "seconds"}

    assert counts(dask) == counts(threads)
    assert dask.quarantined == threads.quarantined == 0 and threads.ingested_new == threads.rows
    objects = {name: lake_objects(Path(url)) for name, url in lakes.items()}
    rows = catalog_rows(lakes["threads"])
    assert len(rows) == threads.rows
    assert {k for k in objects["threads"] if k.startswith("images/normalized/")} == {r["image_key"] for r in rows}
    assert objects["dask"] == objects["threads"]  # same keys, same bytes
    assert catalog_rows(lakes["dask"]) == rows
    assert pc.count_distinct(manifests.read(Lake.from_url(lakes["dask"]), "catalog")["run_id"]).as_py() == 1
