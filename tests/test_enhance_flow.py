"""Catalog enhancement: outputs, lineage, incrementality, quarantine, ad-hoc folders, the Prefect flow.

One lake is built per module (a small ingested catalog with RGB, RGBA and a duplicated image, SR
pairs, two tiny ESPCN versions trained and registered, one tiny CycleGAN); every test works on
its own copy of it, so what one run writes never leaks into another test.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image
from prefect.states import Failed
from skimage import data as skdata
from sr_lake import build_sr_lake

from catalog_enhance.data_contracts.enhancements import ENHANCEMENTS
from catalog_enhance.tasks.inference.tiling import fit_size
from catalog_enhance.tasks.enhance import (
    EnhanceParams,
    NoChampion,
    enhance_catalog,
    enhance_folder,
    is_transient_storage_error,
    load_for_params,
)
from catalog_enhance.tasks.evaluate.gate import promote_if_better
from catalog_enhance.tasks.imaging.codec import load_image
from catalog_enhance.tasks.ingest.run import ingest_feed
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.model_registry import register_version
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.runtime import select_runtime
from catalog_enhance.tasks.train.config import make_config
from catalog_enhance.tasks.train.loop import train_model

CPU = select_runtime("cpu")
SKUS = ("a-studio", "b-life", "c-cutout", "d-studio", "e-life", "f-dup")


# -- the module's lake ------------------------------------------------------------------------


def _photo(name: str, h: int, w: int, y: int = 100, x: int = 100) -> np.ndarray:
    photo = getattr(skdata, name)()
    return np.ascontiguousarray(photo[y : y + h, x : x + w, :3])


def _cutout(size: int = 24) -> np.ndarray:
    """Right half an opaque photo, left half fully transparent (colour under it is garbage)."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = _photo("coffee", size, size)
    rgba[:, : size // 2, :3] = 0
    rgba[:, size // 2 :, 3] = 255
    return rgba


def _write_catalog_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    Image.fromarray(_photo("astronaut", 24, 32)).save(folder / "a.png")
    Image.fromarray(_photo("chelsea", 28, 20)).save(folder / "b.png")
    Image.fromarray(_cutout()).save(folder / "c.png")
    Image.fromarray(_photo("rocket", 40, 64)).save(folder / "d.png")
    Image.fromarray(_photo("coffee", 30, 30)).save(folder / "e.png")
    feed = folder / "feed.csv"
    rows = [("a-studio", "a.png", "studio"), ("b-life", "b.png", "lifestyle"), ("c-cutout", "c.png", "cutout"),
            ("d-studio", "d.png", "studio"), ("e-life", "e.png", "lifestyle"), ("f-dup", "a.png", "lifestyle")]
    with feed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "image_uri", "category", "style"])
        for sku, uri, style in rows:
            writer.writerow([sku, uri, "toys", style])
    return feed


def _train(lake: Lake, model: str, **overrides) -> dict:
    config = make_config(model, "tiny", **overrides)
    return register_version(lake, train_model(config, lake, runtime=CPU))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enhance")
    feed = _write_catalog_images(root / "shop")
    lake = Lake.from_url(str(root / "lake"))
    summary = ingest_feed(lake, load_settings(lake_url=str(root / "lake")), str(feed))
    assert summary.ingested_new == len(SKUS) and summary.quarantined == 0
    build_sr_lake(lake, train=4, val=2, size=32)
    espcn = [_train(lake, "espcn", steps=3, seed=seed) for seed in (0, 1)]
    cyclegan = _train(lake, "cyclegan", steps=2, **{"data.split": None})
    return {"root": root / "lake", "feed": feed, "espcn": espcn, "cyclegan": cyclegan}


@pytest.fixture()
def lake(template, tmp_path) -> Lake:
    shutil.copytree(template["root"], tmp_path / "lake")
    return Lake.from_url(str(tmp_path / "lake"))


def snapshot(lake: Lake) -> dict[str, tuple[int, int]]:
    """Every file of a local lake with its (mtime_ns, size)."""
    root = Path(lake.root)
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def catalog_rows(lake: Lake) -> dict[str, dict]:
    return {r["sku"]: r for r in manifests.current_catalog(manifests.read(lake, "catalog")).to_pylist()}


