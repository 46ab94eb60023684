"""Enhancing the catalog (and ad-hoc folders) with the champion models: the pure core of the
enhance flow.

    choice.choose_models -> loaded.load_models (once per process) -> plan.plan_enhancement ->
    chunk.enhance_jobs (per chunk) -> finish.finish_enhancement (manifest + quarantine)

One module per concern: `params` (how to enhance), `choice` (which models), `loaded` (the
models in memory, once per process), `image` (one image), `plan` (which images), `chunk` (a
chunk of jobs), `transient` (which storage errors to retry), `finish` (manifest and
quarantine), `run` (a whole run and its summary), `folder` (ad-hoc folders and feeds).
"""

from catalog_enhance.tasks.enhance.choice import (
    CHAMPION_SOURCES,
    ChosenModel,
    ModelChoice,
    ModelRef,
    NoChampion,
    choose_model,
    choose_models,
)
from catalog_enhance.tasks.enhance.chunk import QUARANTINE_REASON, STAGE, ChunkResult, enhance_jobs
from catalog_enhance.tasks.enhance.finish import FinishResult, finish_enhancement
from catalog_enhance.tasks.enhance.folder import (
    IMAGE_EXTENSIONS,
    SUMMARY_FILE,
    AdHocInputs,
    FolderResult,
    InputError,
    enhance_folder,
    open_inputs,
)
from catalog_enhance.tasks.enhance.image import (
    OUTPUT_PNG_COMPRESSION,
    EnhancedImage,
    EnhancementFailed,
    enhance_image,
    enhance_to_png,
)
from catalog_enhance.tasks.enhance.loaded import (
    EnhancementModels,
    check_models,
    load_for_params,
    load_model,
    load_models,
)
from catalog_enhance.tasks.enhance.params import EnhanceParams, inference_runtime
from catalog_enhance.tasks.enhance.plan import EnhanceJob, SkuRef, default_chunk_size, plan_enhancement
from catalog_enhance.tasks.enhance.run import (
    EnhanceSummary,
    PreparedEnhancement,
    enhance_catalog,
    prepare_enhancement,
    summarize,
)
from catalog_enhance.tasks.lake.transient import is_transient_storage_error

__all__ = [
    "AdHocInputs", "CHAMPION_SOURCES", "IMAGE_EXTENSIONS", "OUTPUT_PNG_COMPRESSION", "QUARANTINE_REASON", "STAGE",
    "SUMMARY_FILE", "ChosenModel", "ChunkResult", "EnhanceJob", "EnhanceParams", "EnhanceSummary", "EnhancedImage",
    "EnhancementFailed", "EnhancementModels", "FinishResult", "FolderResult", "InputError", "NoChampion", "ModelChoice", "ModelRef",
    "PreparedEnhancement", "SkuRef", "check_models", "choose_model", "choose_models", "default_chunk_size",
    "enhance_catalog", "enhance_folder", "enhance_image", "enhance_jobs", "enhance_to_png", "finish_enhancement",
    "inference_runtime", "is_transient_storage_error", "load_for_params", "load_model", "load_models",
    "open_inputs", "plan_enhancement", "prepare_enhancement", "summarize",
]
