"""SR quality: bicubic, SRCNN 9-5-5 and the fast ESPCN model, each trained on the `cpu` preset at
x2, x3 and x4, scored on the catalog's test split and on photos they never trained on.

Protocol (`tasks.evaluate.sr_metrics`, as the SR papers): PSNR and SSIM on quantised MATLAB
BT.601 luma, `scale` pixels shaved per side; bicubic is MATLAB's `imresize`. Photo LR inputs are
made by the same degradation as the training pairs (the pairs manifest's; by default MATLAB
bicubic alone, the papers' protocol). The photos are scikit-image's bundled ones
(`bench.catalog.EVAL_PHOTOS`); the benchmark's feed leaves out every catalog image drawn on them,
so no training crop ever showed them.

The champion is chosen on the test split at x2 (the enhancement flow's default scale), never on
the photos: choosing on the photos would make the photo figures a selection, not a measurement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

SCALES = (2, 3, 4)
MODELS = ("srcnn", "espcn")
PHOTO_SET = "photos"
TEST_SET = "test split"
# Published PSNR-Y (dB) of bicubic and SRCNN (Dong et al. 2016), /work/shared/FIELD_NOTES.md.
PUBLISHED_SRCNN = {
    "Set5": {2: (33.66, 36.66), 3: (30.39, 32.75), 4: (28.42, 30.48)},
    "Set14": {2: (30.24, 32.42), 3: (27.55, 29.28), 4: (26.00, 27.49)},
}
TARGET_GAIN_DB = {2: 2.0, 4: 1.0}  # the champion on the photos, over bicubic
TARGET_TRAIN_MINUTES = 15.0


@dataclass
class TrainedSR:
    name: str
    scale: int
    module: torch.nn.Module
    channels: int
    seconds: float  # training wall time
    steps: int
    params: int
    macs_per_output_pixel: float
    version: str


def published_gains() -> dict[str, dict[int, float]]:
    return {name: {s: sr - bic for s, (bic, sr) in table.items()} for name, table in PUBLISHED_SRCNN.items()}


def _trained(name: str, scale: int, module, metadata: dict, seconds: float, steps: int, version: str) -> TrainedSR:
    module.eval()
    return TrainedSR(name, scale, module, int(metadata["channels"]), seconds, steps,
                     sum(p.numel() for p in module.parameters()), float(module.macs_per_output_pixel()), version)


def registered(lake, version: str) -> TrainedSR:
    """A version the nightly trained and registered (the x2 models)."""
    from catalog_enhance.tasks.inference.trained import find_version, load_trained
    from catalog_enhance.tasks.runtime import select_runtime

    row = find_version(lake, version)
    trained = load_trained(lake, row, select_runtime("cpu"))
    return _trained(trained.name, int(trained.metadata["scale"]), trained.module, trained.metadata,
                    float(row["train_seconds"]), int(row["steps"]), row["version"])


def train_at_scale(lake, name: str, scale: int) -> TrainedSR:
    """Train `name` on the cpu preset at `scale` (a run of its own in the lake, not registered)."""
    from catalog_enhance.tasks.train.config import make_config
    from catalog_enhance.tasks.train.loop import train_model
    from catalog_enhance.tasks.inference.trained import load_trained
    from catalog_enhance.tasks.runtime import select_runtime

    config = make_config(name, "cpu", **{"data.scale": scale})
    result = train_model(config, lake, runtime=select_runtime("cpu"))
    trained = load_trained(lake, {"version": f"bench-{name}-x{scale}", "checkpoint_key": result.checkpoint_key},
                           select_runtime("cpu"))
    return _trained(name, scale, trained.module, trained.metadata, result.seconds, result.steps_done,
                    f"bench run {result.run}")


# -- evaluation sets ------------------------------------------------------------------------------


def _degradation(lake, scale: int):
    from catalog_enhance.tasks.imaging.degrade import DegradationConfig
    from catalog_enhance.tasks.lake.manifests import read_pairs

    rows = read_pairs(lake, split="test", scale=scale).slice(0, 1).to_pylist()
    return DegradationConfig.model_validate_json(rows[0]["degradation"]) if rows else DegradationConfig()


def test_split_pairs(lake, scale: int) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    from catalog_enhance.tasks.imaging.codec import load_rgb
    from catalog_enhance.tasks.lake.manifests import read_pairs

    for row in read_pairs(lake, split="test", scale=scale).to_pylist():
        hr = load_rgb(lake.read_bytes(row["hr_key"]))
        lr = load_rgb(lake.read_bytes(row["lr_key"])).astype(np.float64) / 255.0
        yield hr, lr, {"image_name": row["pair_id"], "style": row["style"]}


def photo_pairs(lake, scale: int, photos: tuple[str, ...]) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Each photo, mod-cropped, degraded like the training pairs, the LR quantised to 8 bits."""
    from catalog_enhance.tasks.imaging.degrade import degrade
    from catalog_enhance.tasks.imaging.metrics import quantize
    from catalog_enhance.tasks.imaging.resize import mod_crop
    from catalog_enhance.demo_data.sample_catalog import skimage_photo

    config = _degradation(lake, scale)
    for index, name in enumerate(photos):
        hr = np.array(mod_crop(skimage_photo(name), scale))  # a writable copy of the cached photo
        lr = degrade(hr.astype(np.float64) / 255.0, scale, config, np.random.default_rng([index, scale]))
        yield hr, quantize(lr).astype(np.float64) / 255.0, {"image_name": name}