def catalog_rows_of(template) -> dict[str, dict]:
    return catalog_rows(Lake.from_url(str(template["root"])))


def run(lake: Lake, **kwargs):
    # Enhancement uses only versions the gate promoted unless one is named, and the gate may refuse
    # these 3-step models: so tests name the models (`model=None` asks for the gate's champion).
    kwargs.setdefault("model", "espcn")  # its newest version
    kwargs.setdefault("style_model", "cyclegan")  # used only with style_transform
    return enhance_catalog(lake, kwargs.pop("params", EnhanceParams()), runtime=CPU, chunk_size=2, **kwargs)


# -- outputs and lineage ----------------------------------------------------------------------


def test_every_catalog_image_is_enhanced_x2_with_alpha_and_lineage(lake, template):
    summary = run(lake)
    best = template["espcn"][-1]  # "espcn" names its newest version
    assert (summary.model_version, summary.champion_source) == (best["version"], "requested")
    assert summary.images_considered == summary.enhanced == len(SKUS)
    assert summary.images_computed == summary.outputs_written == len(SKUS) - 1  # f-dup shares a-studio's image
    assert summary.skipped == summary.quarantined == 0 and summary.manifest_written

    manifest = manifests.read(lake, "enhancements")
    assert ENHANCEMENTS.validate(manifest) == []
    rows = {r["sku"]: r for r in manifest.to_pylist()}
    catalog = catalog_rows(lake)
    assert set(rows) == set(SKUS)
    for sku, row in rows.items():
        source = catalog[sku]
        output = lake.read_bytes(row["output_key"])
        pixels = load_image(output)
        assert (row["input_sha256"], row["input_key"], row["catalog_version"]) == (
            source["image_sha256"], source["image_key"], source["version"])
        assert (row["model_name"], row["model_version"], row["style_model_version"]) == ("espcn", best["version"], None)
        assert row["output_key"].startswith(f"enhanced/espcn/{best['version']}/{row['params_hash']}/")
        assert row["output_sha256"] == hashlib.sha256(output).hexdigest()
        assert json.loads(row["params_json"])["scale"] == 2 and row["run_id"] == summary.run_id
        assert pixels.shape[:2] == (2 * source["height"], 2 * source["width"]) == (row["height"], row["width"])
        assert (row["input_height"], row["input_width"]) == (source["height"], source["width"])
        assert row["mode"] == source["mode"] == ("RGBA" if pixels.shape[2] == 4 else "RGB")
    assert rows["f-dup"]["output_key"] == rows["a-studio"]["output_key"]

    cutout = load_image(lake.read_bytes(rows["c-cutout"]["output_key"]))
    assert cutout.shape == (48, 48, 4)
    # Transparency survives: transparent stays transparent, opaque stays opaque (away from the edge),
    # and the visible colour is the photo's, not black.
    assert (cutout[:, :20, 3] == 0).all() and (cutout[:, 28:, 3] == 255).all()
    assert cutout[:, 28:, :3].mean() > 40


def test_a_rerun_writes_nothing(lake):
    run(lake)
    before = snapshot(lake)
    again = run(lake)
    assert (again.enhanced, again.images_computed, again.outputs_written, again.skipped) == (0, 0, 0, len(SKUS))
    assert not again.manifest_written and "nothing new" in again.verdict()
    assert snapshot(lake) == before


def test_a_run_that_died_before_its_manifest_is_resumed_without_recomputing(lake):
    run(lake)
    outputs = {k: v for k, v in snapshot(lake).items() if k.startswith("enhanced/")}
    manifests.remove(lake, "enhancements")  # died after writing images, before the manifest
    lake.delete(sorted(outputs)[0])  # ... and before one of the images
    resumed = run(lake)
    assert (resumed.resumed, resumed.images_computed, resumed.outputs_written) == (len(outputs) - 1, 1, 1)
    assert resumed.enhanced == len(SKUS) and ENHANCEMENTS.validate(manifests.read(lake, "enhancements")) == []
    after = {k: v for k, v in snapshot(lake).items() if k.startswith("enhanced/")}
    assert set(after) == set(outputs)
    assert {k: after[k] for k in sorted(outputs)[1:]} == {k: outputs[k] for k in sorted(outputs)[1:]}
    rows = manifests.read(lake, "enhancements").to_pylist()
    assert all(r["output_sha256"] == hashlib.sha256(lake.read_bytes(r["output_key"])).hexdigest() for r in rows)


