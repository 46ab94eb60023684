"""nightly-enhancement: the unattended chain, incremental at every stage.

ingest (only new/changed images are read) -> pairs (only images without pairs) -> training
(only models with no registered version, or all when `retrain`) -> ... Each stage is a subflow,
so the Prefect UI shows one run with the stages nested under it, and a failing stage fails the
night instead of leaving it green.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from catalog_enhance.flows.enhance import enhance as enhance_catalog
from catalog_enhance.flows.evaluate import evaluate_models
from catalog_enhance.flows.ingest import ingest_catalog
from catalog_enhance.flows.pairs import make_pairs
from catalog_enhance.flows.runners import task_runner_for
from catalog_enhance.flows.train import train_models
from catalog_enhance.tasks.enhance.run import EnhanceSummary
from catalog_enhance.tasks.evaluate.pipeline import EvaluationSummary
from catalog_enhance.tasks.ingest.run import IngestSummary
from catalog_enhance.tasks.kinds import trainable_models
from catalog_enhance.tasks.lake.model_registry import latest_version
from catalog_enhance.tasks.pairs.run import PairsSummary
from catalog_enhance.tasks.lake.settings import load_settings
from catalog_enhance.tasks.lake.storage import Lake


@dataclass
class NightlySummary:
    lake_uri: str
    ingest: IngestSummary
    pairs: PairsSummary
    training: list[dict] = field(default_factory=list)
    evaluation: EvaluationSummary | None = None
    enhancement: EnhanceSummary | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def sections(self) -> list[tuple[str, dict]]:
        return [
            ("ingestion", self.ingest.counts()),
            ("pairs", self.pairs.counts()),
            ("training", {r["name"]: f"{r['version']} ({r['train_seconds']:.0f} s)" for r in self.training}
             or {"models trained": 0}),
            *([("champions", self._champions(self.evaluation))] if self.evaluation else []),
            *([("enhancement", self.enhancement.counts())] if self.enhancement else []),
            ("stage seconds", {k: round(v, 1) for k, v in self.seconds.items()}),
        ]

    def verdicts(self) -> list[str]:
        """One line per stage saying plainly whether it found anything new."""
        ingest, pairs = self.ingest, self.pairs
        changed = ingest.ingested_new + ingest.new_versions
        return [
            f"ingestion: {changed} new or changed image(s), {ingest.unchanged} unchanged (not re-read), "
            f"{ingest.quarantined} quarantined" if changed else
            f"ingestion: nothing new: all {ingest.unchanged} image(s) unchanged, nothing re-read or re-written"
            f" ({ingest.quarantined} row(s) quarantined)",
            f"pairs: {pairs.pairs_written} new pair(s)" if pairs.pairs_written else
            "pairs: nothing new: every current image already has its pairs",
            f"training: {len(self.training)} model(s) trained" if self.training else
            "training: nothing to train: every model has a registered version (use --retrain to retrain)",
            *([self._evaluation_verdict(self.evaluation)] if self.evaluation else []),
            *([self.enhancement.verdict()] if self.enhancement else []),
        ]

    @staticmethod
    def _champions(evaluation: EvaluationSummary) -> dict[str, str]:
        return {
            kind: f"{c.model_name} {c.version} ({c.value:.4g})" if c is not None else "none yet"
            for kind, c in evaluation.champions.items()
        }

    def quarantined(self) -> list[dict]:
        """Everything this night quarantined, with its stage and reason."""
        records = [dict(r, stage="ingest") for r in self.ingest.quarantine]
        if self.enhancement is not None:
            records += [dict(r, stage="enhance") for r in self.enhancement.quarantine]
        return records

    @staticmethod
    def _evaluation_verdict(ev: EvaluationSummary) -> str:
        if ev.deferred and not ev.results:
            return f"evaluation: {len(ev.deferred)} version(s) deferred: {'; '.join(ev.deferred)}"
        if ev.nothing_new:
            return "evaluation: nothing new to evaluate"
        promoted = sum(r.promoted for r in ev.results)
        return f"evaluation: {len(ev.results)} version(s) evaluated, {promoted} promoted; report {ev.report_uri}"

    def to_markdown(self) -> str:
        lines = ["# Nightly run", "", f"Lake: `{self.lake_uri}`", ""]
        for title, counts in self.sections():
            lines += [f"## {title}", "", "| what | value |", "|---|---|"]
            lines += [f"| {k.strip()} | {v} |" for k, v in counts.items()]
            lines.append("")
        quarantined = self.quarantined()
        if quarantined:
            lines += [f"## quarantined ({len(quarantined)}, first {min(len(quarantined), 50)})", "",
                      "| stage | sku | reason | detail |", "|---|---|---|---|"]
            lines += [f"| {r['stage']} | {r.get('sku')} | {r.get('reason')} | {r.get('detail')} |"
                      for r in quarantined[:50]]
        lines += ["", *self.verdicts()]
        return "\n".join(lines)


@flow(name="nightly-enhancement")
def nightly(
    feed: str,
    lake_url: str | None = None,
    retrain: bool = False,
    models: list[str] | None = None,
    preset: str = "cpu",
    enhance_scale: int | None = 2,
    target_long_side: int | None = None,
    style_transform: bool = False,
) -> NightlySummary:
    """Run the whole chain on a catalog feed; a second run over an unchanged feed does nothing.

    Training runs for models without a registered version, or for all of `models` when `retrain`
    (the retrain deployment and a schedule set it); otherwise the registered versions are reused.
    """
    logger = get_run_logger()
    settings = load_settings(**({"lake_url": lake_url} if lake_url else {}))
    lake = Lake.from_settings(settings)
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    ingest = ingest_catalog(feed=feed, lake_url=settings.lake_url)
    seconds["ingest"] = time.perf_counter() - started

    started = time.perf_counter()
    pairs = make_pairs(lake_url=settings.lake_url)
    seconds["pairs"] = time.perf_counter() - started

    wanted = list(models or trainable_models())
    to_train = wanted if retrain else [m for m in wanted if latest_version(lake, m) is None]
    training: list[dict] = []
    if to_train:
        started = time.perf_counter()
        training = train_models(models=to_train, preset=preset, lake_url=settings.lake_url)
        seconds["train"] = time.perf_counter() - started
    else:
        logger.info("every model has a registered version; not retraining (retrain=False)")

    # Always: it evaluates only versions without a gate decision, so an unchanged night does nothing.
    started = time.perf_counter()
    evaluation = evaluate_models(lake_url=settings.lake_url)
    seconds["evaluate"] = time.perf_counter() - started

    started = time.perf_counter()
    # No feed: ingestion already ran above. Scale-out follows CE_DASK_ADDRESS when it is set.
    # The ignore: Prefect's stubs make TaskRunner invariant in its future type, so no concrete runner
    # matches `with_options`' TaskRunner[PrefectFuture[Any]]; any runner is valid at runtime.
    enhancement = enhance_catalog.with_options(task_runner=task_runner_for(settings, max_workers=2))(  # type: ignore[arg-type]
        lake_url=settings.lake_url, scale=enhance_scale, target_long_side=target_long_side,
        style_transform=style_transform,
    )
    seconds["enhance"] = time.perf_counter() - started

    summary = NightlySummary(
        lake_uri=lake.root_uri, ingest=ingest, pairs=pairs, training=training, evaluation=evaluation,
        enhancement=enhancement,
        seconds=seconds,
    )
    create_markdown_artifact(key="nightly-summary", markdown=summary.to_markdown(), description="Nightly run")
    logger.info("nightly done: %s", {k: round(v, 1) for k, v in seconds.items()})
    return summary
