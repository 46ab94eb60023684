"""The quality gate: promotion only on a strict win over baseline and champion, all of it recorded."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from catalog_enhance.data_contracts.contracts import CONTRACTS, ContractError
from catalog_enhance.data_contracts.evaluations import EVALUATIONS
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.models import get_spec, list_models
from catalog_enhance.tasks.kinds import get_kind, kind_names
from catalog_enhance.tasks.evaluate.gate import (
    decide_promotion,
    primary_value,
    promote_if_better,
    record_evaluation,
    record_promotion,
)
from catalog_enhance.tasks.lake.champions import current_champion, read_evaluations
from catalog_enhance.tasks.evaluate.sr_eval import sr_evaluation_rows

DATASET = "ds-0123abcd"


def test_every_model_kind_has_a_primary_metric_as_data():
    # Every kind the gate promotes; the catalog classifier is evaluation's own tool, never promoted.
    assert set(kind_names()) == {get_spec(name).kind for name in list_models()} - {"classifier"}
    primary = {kind: get_kind(kind).primary_metric for kind in kind_names()}
    assert primary["sr"].metric == "psnr_y_gain" and primary["sr"].scope == "scale=2"
    assert primary["sr"].higher_is_better and primary["cyclegan"].higher_is_better
    assert not primary["gan"].higher_is_better and not primary["cgan"].higher_is_better
    assert CONTRACTS["evaluations_manifest"] is EVALUATIONS


def test_gate_accepts_a_better_version_and_names_the_numbers():
    d = decide_promotion(0.42, 0.0, 0.30, "sr")
    assert d.promote
    assert "0.4200" in d.reason and "0.0000" in d.reason and "0.3000" in d.reason and "higher" in d.reason
    first = decide_promotion(0.1, 0.0, None, "sr")
    assert first.promote and "no champion" in first.reason


@pytest.mark.parametrize(
    "candidate, baseline, champion, word",
    [
        (0.25, 0.0, 0.30, "does not beat the champion"),  # worse than the champion
        (0.30, 0.0, 0.30, "ties the champion"),  # a tie does not promote
        (0.00, 0.0, None, "ties the baseline"),
        (-0.2, 0.0, None, "does not beat the baseline"),  # no champion, still must beat bicubic
        (-0.2, 0.0, -0.5, "does not beat the baseline"),  # even if it beats a (bad) champion
        (math.nan, 0.0, None, "not a finite number"),
    ],
)
def test_gate_refuses(candidate, baseline, champion, word):
    d = decide_promotion(candidate, baseline, champion, "sr")
    assert not d.promote
    assert d.reason.startswith("refused") and word in d.reason


def test_lower_is_better_kinds_compare_the_other_way():
    assert decide_promotion(40.0, 90.0, 55.0, "gan").promote
    assert not decide_promotion(60.0, 90.0, 55.0, "gan").promote
    assert not decide_promotion(95.0, 90.0, None, "cgan").promote
    assert "lower is better" in decide_promotion(40.0, 90.0, 55.0, "gan").reason
    assert not decide_promotion(0.31, 0.0, 0.30, "sr", min_improvement=0.05).promote


def test_a_regression_never_replaces_the_champion_over_a_sequence(lake):
    assert current_champion(lake, "sr") is None
    # (model, version, PSNR-Y gain over bicubic): the champion must follow the best strict win so far.
    sequence = [
        ("srcnn", "v1", -0.10, None),  # loses to bicubic: no champion at all
        ("srcnn", "v2", 0.30, "srcnn:v2"),
        ("espcn", "v1", 0.25, "srcnn:v2"),  # regression
        ("espcn", "v2", 0.30, "srcnn:v2"),  # tie
        ("espcn", "v3", 0.55, "espcn:v3"),
        ("srcnn", "v3", 0.10, "espcn:v3"),
        ("srcnn", "v4", -1.00, "espcn:v3"),
    ]
    for model, version, gain, expected in sequence:
        decision = promote_if_better(lake, model_name=model, kind="sr", version=version, candidate=gain,
                                     baseline=0.0, dataset_hash=DATASET)
        champion = current_champion(lake, "sr")
        got = None if champion is None else f"{champion.model_name}:{champion.version}"
        assert got == expected, (model, version, decision.reason)
        assert decision.promote == (got == f"{model}:{version}")
    assert current_champion(lake, "sr").value == pytest.approx(0.55)
    assert current_champion(lake, "srcnn").version == "v2"  # by name: that model's latest promotion
    assert current_champion(lake, "gan") is None

    table = read_evaluations(lake)
    assert EVALUATIONS.validate(table) == []
    assert EVALUATIONS.stored_version(manifests.read(lake, "evaluations")) == EVALUATIONS.version
    rows = table.to_pylist()
    assert len(rows) == len(sequence)  # every decision recorded, refused ones too
    assert [r["promoted"] for r in rows] == [False, True, False, False, True, False, False]
    assert rows[2]["champion_version"] == "srcnn:v2" and rows[2]["champion_value"] == pytest.approx(0.30)
    assert all(r["reason"] for r in rows)


def test_the_champion_is_not_re_promoted_and_a_remeasured_champion_value_is_used(lake):
    promote_if_better(lake, model_name="gan", kind="gan", version="v1", candidate=50.0, baseline=200.0,
                      dataset_hash=DATASET)
    again = promote_if_better(lake, model_name="gan", kind="gan", version="v1", candidate=50.0, baseline=200.0,
                              dataset_hash=DATASET)
    assert not again.promote and "already the champion" in again.reason
    # Recorded 50, but re-measured on today's test set the champion scores 45: 48 is not a win.
    d = promote_if_better(lake, model_name="gan", kind="gan", version="v2", candidate=48.0, baseline=200.0,
                          dataset_hash=DATASET, champion_value=45.0)
    assert not d.promote and "45.0000" in d.reason
    assert current_champion(lake, "gan").version == "v1"


def test_latest_promotion_wins_by_timestamp(lake):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for version, at in (("v2", t0 + timedelta(days=1)), ("v1", t0)):
        record_promotion(lake, decide_promotion(1.0, 0.0, None, "cyclegan"), model_name="cyclegan",
                         version=version, dataset_hash=DATASET, evaluated_at=at)
    assert current_champion(lake, "cyclegan").version == "v2"


def test_evaluation_rows_are_validated_and_appended_atomically(lake):
    good = {"model_name": "srcnn", "model_kind": "sr", "version": "v1", "metric": "psnr_y", "scope": "scale=2",
            "split": "test", "value": 31.2, "higher_is_better": True, "baseline": "bicubic",
            "baseline_value": 30.9, "dataset_hash": DATASET}
    assert record_evaluation(lake, [good, {**good, "metric": "ssim_y", "value": 0.91, "baseline_value": 0.9}]) == 2
    with pytest.raises(ContractError, match="model_name"):
        record_evaluation(lake, [{**good, "model_name": ""}])
    with pytest.raises(ContractError, match="finite"):
        record_evaluation(lake, [{**good, "baseline_value": math.inf}])
    with pytest.raises(ValueError, match="evaluation rows only"):
        record_evaluation(lake, [{**good, "record": "decision"}])
    table = read_evaluations(lake)
    assert table.num_rows == 2 and EVALUATIONS.validate(table) == []  # the refused rows left no trace
    assert {r["record"] for r in table.to_pylist()} == {"evaluation"}


def test_sr_summary_rows_fit_the_contract_and_carry_the_primary_metric(lake):
    summary = pd.DataFrame(
        [
            {"scale": 2, "scope": "overall", "enhancer": "bicubic", "n_images": 3, "n_errors": 0, "psnr_y": 30.0,
             "ssim_y": 0.90, "psnr_gain": 0.0, "ssim_gain": 0.0, "share_worse": 0.0},
            {"scale": 2, "scope": "overall", "enhancer": "srcnn", "n_images": 3, "n_errors": 0, "psnr_y": 30.5,
             "ssim_y": 0.92, "psnr_gain": 0.5, "ssim_gain": 0.02, "share_worse": 1 / 3},
            {"scale": 2, "scope": "category=shoes", "enhancer": "bicubic", "n_images": 1, "n_errors": 0,
             "psnr_y": 28.0, "ssim_y": 0.8, "psnr_gain": 0.0, "ssim_gain": 0.0, "share_worse": 0.0},
            {"scale": 2, "scope": "category=shoes", "enhancer": "srcnn", "n_images": 1, "n_errors": 0,
             "psnr_y": 27.9, "ssim_y": 0.79, "psnr_gain": -0.1, "ssim_gain": -0.01, "share_worse": 1.0},
        ]
    )
    rows = sr_evaluation_rows(summary, "srcnn", model_name="srcnn", version="v7", dataset_hash=DATASET)
    assert record_evaluation(lake, rows) == len(rows) == 10
    assert primary_value(rows, "sr") == pytest.approx(0.5)
    shoes = {r["metric"]: r for r in rows if r["scope"] == "scale=2,category=shoes"}
    assert shoes["psnr_y"]["value"] == pytest.approx(27.9) and shoes["psnr_y"]["baseline_value"] == pytest.approx(28.0)
    assert shoes["psnr_y_gain"]["value"] == pytest.approx(-0.1)


def test_appends_from_many_threads_lose_no_rows(lake):
    from concurrent.futures import ThreadPoolExecutor

    row = {"model_name": "espcn", "model_kind": "sr", "metric": "psnr_y", "scope": "scale=2", "value": 30.0,
           "higher_is_better": True, "dataset_hash": DATASET}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: record_evaluation(lake, [{**row, "version": f"v{i}"}]), range(8)))
    assert sorted(r["version"] for r in read_evaluations(lake).to_pylist()) == [f"v{i}" for i in range(8)]