def test_a_new_champion_re_enhances_everything_for_its_version_only(lake, template):
    v1, v2 = (r["version"] for r in template["espcn"])

    def promote(version: str, value: float) -> None:
        decision = promote_if_better(lake, model_name="espcn", kind="sr", version=version, candidate=value,
                                     baseline=0.0, dataset_hash="test")
        assert decision.promote, decision.reason

    promote(v1, 1.0)
    first = run(lake, model=None)
    assert (first.model_version, first.champion_source, first.enhanced) == (v1, "gate", len(SKUS))
    v1_outputs = {k: v for k, v in snapshot(lake).items() if k.startswith(f"enhanced/espcn/{v1}/")}

    promote(v2, 2.0)
    second = run(lake, model=None)
    assert (second.model_version, second.champion_source) == (v2, "gate")
    assert second.enhanced == len(SKUS) and second.skipped == 0 and second.outputs_written == len(SKUS) - 1
    after = snapshot(lake)
    assert len([k for k in after if k.startswith(f"enhanced/espcn/{v2}/")]) == len(SKUS) - 1
    assert {k: v for k, v in after.items() if k.startswith(f"enhanced/espcn/{v1}/")} == v1_outputs
    manifest = manifests.read(lake, "enhancements")
    assert sorted(pc.value_counts(manifest["model_version"]).to_pylist(), key=lambda c: c["values"]) == sorted(
        [{"values": v1, "counts": len(SKUS)}, {"values": v2, "counts": len(SKUS)}], key=lambda c: c["values"])

    # Asking for the old version again, or re-running the new champion: nothing to do.
    old = run(lake, model=v1)
    assert (old.model_version, old.champion_source, old.enhanced, old.skipped) == (v1, "requested", 0, len(SKUS))
    assert run(lake, model=None).enhanced == 0
    assert snapshot(lake) == after


def test_a_x2_night_never_picks_a_x3_model_even_a_champion(lake, template):
    """Registering a model of another scale (as a x3 experiment does) must not change what a x2 run uses."""
    build_sr_lake(lake, train=4, val=2, size=36, scale=3)
    x3 = _train(lake, "espcn", steps=3, seed=2, **{"data.scale": 3})
    v1 = template["espcn"][0]["version"]
    decision = promote_if_better(lake, model_name="espcn", kind="sr", version=x3["version"], candidate=9.0,
                                 baseline=0.0, dataset_hash="test")
    assert decision.promote, decision.reason

    # Default scale 2: the x3 champion does not fit, and no x2 version was gated: nothing is used
    # behind the caller's back, the error says what to name.
    with pytest.raises(NoChampion, match=r"no gated champion for x2 sr .*is not a x2 model; name a model with --model espcn"):
        run(lake, model=None)
    assert run(lake, params=EnhanceParams(scale=3), model=None).model_version == x3["version"]
    assert run(lake, model=v1).model_version == v1
    with pytest.raises(ValueError, match="x3 model but scale=2"):
        run(lake, model=x3["version"])


