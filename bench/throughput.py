"""Enhancement throughput: output megapixels per second of the champion SR model through the
enhancement flow, against the same model in a bare loop, PIL's bicubic, and the machine's own
convolution ceiling, all measured in this run on the same images.

- flow: the `enhance-catalog` Prefect flow over the scratch lake's catalog (its outputs and
  manifest removed first so every image is computed): lake reads, decoding, Y/Cb/Cr, tiled
  batched inference, Cb/Cr upscaling, PNG encoding, atomic lake writes, the manifest, Prefect.
  Timed end to end (`flow_seconds`, model loading and planning included) and as its chunk stage.
- bare loop: `with torch.no_grad(): model(y)` image by image on the same images' Y planes,
  already decoded and in memory: what a hand-run script's inner loop costs, and nothing else.
  The target compares the flow with this.
- script loop: the same per-image work as the flow (`super_resolve` + `encode_png`) without the
  lake, Prefect or the manifest: splits the flow's overhead into image work and orchestration.
- PIL: `Image.resize(..., BICUBIC)` to the same output size.
- ceiling: a 3x3 64->64 convolution on 4x128x128 (NCHW and channels_last; the faster counts),
  in GFLOP/s; a model's fraction of it is MP/s x 2 x MACs per output pixel / ceiling.

The flow and the bare loop each run once over every catalog image (the headline ratio), between
two ceiling measurements; the other paths run on the first `SUBSET` images, so the benchmark
stays affordable, and are reported per output megapixel like the rest.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.machine import best_seconds

CEILING_SHAPE = (4, 64, 128, 128)
TARGET_FLOW_OVERHEAD = 0.10
TARGET_CEILING_FRACTION = 0.50
SUBSET = 64


def conv_ceiling() -> dict[str, float]:
    """GFLOP/s of a 3x3 64->64 convolution on 4x128x128, fp32, in both memory layouts."""
    n, c, h, w = CEILING_SHAPE
    x = torch.randn(n, c, h, w)
    weight = torch.randn(c, c, 3, 3)
    flops = 2 * n * c * c * 9 * h * w
    result = {}
    with torch.inference_mode():
        for layout, (inp, kernel) in {
            "nchw": (x, weight),
            "channels_last": (x.contiguous(memory_format=torch.channels_last),
                              weight.contiguous(memory_format=torch.channels_last)),
        }.items():
            result[layout] = flops / best_seconds(lambda: F.conv2d(inp, kernel, padding=1), repeats=3) / 1e9
    result["best"] = max(result["nchw"], result["channels_last"])
    return result


def _reset_enhancements(lake) -> None:
    """Forget every enhancement (outputs and manifest) so the next run computes every image."""
    from catalog_enhance.tasks.lake import manifests

    manifests.remove(lake, "enhancements")
    if lake.fs.exists(lake.path("enhanced")):
        lake.fs.rm(lake.path("enhanced"), recursive=True)


def _catalog_images(lake) -> list[np.ndarray]:
    from catalog_enhance.tasks.imaging.codec import load_image
    from catalog_enhance.tasks.lake import manifests

    keys = sorted({row["image_key"] for row in manifests.current_catalog(manifests.read(lake, "catalog")).to_pylist()})
    return [load_image(data) for data in lake.read_many(keys).values()]


def _y_planes(images: list[np.ndarray]) -> list[torch.Tensor]:
    from catalog_enhance.tasks.imaging.resize import rgb_to_y

    return [rgb_to_y(torch.from_numpy(a[..., :3]).permute(2, 0, 1).float().div(255))[None] for a in images]


def bare_loop_seconds(model, planes: list[torch.Tensor], *, channels_last: bool = False, batch: int = 1) -> float:
    """One pass of `model` over the planes under no_grad (batched when the sizes allow)."""
    if channels_last:
        planes = [p.contiguous(memory_format=torch.channels_last) for p in planes]
    started = time.perf_counter()
    with torch.no_grad():
        if batch == 1:
            for plane in planes:
                model(plane)
        else:
            for i in range(0, len(planes), batch):
                group = planes[i:i + batch]
                if len({tuple(p.shape) for p in group}) == 1:
                    model(torch.cat(group))
                else:
                    for plane in group:
                        model(plane)
    return time.perf_counter() - started


def script_loop_seconds(models, params, runtime, images: list[np.ndarray]) -> float:
    """The flow's own per-image step (`enhance_to_png`) over images in memory: no lake, no Prefect."""
    from catalog_enhance.tasks.enhance import enhance_to_png

    started = time.perf_counter()
    for image in images:
        enhance_to_png(image, models, params, runtime)
    return time.perf_counter() - started


def pil_bicubic_seconds(images: list[np.ndarray], scale: int) -> float:
    pil = [Image.fromarray(a) for a in images]
    sizes = [(p.width * scale, p.height * scale) for p in pil]
    return best_seconds(lambda: [p.resize(s, Image.Resampling.BICUBIC) for p, s in zip(pil, sizes)],
                        repeats=3, min_seconds=0.0)


