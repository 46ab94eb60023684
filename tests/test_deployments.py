"""End to end, as a user deploys it: a real Prefect server, deployments/setup.sh (pools, the `gpu`
tag limit, `prefect deploy` of deployments/prefect.yaml), a process worker per pool, and flow runs
triggered through the API that must complete and leave their artifacts and lake outputs.

The chain is the real one: the nightly ingests a tiny generated catalog, makes its pairs and
trains the one model it is asked for that has no version yet (espcn, tiny preset); `retrain`
trains srcnn (tiny preset) on those pairs; `enhance` then super-resolves every catalog image with
the champion of those two versions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_server import log_tail, prefect_server, start_process, stop_process

from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.model_registry import list_versions
from catalog_enhance.demo_data.sample_catalog import build_sample_catalog
from catalog_enhance.tasks.lake.storage import Lake

pytestmark = pytest.mark.deployment

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = ["nightly-enhancement", "retrain", "enhance"]
RUN_TIMEOUT = 240


def run_and_wait(name: str, parameters: dict, logs: list[Path]):
    run = run_deployment(name=name, parameters=parameters, timeout=RUN_TIMEOUT, poll_interval=1)
    assert run.state is not None and run.state.is_completed(), (
        f"{name}: {run.state and run.state.type} {run.state and run.state.message}\n"
        + "\n".join(log_tail(p) for p in logs)
    )
    return run


def artifact_keys(client, flow_run_id) -> set[str]:
    artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key for a in artifacts}


def child_flow_run_ids(client, flow_run_id) -> list:
    parent_tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    children = client.read_flow_runs()
    task_ids = {t.id for t in parent_tasks}
    return [r.id for r in children if r.parent_task_run_id in task_ids]


def test_deployed_nightly_retrain_and_enhance_run_on_process_workers(tmp_path):
    feed = build_sample_catalog(tmp_path / "shop", tmp_path / "cache", source="skimage", max_objects=4,
                                canvas=192).feed_path
    lake_dir = tmp_path / "lake"
    # Workers as on a machine of each pool: the lake from their environment (the deployments leave
    # lake_url null), polling every second, one torch thread.
    worker_env = {"CE_LAKE_URL": str(lake_dir), "PREFECT_WORKER_QUERY_SECONDS": "1", "OMP_NUM_THREADS": "1"}
    processes = []
    with prefect_server(tmp_path / "prefect") as server:
        try:
            # As a user would: setup.sh from anywhere (it finds the repository itself).
            setup = start_process(["bash", str(REPO / "deployments" / "setup.sh"), *DEPLOYMENTS], server.env,
                                  tmp_path / "setup.log", cwd=tmp_path)
            processes.append(setup)
            assert setup.wait(timeout=240) == 0, log_tail(tmp_path / "setup.log")
            for pool in ("cpu", "gpu"):
                processes.append(start_process(server.prefect("worker", "start", "--pool", pool),
                                               {**server.env, **worker_env}, tmp_path / f"worker-{pool}.log"))
            logs = [tmp_path / "worker-cpu.log", tmp_path / "worker-gpu.log", server.log_path]
            # Idempotent: a second setup (while runs go on) changes nothing and fails on nothing.
            again = start_process(["bash", str(REPO / "deployments" / "setup.sh"), *DEPLOYMENTS], server.env,
                                  tmp_path / "setup-again.log", cwd=REPO)
            processes.append(again)

            with temporary_settings({PREFECT_API_URL: server.api_url}):
                nightly = run_and_wait("nightly-enhancement/nightly-enhancement",
                                       {"feed": str(feed), "models": ["espcn"], "preset": "tiny"}, logs)
                retrain = run_and_wait("train-models/retrain", {"models": ["srcnn"], "preset": "tiny"}, logs)
                # Named: enhancement uses only gated versions unless one is named, and the gate may
                # refuse these tiny models (the nightly then lists its enhancement as skipped).
                enhanced = run_and_wait("enhance-catalog/enhance", {"model": "srcnn"}, logs)
                assert again.wait(timeout=240) == 0, log_tail(tmp_path / "setup-again.log")

                with get_client(sync_client=True) as client:
                    deployments = {d.name: d for d in client.read_deployments()}
                    pools = [p.name for p in client.read_work_pools()]
                    gpu_limit = client.read_concurrency_limit_by_tag("gpu")
                    nightly_keys = artifact_keys(client, nightly.id)
                    for child in child_flow_run_ids(client, nightly.id):
                        nightly_keys |= artifact_keys(client, child)
                    retrain_keys = artifact_keys(client, retrain.id)
                    enhance_keys = artifact_keys(client, enhanced.id)
                    retrain_pool = client.read_flow_run(retrain.id).work_pool_name
        finally:
            for process in processes:  # before the server: a worker outliving it keeps retrying
                stop_process(process)

    assert "exists" in (tmp_path / "setup-again.log").read_text()
    # What prefect.yaml declared is what the server holds, once.
    assert sorted(deployments) == sorted(DEPLOYMENTS)
    assert sorted(p for p in pools if p in ("cpu", "gpu")) == ["cpu", "gpu"]
    night = deployments["nightly-enhancement"]
    assert sorted((s.schedule.cron, s.schedule.timezone, s.active, s.parameters) for s in night.schedules) == [
        ("0 2 * * *", "UTC", True, {}), ("0 3 * * 0", "UTC", False, {"retrain": True})]
    assert night.global_concurrency_limit.limit == 1
    assert night.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert {name: d.work_pool_name for name, d in deployments.items()} == {
        "nightly-enhancement": "cpu", "retrain": "gpu", "enhance": "cpu"}
    for d in deployments.values():  # flow runs start in this checkout, wherever it is
        [(step, inputs)] = [item for pull_step in d.pull_steps for item in pull_step.items()]
        assert step == "prefect.deployments.steps.set_working_directory"
        assert Path(inputs["directory"]).resolve() == REPO
    assert gpu_limit.concurrency_limit == 1
    assert retrain_pool == "gpu"

    assert {"nightly-summary", "ingest-summary", "make-pairs-summary", "train-espcn-summary"} <= nightly_keys
    assert {"train-models-summary", "train-srcnn-summary", "train-srcnn-loss-curve"} <= retrain_keys
    assert {"enhance-summary", "enhance-progress"} <= enhance_keys

    # Lake outputs, in the lake the workers' environment named.
    lake = Lake.from_url(str(lake_dir))
    catalog = manifests.read(lake, "catalog")
    assert catalog.num_rows == len(feed.read_text().splitlines()) - 1
    assert manifests.read(lake, "pairs").num_rows > 0
    registered = {}
    for model in ("espcn", "srcnn"):  # one by the nightly, one by retrain
        versions = list_versions(lake, model)
        assert len(versions) == 1 and versions[0]["preset"] == "tiny"
        assert lake.exists(versions[0]["checkpoint_key"])
        registered[model] = versions[0]["version"]
    enhancements = manifests.read(lake, "enhancements").to_pylist()
    # The nightly enhances with the SR champion if the gate promoted one, the enhance run with the
    # model it names: every catalog image has an output, each by a registered version.
    assert {r["sku"] for r in enhancements} == set(catalog.column("sku").to_pylist())
    for row in enhancements:  # x2 by one registered version, each output in the lake
        assert registered[row["model_name"]] == row["model_version"]
        assert (row["width"], row["height"]) == (2 * row["input_width"], 2 * row["input_height"])
        assert lake.exists(row["output_key"])