def test_a_corrupt_input_is_quarantined_and_the_others_succeed(lake):
    broken = catalog_rows(lake)["b-life"]
    lake.write_bytes(broken["image_key"], b"this is not a png at all")
    summary = run(lake)
    assert summary.quarantined == 1 and summary.enhanced == len(SKUS) - 1
    (record,) = manifests.read(lake, "quarantine").filter(pc.equal(manifests.read(lake, "quarantine")["stage"], "enhance")).to_pylist()
    assert (record["sku"], record["reason"], record["run_id"]) == ("b-life", "enhancement_failed", summary.run_id)
    assert "SKU b-life" in record["detail"] and "corrupt input" in record["detail"]
    assert set(manifests.read(lake, "enhancements")["sku"].to_pylist()) == set(SKUS) - {"b-life"}

    # The broken image is tried again next time, fails the same way, and nothing is re-written.
    before = snapshot(lake)
    again = run(lake)
    assert (again.quarantined, again.quarantine_appended, again.enhanced) == (1, 0, 0)
    assert snapshot(lake) == before


def test_target_long_side_gives_the_exact_long_side(lake):
    summary = run(lake, params=EnhanceParams(target_long_side=50))
    assert summary.enhanced == len(SKUS)
    catalog = catalog_rows(lake)
    for row in manifests.read(lake, "enhancements").to_pylist():
        source = catalog[row["sku"]]
        pixels = load_image(lake.read_bytes(row["output_key"]))
        assert pixels.shape[:2] == fit_size(source["height"], source["width"], 50) == (row["height"], row["width"])
        assert max(pixels.shape[:2]) == 50
    # A different size is a different params identity: the x2 run still has everything to do.
    assert run(lake).enhanced == len(SKUS)


def test_the_studio_transform_runs_on_lifestyle_images_only(lake, template):
    plain = run(lake)
    styled = run(lake, params=EnhanceParams(style_transform=True))
    lifestyle = {"b-life", "e-life", "f-dup"}
    # Studio and cutout images have the plain params identity: already done, skipped.
    assert (styled.enhanced, styled.skipped) == (len(lifestyle), len(SKUS) - len(lifestyle))
    assert styled.style_model_version == template["cyclegan"]["version"]
    rows = manifests.read(lake, "enhancements").to_pylist()
    by_hash = {}
    for row in rows:
        by_hash.setdefault(row["params_hash"], set()).add(row["sku"])
    assert by_hash[plain.params_hash] == set(SKUS)
    (style_hash,) = set(by_hash) - {plain.params_hash}
    assert by_hash[style_hash] == lifestyle
    for row in rows:
        if row["params_hash"] == style_hash:
            assert row["style_model_version"] == template["cyclegan"]["version"]
            assert json.loads(row["params_json"])["style_model_version"] == template["cyclegan"]["version"]
            plain_row = next(r for r in rows if r["sku"] == row["sku"] and r["params_hash"] == plain.params_hash)
            assert (row["width"], row["height"]) == (plain_row["width"], plain_row["height"])
            assert row["output_sha256"] != plain_row["output_sha256"]


def test_models_are_loaded_once_per_process_not_per_chunk(lake, monkeypatch):
    from catalog_enhance.tasks.enhance import loaded as core

    loads = []

    def counting(*args, **kwargs):
        loads.append(args[1]["version"])
        return real(*args, **kwargs)

    real = core.load_trained
    monkeypatch.setattr(core, "load_trained", counting)
    summary = run(lake)  # five images in chunks of two: three chunks
    assert summary.images_computed == 5 and loads == [summary.model_version]
    run(lake, params=EnhanceParams(target_long_side=40))
    assert loads == [summary.model_version]


# -- parameters and retry decisions -----------------------------------------------------------


def test_params_identity():
    assert EnhanceParams(target_long_side=2048).scale is None
    assert EnhanceParams(batch_tiles=1).params_hash() == EnhanceParams(batch_tiles=32).params_hash()
    assert EnhanceParams(tile=128).params_hash() != EnhanceParams().params_hash()
    styled = EnhanceParams(style_transform=True)
    assert styled.params_hash("v1") != styled.params_hash("v2") != EnhanceParams().params_hash()
    assert styled.for_image(False).params_hash() == EnhanceParams().params_hash()
    with pytest.raises(ValueError):
        styled.params_hash()
    with pytest.raises(ValueError):
        EnhanceParams(scale=None)


