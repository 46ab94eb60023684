"""Evaluation of every kind, the quality gate, the report and the evaluate-models flow."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from evaluation_lake import TEST_CLASSIFIER, copy_lake, train_and_register

from catalog_enhance.flows.rendering import evaluation_markdown
from catalog_enhance.data_contracts.evaluations import EVALUATIONS
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.data_contracts.model_registry import MODELS
from catalog_enhance.tasks.evaluate.report import write_evaluation_report
from catalog_enhance.tasks.evaluate.feature_extractor import ClassifierSettings
from catalog_enhance.tasks.lake.champions import current_champion, read_evaluations
from catalog_enhance.tasks.evaluate.pipeline import evaluate_pending, pending_versions
from catalog_enhance.tasks.lake.model_registry import list_versions

SETTINGS = ClassifierSettings(**TEST_CLASSIFIER)



def rows_of(table: pa.Table, **where) -> list[dict]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in where.items())]


def value(table: pa.Table, **where) -> float:
    (row,) = rows_of(table, record="evaluation", **where)
    return row["value"]


def register_broken_version(lake, name: str) -> str:
    """A registry row whose checkpoint does not exist (a deleted or never-uploaded file)."""
    row = dict(list_versions(lake, name)[-1])
    row.update(version=f"{name}-20990101000000-broken0", checkpoint_key=f"checkpoints/{name}/gone/final.pt")
    manifests.append(lake, "models", MODELS.table([row]))
    return row["version"]


def test_every_kind_is_evaluated_recorded_and_gated_once(tmp_path):
    lake = copy_lake(tmp_path / "lake")
    versions = {r["name"]: r["version"] for r in list_versions(lake)}
    summary = evaluate_pending(lake, classifier=SETTINGS)
    assert summary.failures == []
    table = read_evaluations(lake)  # validated against the contract on read
    assert EVALUATIONS.validate(table) == []

    # One decision per version, naming its numbers; the champion is what the decisions say.
    decisions = rows_of(table, record="decision")
    assert sorted(r["version"] for r in decisions) == sorted(versions.values())
    for decision in decisions:
        assert decision["reason"].startswith("promoted" if decision["promoted"] else "refused")
        assert f"{decision['value']:.4f}" in decision["reason"]
        primary = value(table, version=decision["version"], metric=decision["metric"], scope=decision["scope"])
        assert decision["value"] == pytest.approx(primary)
        champion = current_champion(lake, decision["model_kind"])
        assert (champion is not None and champion.version == decision["version"]) == decision["promoted"]

    # SR: the model and the classical baselines on the same test pairs, overall and per category.
    srcnn = versions["srcnn"]
    gain = value(table, version=srcnn, metric="psnr_y_gain", scope="scale=2")
    bicubic = value(table, model_name="bicubic", version="classical", metric="psnr_y", scope="scale=2")
    assert gain == pytest.approx(value(table, version=srcnn, metric="psnr_y", scope="scale=2") - bicubic)
    assert rows_of(table, record="evaluation", version=srcnn, scope="scale=2,category=photo")
    for baseline in ("bicubic+unsharp", "bicubic+histeq", "bicubic+denoise"):
        assert rows_of(table, record="evaluation", model_name=baseline, scope="scale=2")

    # GAN / CGAN: FID and KID against the untrained generator; CGAN's conditional accuracy and per-category FID.
    for name in ("gan", "cgan"):
        fid = rows_of(table, record="evaluation", version=versions[name], metric="fid", scope="overall")[0]
        assert fid["baseline"] == "untrained generator"
        assert math.isfinite(fid["value"]) and math.isfinite(fid["baseline_value"])
        assert rows_of(table, record="evaluation", version=versions[name], metric="kid", scope="overall")
        accuracy = value(table, version=versions[name], metric="classifier_test_accuracy", scope="feature_extractor")
        assert 0.5 < accuracy <= 1.0  # red discs vs blue squares: well above the 0.5 of guessing
    assert 0.0 <= value(table, version=versions["cgan"], metric="conditional_accuracy", scope="overall") <= 1.0
    # Blue has 2 held-out products (an FID), red only 1 (no covariance: recorded as missing).
    assert math.isfinite(value(table, version=versions["cgan"], metric="fid", scope="category=blue"))
    assert value(table, version=versions["cgan"], metric="fid", scope="category=red") is None

    # CycleGAN: against the true studio shot, with doing nothing as the baseline.
    cyclegan = versions["cyclegan"]
    psnr = rows_of(table, record="evaluation", version=cyclegan, metric="psnr_vs_studio")[0]
    assert psnr["baseline"] == "identity" and psnr["baseline_value"] > 0
    assert 0 < value(table, version=cyclegan, metric="cycle_l1", scope="overall") < 1
    for metric in ("ssim_vs_studio", "fid_to_studio", "psnr_vs_studio_at_trained_size"):
        assert rows_of(table, record="evaluation", version=cyclegan, metric=metric)
    assert {r.model_name for r in summary.results} == set(versions)
    assert {r["model"] for r in summary.champion_rows()} >= {c.model_name for c in summary.champions.values() if c}

    # Nothing new: nothing evaluated, nothing written.
    assert pending_versions(lake) == []
    again = evaluate_pending(lake, classifier=SETTINGS)
    assert again.nothing_new and read_evaluations(lake).num_rows == table.num_rows


def test_a_version_that_cannot_be_loaded_fails_alone_and_stays_pending(tmp_path):
    lake = copy_lake(tmp_path / "lake")
    broken = register_broken_version(lake, "gan")
    summary = evaluate_pending(lake, classifier=SETTINGS)
    assert len(summary.failures) == 1 and broken in summary.failures[0]
    assert len(summary.results) == 4  # every other version was evaluated
    assert [r["version"] for r in pending_versions(lake)] == [broken]
    assert not rows_of(read_evaluations(lake), version=broken)


def test_report_lists_champions_and_where_sr_loses(tmp_path):
    lake = copy_lake(tmp_path / "lake")
    summary = evaluate_pending(lake, classifier=SETTINGS)
    key = write_evaluation_report(lake, summary)
    html = lake.read_bytes(key).decode()
    assert summary.report_uri == lake.uri(key) and summary.report_uri in evaluation_markdown(summary)
    for title in ("Champions", "Where the SR champion does not beat bicubic", "Super-resolution x2: before and after",
                  "GAN samples", "Conditional GAN samples, one row per category", "CycleGAN: lifestyle",
                  "Training curves", "Metrics across versions: sr"):
        assert title in html, title
    assert "could not be drawn" not in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_flow_records_gates_refuses_a_worse_version_and_reruns_idle(tmp_path, prefect_harness):
    from catalog_enhance.flows.evaluate import evaluate_models

    lake = copy_lake(tmp_path / "lake")
    url = str(tmp_path / "lake")
    first = evaluate_models(lake_url=url, classifier=TEST_CLASSIFIER)
    assert first.failures == [] and lake.exists(first.report_key)
    champion = current_champion(lake, "sr")
    assert champion is not None and champion.model_name == "srcnn"

    # A regression: a 1-step SRCNN. The gate refuses it and the champion stays.
    worse = train_and_register(lake, "srcnn", steps=1)
    second = evaluate_models(lake_url=url, classifier=TEST_CLASSIFIER)
    assert [r.version for r in second.results] == [worse["version"]]
    (decision,) = rows_of(read_evaluations(lake), record="decision", version=worse["version"])
    assert not decision["promoted"] and decision["reason"].startswith("refused")
    assert decision["champion_version"] == f"srcnn:{champion.version}"
    assert current_champion(lake, "sr").version == champion.version
    assert second.report_key != first.report_key and lake.exists(second.report_key)
    row = next(r for r in second.champion_rows() if r["version"] == worse["version"])
    assert row["promoted"] is False and not row["champion"]

    # Nothing new: nothing evaluated or recorded, the latest report is pointed to.
    rows_before = read_evaluations(lake).num_rows
    third = evaluate_models(lake_url=url, classifier=TEST_CLASSIFIER)
    assert third.nothing_new and read_evaluations(lake).num_rows == rows_before
    assert third.report_key == second.report_key

    # A version that cannot be evaluated fails the flow (a broken night never shows green).
    register_broken_version(lake, "cgan")
    with pytest.raises(RuntimeError, match="evaluation failed for 1 version"):
        evaluate_models(lake_url=url, classifier=TEST_CLASSIFIER)


def test_evaluate_sr_command_scores_a_folder_with_the_champion(tmp_path):
    from PIL import Image
    from sr_lake import photo_crops

    from catalog_enhance.flows.evaluate import evaluate_sr_command

    lake = copy_lake(tmp_path / "lake")
    evaluate_pending(lake, models=["srcnn"])
    champion = current_champion(lake, "sr")
    photos = tmp_path / "photos"
    (photos / "shoes").mkdir(parents=True)
    for i, crop in enumerate(photo_crops(2, 40, seed=5)):
        Image.fromarray(crop).save(photos / ("shoes" if i else "") / f"p{i}.png")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "scores.csv"
    result = evaluate_sr_command(photos, 2, lake_url=str(tmp_path / "lake"), out=out)
    assert result.model == f"srcnn {champion.version}" and result.csv_path == out and out.exists()
    scored = result.per_image[result.per_image["enhancer"] != ""]
    assert set(scored["enhancer"]) == {"bicubic", "bicubic+unsharp", "bicubic+histeq", "bicubic+denoise",
                                      "bicubic+denoise+unsharp", result.model}
    assert scored["psnr_y"].notna().all() and set(scored["file"]) == {"p0.png", "shoes/p1.png"}
    (skipped,) = result.per_image[result.per_image["enhancer"] == ""].itertuples()
    assert skipped.file == "notes.txt" and skipped.error
    assert {"overall", "category=shoes"} <= set(result.summary["scope"])
    assert result.summary_csv_path.exists()
    with pytest.raises(ValueError, match="trained for x2, not x3"):
        evaluate_sr_command(photos, 3, model="srcnn", lake_url=str(tmp_path / "lake"), out=out)