def evaluate(lake, models: dict[int, dict[str, TrainedSR]], photos: tuple[str, ...]) -> pd.DataFrame:
    """Per-image PSNR/SSIM of bicubic and every model, on both sets, at every scale."""
    from catalog_enhance.tasks.inference.enhancers import bicubic, model_enhancer
    from catalog_enhance.tasks.evaluate.sr_eval import evaluate_sr

    frames = []
    for scale, trained in models.items():
        enhancers = {"bicubic": bicubic}
        enhancers.update({t.name: model_enhancer(t.module, scale, t.channels) for t in trained.values()})
        for set_name, pairs in ((TEST_SET, test_split_pairs(lake, scale)), (PHOTO_SET, photo_pairs(lake, scale, photos))):
            frame = evaluate_sr(pairs, enhancers, scale)
            frame["set"] = set_name
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean PSNR/SSIM per (set, scale, enhancer) with the mean gain over bicubic on the same images."""
    scored = per_image[per_image["error"].fillna("") == ""]
    reference = scored[scored["enhancer"] == "bicubic"][["set", "scale", "image", "psnr_y", "ssim_y"]]
    paired = scored.merge(reference, on=["set", "scale", "image"], suffixes=("", "_bicubic"))
    paired["psnr_gain"] = paired["psnr_y"] - paired["psnr_y_bicubic"]
    paired["ssim_gain"] = paired["ssim_y"] - paired["ssim_y_bicubic"]
    paired["worse"] = (paired["psnr_gain"] < 0).astype(float)
    summary = (paired.groupby(["set", "scale", "enhancer"], sort=False)
               .agg(images=("image", "nunique"), psnr_y=("psnr_y", "mean"), ssim_y=("ssim_y", "mean"),
                    psnr_gain=("psnr_gain", "mean"), ssim_gain=("ssim_gain", "mean"),
                    share_worse=("worse", "mean"))
               .reset_index())
    failed = per_image[per_image["error"].fillna("") != ""]
    if len(failed):
        summary.attrs["errors"] = failed[["set", "scale", "enhancer", "error"]].drop_duplicates().to_dict("records")
    return summary


def run(lake, x2_versions: dict[str, str], photos: tuple[str, ...], *, log=print) -> dict:
    """Train (x3, x4; x2 comes from the nightly), evaluate, pick the champion, judge the targets."""
    models: dict[int, dict[str, TrainedSR]] = {}
    for scale in SCALES:
        models[scale] = {}
        for name in MODELS:
            if scale == 2 and name in x2_versions:
                models[scale][name] = registered(lake, x2_versions[name])
            else:
                log(f"sr_quality: training {name} x{scale} on the cpu preset")
                models[scale][name] = train_at_scale(lake, name, scale)
            t = models[scale][name]
            log(f"sr_quality: {name} x{scale}: {t.steps} steps in {t.seconds:.0f} s")
    started = time.perf_counter()
    per_image = evaluate(lake, models, photos)
    summary = summarize(per_image)
    log(f"sr_quality: evaluated in {time.perf_counter() - started:.0f} s")

    def gain(set_name: str, scale: int, enhancer: str) -> float:
        row = summary[(summary["set"] == set_name) & (summary["scale"] == scale) & (summary["enhancer"] == enhancer)]
        return float(row["psnr_gain"].iloc[0]) if len(row) else float("nan")

    champion = max(MODELS, key=lambda name: gain(TEST_SET, 2, name))
    champion_minutes = max(models[s][champion].seconds for s in SCALES) / 60
    targets = {
        f"x{s} photo gain >= +{g:.1f} dB": (gain(PHOTO_SET, s, champion), gain(PHOTO_SET, s, champion) >= g)
        for s, g in TARGET_GAIN_DB.items()
    }
    targets[f"training <= {TARGET_TRAIN_MINUTES:.0f} min per model"] = (champion_minutes,
                                                                        champion_minutes <= TARGET_TRAIN_MINUTES)
    return {
        "summary": summary,
        "per_image": per_image,
        "models": {s: {n: {k: v for k, v in vars(t).items() if k != "module"} for n, t in m.items()}
                   for s, m in models.items()},
        "champion": champion,
        "champion_x2": models[2][champion],
        "targets": targets,
        "published": published_gains(),
        "photos": photos,
    }