def test_only_transient_storage_errors_are_retried():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from catalog_enhance.flows.enhance import retry_on_transient_storage_error

    def s3_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    slow_down = OSError(errno.EBUSY, "Please reduce your request rate")
    slow_down.__cause__ = s3_error("SlowDown", 503)
    missing = FileNotFoundError("no such key")
    missing.__cause__ = s3_error("NoSuchKey", 404)
    transient = [ConnectionResetError(), TimeoutError(), slow_down, EndpointConnectionError(endpoint_url="http://s3"),
                 s3_error("InternalError", 500)]
    deterministic = [missing, PermissionError(), ValueError("corrupt"), OSError("image file is truncated"),
                     s3_error("AccessDenied", 403), RuntimeError("tile failed")]
    assert all(is_transient_storage_error(e) for e in transient)
    assert not any(is_transient_storage_error(e) for e in deterministic)
    assert retry_on_transient_storage_error(None, None, Failed(data=ConnectionResetError()))
    assert not retry_on_transient_storage_error(None, None, Failed(data=ValueError("corrupt image")))


# -- ad-hoc folders ---------------------------------------------------------------------------


def test_enhance_folder_enhances_the_images_and_reports_the_rest(lake, tmp_path, monkeypatch):
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(_cutout(20)).save(folder / "cutout.png")
    Image.fromarray(_photo("astronaut", 18, 26)).save(folder / "photo.jpg", quality=95)
    (folder / "notes.png").write_text("not an image, whatever the name says")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    params = EnhanceParams()
    _, models = load_for_params(lake, params, model="espcn", runtime=CPU)

    monkeypatch.chdir(tmp_path)  # a relative folder, as typed on the command line
    result = enhance_folder("inputs", Path("out"), models, params, runtime=CPU,
                            settings=load_settings(lake_url=lake.root))
    assert (result.enhanced, result.failed) == (2, 1)
    cutout = load_image((tmp_path / "out" / "cutout.png.png").read_bytes())
    photo = load_image((tmp_path / "out" / "photo.jpg.png").read_bytes())
    assert cutout.shape == (40, 40, 4) and (cutout[:, :16, 3] == 0).all()
    assert photo.shape == (36, 52, 3)
    assert not (tmp_path / "out" / "notes.png.png").exists()
    with result.summary_path.open() as handle:
        summary = {row["input"]: row for row in csv.DictReader(handle)}
    assert set(summary) == {"cutout.png", "photo.jpg", "notes.png"}
    assert summary["notes.png"]["status"] == "failed" and summary["notes.png"]["reason"] == "not_an_image"
    assert summary["photo.jpg"]["output"] == "photo.jpg.png" and summary["photo.jpg"]["width"] == "52"


def test_enhance_folder_takes_a_feed_and_names_outputs_by_sku(lake, template, tmp_path):
    feed = tmp_path / "feed.csv"
    shop = template["feed"].parent
    feed.write_text("sku,image_uri,category,style\n"
                    f"shoe/1,{shop / 'b.png'},toys,lifestyle\n"
                    f"shoe/2,{shop / 'missing.png'},toys,studio\n")
    params = EnhanceParams(target_long_side=40)
    _, models = load_for_params(lake, params, model="espcn", runtime=CPU)
    # The images live outside the feed's folder: allowed only because that folder is a local root.
    refused = enhance_folder(str(feed), tmp_path / "refused", models, params, runtime=CPU,
                             settings=load_settings(lake_url=lake.root))
    assert {item["reason"] for item in refused.items} == {"unsafe_path"}
    result = enhance_folder(str(feed), tmp_path / "out", models, params, runtime=CPU,
                            settings=load_settings(lake_url=lake.root, local_roots=[str(shop)]))
    assert (result.enhanced, result.failed) == (1, 1)
    assert max(load_image((tmp_path / "out" / "shoe%2F1.png").read_bytes()).shape[:2]) == 40
    reasons = {item["input"]: item["reason"] for item in result.items}
    assert reasons == {"row 1 (SKU shoe/1)": "", "row 2 (SKU shoe/2)": "not_found"}


# -- the Prefect flow -------------------------------------------------------------------------


