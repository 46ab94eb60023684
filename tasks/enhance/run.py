"""A whole run: prepare (choose, load and check the models once, plan), the chunks, finish, and
the summary of what happened (`EnhanceSummary`, data only: its markdown is in `flows.rendering`).
The flow runs the same steps with the chunks as Prefect tasks; `enhance_catalog` runs them one
after another, without Prefect."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from catalog_enhance.data_contracts.layout import manifest_key
from catalog_enhance.tasks.enhance.choice import ModelChoice
from catalog_enhance.tasks.enhance.chunk import enhance_jobs
from catalog_enhance.tasks.enhance.finish import FinishResult, finish_enhancement
from catalog_enhance.tasks.enhance.loaded import EnhancementModels, load_for_params
from catalog_enhance.tasks.enhance.params import EnhanceParams
from catalog_enhance.tasks.enhance.plan import EnhanceJob, default_chunk_size, plan_enhancement
from catalog_enhance.tasks.lake import manifests
from catalog_enhance.tasks.lake.storage import Lake
from catalog_enhance.tasks.runtime import Runtime, select_runtime


@dataclass
class PreparedEnhancement:
    choice: ModelChoice
    models: EnhancementModels
    params: EnhanceParams
    jobs: list[EnhanceJob]
    images_considered: int  # current catalog SKUs
    run_id: str
    started: float


def prepare_enhancement(lake: Lake, params: EnhanceParams, *, model: str | None = None,
                        style_model: str | None = None, runtime: Runtime | None = None,
                        run_id: str | None = None) -> PreparedEnhancement:
    """Choose and load the models once, check them, and plan the jobs."""
    started = time.perf_counter()
    choice, models = load_for_params(lake, params, model=model, style_model=style_model, runtime=runtime)
    catalog = manifests.current_catalog(manifests.read(lake, "catalog"))
    jobs = plan_enhancement(catalog, manifests.read(lake, "enhancements"), choice.sr.ref, params,
                            style=None if choice.style is None else choice.style.ref,
                            style_domain=models.style_domain)
    return PreparedEnhancement(choice, models, params, jobs, catalog.num_rows, run_id or uuid.uuid4().hex, started)


@dataclass
class EnhanceSummary:
    run_id: str
    lake_uri: str
    model_name: str
    model_version: str
    champion_source: str
    champion_reason: str
    params: str  # EnhanceParams.describe()
    params_hash: str  # of the images without the studio transform
    style_model_version: str | None = None
    style_source: str | None = None
    images_considered: int = 0  # current catalog SKUs
    enhanced: int = 0  # SKUs newly recorded in the manifest by this run
    images_computed: int = 0  # distinct images run through the models
    resumed: int = 0  # outputs found in the lake from an interrupted run: recorded, not recomputed
    skipped: int = 0  # SKUs already enhanced for (version, params): nothing done
    quarantined: int = 0  # SKUs whose image failed
    quarantine_appended: int = 0
    outputs_written: int = 0
    output_megapixels: float = 0.0
    enhance_seconds: float = 0.0  # wall time of the chunks
    seconds: float = 0.0  # wall time of the whole run
    manifest_written: bool = False
    manifest_key: str = manifest_key("enhancements")
    quarantine: list[dict] = field(default_factory=list, repr=False)

    @property
    def megapixels_per_second(self) -> float:
        return self.output_megapixels / self.enhance_seconds if self.enhance_seconds > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.enhance_seconds if self.enhance_seconds > 0 else 0.0

    def counts(self) -> dict[str, object]:
        style = {"style model": f"{self.style_model_version} ({self.style_source})"} if self.style_model_version else {}
        return {
            "model": f"{self.model_name} {self.model_version}",
            "champion source": self.champion_source,
            **style,
            "params": f"{self.params} ({self.params_hash})",
            "images considered": self.images_considered,
            "enhanced": self.enhanced,
            "  run through the model": self.images_computed,
            "  resumed (output already in the lake)": self.resumed,
            "skipped (already done)": self.skipped,
            "quarantined": self.quarantined,
            "outputs written": self.outputs_written,
            "output megapixels": round(self.output_megapixels, 2),
            "enhance seconds": round(self.enhance_seconds, 2),
            "MP/s": round(self.megapixels_per_second, 3),
            "images/s": round(self.images_per_second, 2),
            "seconds": round(self.seconds, 2),
            "manifest written": "yes" if self.manifest_written else "no (nothing new)",
        }

    def verdict(self) -> str:
        model = f"{self.model_name} {self.model_version} ({self.champion_source})"
        if self.enhanced or self.quarantined:
            return (f"enhancement: {self.enhanced} image(s) enhanced by {model}, {self.skipped} already done, "
                    f"{self.quarantined} quarantined")
        return f"enhancement: nothing new: all {self.skipped} image(s) already enhanced by {model}"


def summarize(lake: Lake, prepared: PreparedEnhancement, finished: FinishResult,
              enhance_seconds: float | None = None) -> EnhanceSummary:
    """`enhance_seconds`: the wall time of the chunk stage when chunks ran concurrently
    (default: the chunks' wall times added up, right when they ran one after another)."""
    total, choice = finished.total, prepared.choice
    planned = sum(len(job.skus) for job in prepared.jobs)
    return EnhanceSummary(
        run_id=prepared.run_id,
        lake_uri=lake.root_uri,
        model_name=choice.sr.ref.name,
        model_version=choice.sr.ref.version,
        champion_source=choice.sr.source,
        champion_reason=choice.sr.reason,
        params=prepared.params.describe(),
        params_hash=prepared.params.for_image(False).params_hash(),
        style_model_version=None if choice.style is None else choice.style.ref.version,
        style_source=None if choice.style is None else choice.style.source,
        images_considered=prepared.images_considered,
        enhanced=finished.rows_added,
        images_computed=total.images_enhanced,
        resumed=total.resumed,
        skipped=prepared.images_considered - planned,
        quarantined=len(total.quarantine),
        quarantine_appended=finished.quarantine_appended,
        outputs_written=total.outputs_written,
        output_megapixels=total.output_pixels / 1e6,
        enhance_seconds=total.seconds if enhance_seconds is None else enhance_seconds,
        seconds=time.perf_counter() - prepared.started,
        manifest_written=finished.manifest_written,
        quarantine=total.quarantine,
    )


def enhance_catalog(lake: Lake, params: EnhanceParams | None = None, *, model: str | None = None,
                    style_model: str | None = None, runtime: Runtime | None = None,
                    chunk_size: int | None = None, run_id: str | None = None) -> EnhanceSummary:
    """The whole run without Prefect: chunks one after another (the flow maps them as tasks)."""
    params = params or EnhanceParams()
    runtime = runtime or select_runtime()
    prepared = prepare_enhancement(lake, params, model=model, style_model=style_model, runtime=runtime,
                                   run_id=run_id)
    size = chunk_size or default_chunk_size(len(prepared.jobs), 256)
    results = [
        enhance_jobs(lake, prepared.jobs[i : i + size], prepared.models, params, runtime, run_id=prepared.run_id)
        for i in range(0, len(prepared.jobs), size)
    ]
    return summarize(lake, prepared, finish_enhancement(lake, results, run_id=prepared.run_id))
