"""The `restore` enhancement mode (issue 12, items 2 and 4): restoration models trained on realistic
degradations only, gated against the best classical pipeline on held-out realistic pairs, with
their own champion; enhancement picks the champion of the asked mode and records the mode."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sr_lake import photo_crops, write_sr_pairs
from typer.testing import CliRunner

from catalog_enhance.flows import cli
from catalog_enhance.flows.nightly import _degradations_needed, _is_required_model
from catalog_enhance.tasks.catalog.labels import NotTrainableHere
from catalog_enhance.tasks.enhance import EnhanceParams, NoChampion, enhance_catalog
from catalog_enhance.tasks.enhance.choice import choose_models
from catalog_enhance.tasks.evaluate.gate import promote_if_better
from catalog_enhance.tasks.evaluate.sr_test import degradation_config_hash, evaluate_sr_scale
from catalog_enhance.tasks.imaging.degradation_config import degradation_json, named_degradation
from catalog_enhance.tasks.imaging.degrade import degrade
from catalog_enhance.tasks.ingest.run import ingest_feed
from catalog_enhance.tasks.kinds import EvaluationContext, get_kind
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.champions import current_champion
from catalog_enhance.tasks.lake.manifests import read_pairs, table_fingerprint
from catalog_enhance.tasks.lake.model_registry import register_version
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.runtime import select_runtime
from catalog_enhance.tasks.train.config import ConfigError, make_config
from catalog_enhance.tasks.train.loop import train_model

CPU = select_runtime("cpu")
SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 3


def realistic_lr(images: list[np.ndarray], scale: int, seed: int = 0) -> list[np.ndarray]:
    """What the pairs stage does with `--degradation realistic`: one seeded draw per image."""
    config = named_degradation("realistic")
    out = []
    for i, hr in enumerate(images):
        lr = degrade(hr.astype(np.float64) / 255.0, scale, config, np.random.default_rng([seed, i]))
        out.append(np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8))
    return out


def with_realistic_pairs(lake, scale: int = 2) -> list[np.ndarray]:
    """Bicubic pairs and realistic pairs of the same HR crops, in one pairs manifest."""
    images = photo_crops(len(SPLITS), 48 if scale > 1 else 24)
    if scale > 1:
        write_sr_pairs(lake, images, SPLITS, scale)
    write_sr_pairs(lake, images, SPLITS, scale, degradation="realistic",
                   lr_images=realistic_lr(images, scale), replace=scale == 1)
    return images


def train(lake, model: str, **overrides) -> dict:
    return register_version(lake, train_model(make_config(model, "tiny", **overrides), lake, runtime=CPU))


def test_restoration_trains_on_realistic_pairs_and_fidelity_on_bicubic_ones(lake):
    write_sr_pairs(lake, photo_crops(8, 48), ["train"] * 6 + ["val"] * 2)
    with pytest.raises(NotTrainableHere, match="realistic"):  # a skip reason the nightly reports
        train(lake, "espcn_restore", steps=2)

    with_realistic_pairs(lake)
    restore = train(lake, "espcn_restore", steps=3)
    espcn = train(lake, "espcn", steps=3)

    def fingerprint(name: str) -> str:
        return table_fingerprint(read_pairs(lake, split="train", scale=2, degradation=degradation_json(name)))

    assert restore["kind"] == "restore" and espcn["kind"] == "sr"
    assert restore["data_manifest_hash"] == fingerprint("realistic") != fingerprint("bicubic")
    assert espcn["data_manifest_hash"] == fingerprint("bicubic")
    metadata = json.loads(restore["metadata_json"])
    assert metadata["degradation"] == "realistic" and metadata["channels"] == 3  # colour noise is not in Y
    assert "degradation" not in json.loads(espcn["metadata_json"])


def test_same_size_restoration_trains_at_x1(lake):
    with_realistic_pairs(lake, scale=1)
    row = train(lake, "espcn_restore", steps=2, **{"data.scale": 1})
    assert json.loads(row["metadata_json"])["scale"] == 1
    with pytest.raises(ConfigError, match="scale"):  # x1 is restoration's, not fidelity SR's
        make_config("espcn", "tiny", **{"data.scale": 1})


def test_restoration_is_gated_against_the_best_classical_pipeline_on_realistic_pairs(lake):
    with_realistic_pairs(lake)
    row = train(lake, "espcn_restore", steps=3)
    run = get_kind("restore").evaluate(lake, [row], EvaluationContext())
    assert not run.failures and [r.version for r in run.results] == [row["version"]]

    realistic = evaluate_sr_scale(lake, 2, config_hash=degradation_config_hash(lake, "realistic"))
    best, best_gain = realistic.best_baseline()
    assert best in set(realistic.summary["enhancer"]) and best_gain >= 0.0  # bicubic itself gains 0
    evaluations = manifests.read(lake, "evaluations").to_pylist()
    decision = next(r for r in evaluations if r["record"] == "decision" and r["version"] == row["version"])
    assert decision["model_kind"] == "restore"
    assert decision["baseline_value"] == pytest.approx(best_gain)
    assert decision["promoted"] == (decision["value"] > best_gain)
    # Scored on the realistic test pairs, not the bicubic ones.
    assert decision["dataset_hash"] == realistic.dataset_hash
    bicubic_test = evaluate_sr_scale(lake, 2, config_hash=degradation_config_hash(lake, "bicubic"))
    assert bicubic_test.dataset_hash != realistic.dataset_hash
    # Its baselines are the restoration kind's rows; the SR kind's champion is untouched.
    assert {r["model_kind"] for r in evaluations if r["version"] == "classical"} == {"restore"}
    assert current_champion(lake, "sr") is None


def test_a_restoration_version_is_deferred_without_realistic_test_pairs(lake):
    images = with_realistic_pairs(lake)
    row = train(lake, "espcn_restore", steps=2)
    write_sr_pairs(lake, images, SPLITS, 2)  # the realistic pairs are gone (another pairs config)
    run = get_kind("restore").evaluate(lake, [row], EvaluationContext())
    assert run.deferred and "realistic" in run.deferred[0] and not run.results


def _promote(lake, row: dict) -> None:
    promote_if_better(lake, model_name=row["name"], kind=row["kind"], version=row["version"],
                      candidate=1.0, baseline=0.0, dataset_hash="test")


def _catalog(lake, tmp_path) -> None:
    shop = tmp_path / "shop"
    shop.mkdir()
    with (shop / "feed.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "image_uri", "category", "style"])
        for i, crop in enumerate(photo_crops(2, 20, seed=5)):
            Image.fromarray(crop).save(shop / f"{i}.png")
            writer.writerow([f"sku-{i}", f"{i}.png", "toys", "studio"])
    assert ingest_feed(lake, load_settings(lake_url=lake.root_uri), str(shop / "feed.csv")).ingested_new == 2


def test_each_mode_enhances_with_its_own_champion_and_records_the_mode(lake, tmp_path):
    with_realistic_pairs(lake)
    espcn, restore = train(lake, "espcn", steps=2), train(lake, "espcn_restore", steps=2)
    with pytest.raises(NoChampion, match="restore"):
        choose_models(lake, EnhanceParams(mode="restore"))
    _promote(lake, espcn)
    _promote(lake, restore)
    assert choose_models(lake, EnhanceParams()).sr.ref.version == espcn["version"]
    assert choose_models(lake, EnhanceParams(mode="restore")).sr.ref.version == restore["version"]
    with pytest.raises(ValueError, match="is a sr model .*not a restore model"):
        enhance_catalog(lake, EnhanceParams(mode="restore"), runtime=CPU, model=espcn["version"])

    # The default mode stays out of the params identity: outputs made before modes keep their keys.
    assert "mode" not in EnhanceParams().identity()
    assert EnhanceParams(mode="restore").params_hash() != EnhanceParams().params_hash()

    _catalog(lake, tmp_path)
    for params in (EnhanceParams(), EnhanceParams(mode="restore")):
        summary = enhance_catalog(lake, params, runtime=CPU)
        assert summary.enhanced == 2, summary.counts()
    rows = manifests.read(lake, "enhancements").to_pylist()
    modes = {(r["model_name"], json.loads(r["params_json"]).get("mode", "fidelity")) for r in rows}
    assert modes == {("espcn", "fidelity"), ("espcn_restore", "restore")}
    assert len({r["output_key"] for r in rows}) == 4


def test_an_unknown_mode_is_one_line_and_exit_2():
    result = CliRunner().invoke(cli.app, ["enhance", "--mode", "sharpest"])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["input error: unknown --mode 'sharpest'; modes: fidelity, restore"]


def test_the_night_makes_the_pairs_each_kind_needs_and_requires_the_modes_kind():
    assert _degradations_needed(["srcnn", "espcn", "espcn_restore", "gan"]) == ["realistic"]
    assert _degradations_needed(["espcn"]) == []
    assert _is_required_model("espcn") and not _is_required_model("espcn_restore")
    assert _is_required_model("espcn_restore", "restore") and not _is_required_model("espcn", "restore")


def test_evaluate_sr_degrades_a_folder_realistically_and_scores_the_restoration_champion(lake, tmp_path):
    from catalog_enhance.flows.evaluate import evaluate_sr_command
    from catalog_enhance.tasks.evaluate.sr_paired import PairedFolderError

    with_realistic_pairs(lake)
    restore = train(lake, "espcn_restore", steps=2)
    _promote(lake, restore)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, crop in enumerate(photo_crops(2, 40, seed=9)):
        Image.fromarray(crop).save(photos / f"{i}.png")
    kwargs = dict(scale=2, lake_url=lake.root_uri, out=tmp_path / "scores.csv")
    result = evaluate_sr_command(photos, degradation="realistic", mode="restore", **kwargs)
    assert result.model == f"espcn_restore {restore['version']}"
    assert "realistic degradation" in result.note
    bicubic_only = evaluate_sr_command(photos, **kwargs)  # like the training pairs: bicubic, SR kind
    assert bicubic_only.model is None  # no SR model in this lake
    scored = result.summary[result.summary["scope"] == "overall"].set_index("enhancer")["psnr_y"]
    plain = bicubic_only.summary[bicubic_only.summary["scope"] == "overall"].set_index("enhancer")["psnr_y"]
    assert scored["bicubic"] < plain["bicubic"]  # the realistic inputs really are worse
    with pytest.raises(ValueError, match="unknown degradation 'studio'"):
        evaluate_sr_command(photos, degradation="studio", **kwargs)
    with pytest.raises(PairedFolderError, match="--degradation"):
        evaluate_sr_command(hr=photos, lr=photos, degradation="realistic", **kwargs)