def _artifacts_of(flow_run_id: str) -> dict[str, dict]:
    # Straight to the API, as in test_ingest: the client's request body (nulls) is refused here.
    import httpx
    from prefect.settings import PREFECT_API_URL

    response = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter",
                          json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 20})
    response.raise_for_status()
    return {a["key"]: a for a in response.json()}


def test_the_flow_ingests_a_feed_enhances_and_leaves_its_artifacts(lake, template, prefect_harness):
    from catalog_enhance.flows.enhance import enhance

    # The flow ingests the feed first; the ingested image of b-life is then found broken.
    manifests.remove(lake, "catalog")
    broken_key = catalog_rows_of(template)["b-life"]["image_key"]
    lake.write_bytes(broken_key, b"garbage")
    # The model named: the gate may refuse these tiny test models (and enhancement never falls back).
    summary = enhance(feed=str(template["feed"]), lake_url=lake.root, chunk_size=2, device="cpu", model="espcn")
    assert summary.images_considered == len(SKUS) and summary.enhanced == len(SKUS) - 1
    assert summary.quarantined == 1 and summary.champion_source == "requested"
    assert all(lake.exists(r["output_key"]) for r in manifests.read(lake, "enhancements").to_pylist())

    artifacts = _artifacts_of(summary.run_id)
    assert {"enhance-summary", "enhance-progress", "enhance-quarantine"} <= set(artifacts)
    assert artifacts["enhance-progress"]["data"] == 100.0
    assert summary.model_version in artifacts["enhance-summary"]["data"]
    assert "requested" in artifacts["enhance-summary"]["data"]
    assert "b-life" in str(artifacts["enhance-quarantine"]["data"])

    before = snapshot(lake)
    again = enhance(lake_url=lake.root, chunk_size=2, device="cpu", model="espcn")
    assert (again.enhanced, again.skipped, again.quarantined) == (0, len(SKUS) - 1, 1)
    assert snapshot(lake) == before


@pytest.mark.dask
def test_the_fan_out_on_a_local_dask_cluster_writes_the_same_bytes_as_threads(template, tmp_path, prefect_harness,
                                                                               monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream
    from prefect_dask import DaskTaskRunner

    from catalog_enhance.flows.enhance import enhance
    from catalog_enhance.flows.runners import task_runner_for

    lakes = {name: tmp_path / name for name in ("threads", "dask")}
    for path in lakes.values():
        shutil.copytree(template["root"], path)

    monkeypatch.delenv("CE_DASK_ADDRESS", raising=False)
    threads = enhance.with_options(task_runner=task_runner_for(load_settings(lake_url=str(lakes["threads"]))))(
        lake_url=str(lakes["threads"]), chunk_size=2, device="cpu", model="espcn")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        monkeypatch.setenv("CE_DASK_ADDRESS", cluster.scheduler_address)
        runner = task_runner_for(load_settings(lake_url=str(lakes["dask"])))
        assert isinstance(runner, DaskTaskRunner)
        with get_task_stream(client) as stream:
            dask = enhance.with_options(task_runner=runner)(lake_url=str(lakes["dask"]), chunk_size=2, device="cpu",
                                                            model="espcn")
        workers = set(client.scheduler_info()["workers"])

    # Five distinct images in chunks of two: three chunks, each a Dask task on a worker process,
    # which loaded the model itself from the registry row (no module was shipped).
    assert len(stream.data) == 3 and {entry["worker"] for entry in stream.data} <= workers
    assert dask.enhanced == threads.enhanced == len(SKUS)

    def outputs(path: Path) -> dict[str, bytes]:
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted((path / "enhanced").rglob("*.png"))}

    assert outputs(lakes["dask"]) == outputs(lakes["threads"]) and len(outputs(lakes["threads"])) == len(SKUS) - 1

    def lineage(path: Path) -> list[dict]:
        table = manifests.read(Lake.from_url(str(path)), "enhancements")
        table = table.drop_columns(["seconds", "created_at", "run_id"])
        return table.sort_by([("sku", "ascending")]).to_pylist()

    assert lineage(lakes["dask"]) == lineage(lakes["threads"])