def flow_run(lake, version: str, scale: int) -> dict:
    from catalog_enhance.flows.enhance import enhance

    _reset_enhancements(lake)
    started = time.perf_counter()
    summary = enhance(lake_url=lake.url or lake.root, scale=scale, model=version)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "chunk_seconds": summary.enhance_seconds, "images": summary.images_computed,
            "megapixels": summary.output_megapixels, "quarantined": summary.quarantined}


def run(lake, champion, *, log=print) -> dict:
    """`champion`: the `sr_quality.TrainedSR` of the x2 champion (registered by the nightly)."""
    from catalog_enhance.tasks.enhance import EnhanceParams, load_for_params
    from catalog_enhance.tasks.runtime import select_runtime

    scale, model = champion.scale, champion.module
    images = _catalog_images(lake)
    planes = _y_planes(images)
    output_mp = sum(p.shape[-1] * p.shape[-2] for p in planes) * scale * scale / 1e6
    # The models exactly as the flow loads them (on CPU: channels_last, tasks/enhance/params.py).
    params, runtime = EnhanceParams(scale=scale), select_runtime("cpu")
    _, loaded = load_for_params(lake, params, model=champion.version, runtime=runtime)
    tuned = loaded.sr.module
    log(f"throughput: {len(images)} images, {output_mp:.1f} output MP per pass")

    # The references run before and after the flow and the faster pass counts: NCHW's speed in
    # particular swings by 2x within minutes on this machine (bench/NOTES.md).
    ceilings = [conv_ceiling()]
    bare_passes = [bare_loop_seconds(model, planes)]
    channels_last_passes = [bare_loop_seconds(tuned, planes, channels_last=True)]
    flow = flow_run(lake, champion.version, scale)
    bare_passes.append(bare_loop_seconds(model, planes))
    channels_last_passes.append(bare_loop_seconds(tuned, planes, channels_last=True))
    ceilings.append(conv_ceiling())
    bare_s, channels_last_s = min(bare_passes), min(channels_last_passes)
    log(f"throughput: flow {flow['seconds']:.1f} s, bare loop passes {bare_passes[0]:.1f} / {bare_passes[1]:.1f} s, "
        f"channels_last passes {channels_last_passes[0]:.1f} / {channels_last_passes[1]:.1f} s")

    subset_images, subset_planes = images[:SUBSET], planes[:SUBSET]
    subset_mp = sum(p.shape[-1] * p.shape[-2] for p in subset_planes) * scale * scale / 1e6
    network = {
        "no_grad, NCHW, one image at a time (the bare loop)": (output_mp, bare_s),
        "channels_last as the flow loads it, one image at a time": (output_mp, channels_last_s),
        "channels_last, batches of 8 same-sized images": (
            subset_mp, bare_loop_seconds(tuned, subset_planes, channels_last=True, batch=8)),
    }
    script_s = script_loop_seconds(loaded, params, runtime, subset_images)
    pil_s = pil_bicubic_seconds(subset_images, scale)
    ceiling = max(c["best"] for c in ceilings)
    flops_per_pixel = 2 * champion.macs_per_output_pixel

    def fraction(megapixels: float, seconds: float) -> float:
        return megapixels * 1e6 * flops_per_pixel / seconds / 1e9 / ceiling

    return {
        "images": len(images),
        "output_megapixels": output_mp,
        "model": f"{champion.name} x{scale} ({champion.version})",
        "macs_per_output_pixel": champion.macs_per_output_pixel,
        "ceiling_gflops": ceilings,
        "ceiling_best_gflops": ceiling,
        "mp_per_s": {
            "flow (end to end)": flow["megapixels"] / flow["seconds"],
            "flow (chunk stage)": flow["megapixels"] / flow["chunk_seconds"],
            "script loop (the flow's per-image step, no lake/Prefect)": subset_mp / script_s,
            **{f"network: {k}": mp / sec for k, (mp, sec) in network.items()},
            "PIL bicubic": subset_mp / pil_s,
        },
        "subset_images": len(subset_images),
        "flow_run": flow,
        "bare_seconds": bare_s,
        "bare_passes": bare_passes,
        "channels_last_passes": channels_last_passes,
        "flow_overhead": flow["seconds"] / bare_s * output_mp / flow["megapixels"] - 1,
        "flow_chunk_overhead": flow["chunk_seconds"] / bare_s * output_mp / flow["megapixels"] - 1,
        "ceiling_fraction": {
            "bare loop": fraction(output_mp, bare_s),
            "best network setting": max(fraction(mp, sec) for mp, sec in network.values()),
            "flow (end to end)": fraction(flow["megapixels"], flow["seconds"]),
        },
    }
