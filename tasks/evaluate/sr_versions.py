"""Super-resolution versions on the test split: each at the scale it was trained for, beside the
classical baselines, recorded and gated (only x2 versions can be promoted: the primary metric is
the x2 gain; others get a refusal saying so).

The same code judges the restoration kind (`kind="restore"`): its versions on the test pairs of
the realistic degradation, against the best classical pipeline (`best_classical=True`) rather
than bicubic alone, so a restoration model reaches the catalog only if it beats what a shop
could do without one.

The baselines' own rows are recorded once per scale and test set (model_name = the enhancer,
version "classical"). The champion is compared on the candidate's data: if it was measured on
another test set (the catalog grew), it is measured again on this one before the comparison.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence

from catalog_enhance.tasks.evaluate.gate import (
    primary_value,
    record_and_gate,
    record_and_refuse,
    record_evaluation,
    registry_row,
)
from catalog_enhance.tasks.evaluate.results import VersionResult
from catalog_enhance.tasks.evaluate.sr_eval import REFERENCE
from catalog_enhance.tasks.evaluate.sr_test import (
    BASELINE_VERSION,
    SCALES,
    dataset_hash as sr_dataset_hash,
    degradation_config_hash,
    evaluate_sr_scale,
    sr_enhancer,
)
from catalog_enhance.tasks.inference.enhancers import Enhancer
from catalog_enhance.tasks.inference.trained import TrainedModel, load_trained
from catalog_enhance.tasks.kinds import KindEvaluation
from catalog_enhance.tasks.lake.champions import current_champion, read_evaluations
from catalog_enhance.tasks.lake.storage import Lake

log = logging.getLogger(__name__)


def _metadata(row: dict) -> dict:
    return json.loads(row["metadata_json"])


def sr_scale_of(row: dict) -> int:
    return int(_metadata(row)["scale"])


def baselines_recorded(lake: Lake, scale: int, dataset_hash: str, kind: str = "sr") -> bool:
    scope = f"scale={scale}"
    return any(
        r["record"] == "evaluation" and r["model_name"] == REFERENCE and r["version"] == BASELINE_VERSION
        and r["scope"] == scope and r["dataset_hash"] == dataset_hash and r["model_kind"] == kind
        for r in read_evaluations(lake).to_pylist()
    )


def evaluate_sr_versions(lake: Lake, rows: Iterable[dict], *, scales: Sequence[int] = SCALES,
                         run_id: str | None = None, max_images: int | None = None, kind: str = "sr",
                         degradation: str = "bicubic", best_classical: bool = False) -> KindEvaluation:
    """Evaluate `kind`'s registry `rows` (each at its scale) on the test pairs of the named
    `degradation` and, at every scale in `scales` whose test set has no baseline rows yet, the
    classical baselines; record, gate (x2) against bicubic (or, with `best_classical`, the best
    classical baseline), return results."""
    rows = [r for r in rows if r["kind"] == kind]
    run = KindEvaluation()
    by_scale: dict[int, list[dict]] = {}
    for row in rows:
        try:
            by_scale.setdefault(sr_scale_of(row), []).append(row)
        except (KeyError, ValueError, TypeError) as error:
            run.failures.append(f"{row['name']} {row['version']}: no usable scale in its metadata ({error})")
    for scale in sorted(set(scales) | set(by_scale)):
        versions = by_scale.get(scale, [])
        try:
            config_hash = degradation_config_hash(lake, degradation)
            data_hash = sr_dataset_hash(lake, scale, config_hash=config_hash)
        except FileNotFoundError as error:
            run.failures += [f"{r['name']} {r['version']}: {error}" for r in versions]
            continue
        need_baselines = not baselines_recorded(lake, scale, data_hash, kind)
        if not versions and not need_baselines:
            continue
        models: dict[str, Enhancer] = {}
        loaded: dict[str, TrainedModel] = {}
        for row in versions:
            try:
                loaded[row["version"]] = trained = load_trained(lake, row)
                models[row["version"]] = sr_enhancer(trained)
            except Exception as error:  # noqa: BLE001 - one unloadable version must not stop the others
                run.failures.append(f"{row['name']} {row['version']}: cannot load ({type(error).__name__}: {error})")
        champion = current_champion(lake, kind)
        remeasure_champion = (scale == 2 and models and champion is not None and champion.dataset_hash != data_hash
                              and champion.version not in models)
        if remeasure_champion and champion is not None:
            champion_row = registry_row(lake, champion.model_name, champion.version)
            try:
                if champion_row:  # else not re-measured: its recorded value is used
                    models[champion.version] = sr_enhancer(load_trained(lake, champion_row))
            except Exception as error:  # noqa: BLE001
                log.warning("cannot load SR champion %s (%s); its recorded value is used", champion.version, error)
        result = evaluate_sr_scale(lake, scale, models, max_images=max_images, config_hash=config_hash)
        if result.n_images == 0:
            run.deferred += [f"{r['name']} {r['version']}: no test pairs at x{scale} ({degradation} degradation)"
                             for r in versions]
            continue
        if need_baselines:
            record_evaluation(lake, [{**row, "run_id": run_id} for row in result.baseline_rows(kind)])
            run.baselines_recorded.append(scale)
        champion_value = None
        if remeasure_champion and champion is not None and champion.version in set(result.summary["enhancer"]):
            champion_value = primary_value(result.rows_for(champion.version, model_name=champion.model_name,
                                                           version=champion.version, kind=kind), kind)
        for row in versions:
            if row["version"] not in loaded:
                continue
            version_rows = result.rows_for(row["version"], model_name=row["name"], version=row["version"], kind=kind)
            common = dict(model_name=row["name"], kind=kind, version=row["version"], rows=version_rows,
                          dataset_hash=result.dataset_hash, run_id=run_id)
            if scale != 2:
                decision = record_and_refuse(lake, **common, reason=(
                    f"{row['name']} is trained for x{scale}; the {kind} champion is chosen on psnr_y_gain at x2 "
                    f"(its x{scale} figures are recorded)"))
            else:
                try:
                    candidate = primary_value(version_rows, kind)
                except (KeyError, TypeError) as error:
                    run.failures.append(f"{row['name']} {row['version']}: no x2 gain ({error})")
                    continue
                if candidate is None or not math.isfinite(candidate):
                    decision = record_and_refuse(lake, **common,
                                          reason=f"{row['name']} could not be scored at x2 (see the errors)")
                else:
                    # The re-measured value belongs to the champion met at the start of this scale;
                    # once a version of this run is promoted, its own (same-data) value is used.
                    same_champion = current_champion(lake, kind) == champion
                    baseline = result.best_baseline()[1] if best_classical else 0.0
                    decision = record_and_gate(lake, **common, candidate=candidate, baseline=baseline,
                                     champion_value=champion_value if same_champion else None)
            run.results.append(VersionResult(row["name"], row["version"], kind, result.dataset_hash,
                                             version_rows, decision, result))
    return run


