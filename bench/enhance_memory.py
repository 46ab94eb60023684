"""Peak memory of enhancing one large image: the per-image path of `enhance --input` and the
catalog run (`decode_untrusted` -> `load_image` -> `enhance_to_png`), at 3, 12 and 40 MP.

    python -m bench.enhance_memory                    # 3, 12, 40 MP; JPEG and PNG inputs; x2
    python -m bench.enhance_memory --megapixels 12 --formats jpeg

Each case runs in a fresh subprocess, so its peak RSS (VmHWM, i.e. `ru_maxrss`) is its own. The input is a
synthetic photo (smooth gradients plus noise, so neither the JPEG nor the PNG compresses it away),
written by this parent process. The model is an untrained ESPCN from the model registry in the
cpu-preset champion's layout: weights decide the pixels, not the memory. Printed per
case: the baseline RSS after imports and model load, the peak RSS, the peak's growth over the
baseline against the 8-bit output size, and the seconds of decode + enhance + encode. The
target (issue 11): peak RSS <= 1.0 GB for a 12 MP input at x2 on CPU. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 1024 * 1024
# (width, height) per size; 40 MP stays under the default 40,000,000-pixel limit.
SIZES = {3: (2000, 1500), 12: (4000, 3000), 40: (7300, 5475)}
TARGET_MB_12MP = 1000.0
# The cpu-preset champion's layout (models/espcn.py PRESETS["cpu"]["model_kwargs"]).
ESPCN_CPU_PRESET = {"depth": 3, "mid": 64}


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, 3): gradients, a few soft blobs and Gaussian noise, built in row bands."""
    rng = np.random.default_rng(seed)
    out = np.empty((height, width, 3), dtype=np.uint8)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    for top in range(0, height, 512):
        rows = np.arange(top, min(top + 512, height), dtype=np.float32)[:, None] / max(height - 1, 1)
        base = np.stack([200 * x + 30 * rows, 120 + 80 * np.sin(6 * x + 3 * rows), 220 * rows + 10 * x], axis=-1)
        noise = rng.normal(0.0, 12.0, size=base.shape).astype(np.float32)
        out[top:top + len(rows)] = np.clip(base + noise, 0, 255).astype(np.uint8)
    return out


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_mb() -> float:
    """This process's peak RSS: VmHWM, which is `ru_maxrss` without the forking parent's
    high-water mark that Linux carries into a child at exec (bench/NOTES.md, section 0)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(path: Path, scale: int) -> dict:
    """One case, in this (fresh) process: load the model, then decode, enhance, encode."""
    import torch

    from catalog_enhance.models import get_model, get_spec
    from catalog_enhance.tasks.enhance.image import enhance_to_png
    from catalog_enhance.tasks.enhance.loaded import EnhancementModels
    from catalog_enhance.tasks.enhance.params import EnhanceParams, inference_runtime
    from catalog_enhance.tasks.imaging.codec import decode_untrusted, load_image
    from catalog_enhance.tasks.inference.trained import TrainedModel
    from catalog_enhance.tasks.runtime import select_runtime, to_device

    torch.manual_seed(0)
    runtime = inference_runtime(select_runtime("cpu"))
    kwargs = {"scale": scale, "channels": 1, **ESPCN_CPU_PRESET}
    module = to_device(get_model("espcn", **kwargs).eval(), runtime)
    sr = TrainedModel(name="espcn", version="bench", kind=get_spec("espcn").kind, module=module, config={},
                      metadata={"scale": scale, "channels": 1})
    models = EnhancementModels(sr=sr)
    params = EnhanceParams(scale=scale)
    # Warm up the kernels on a small image so the baseline includes oneDNN's own buffers.
    enhance_to_png(np.zeros((64, 64, 3), dtype=np.uint8), models, params, runtime)
    baseline = _peak_mb()
    baseline_now = _rss_now_mb()

    started = time.perf_counter()
    data = path.read_bytes()
    normal = decode_untrusted(data, max_pixels=40_000_000, name=path.name)
    del data
    pixels = load_image(normal.png)
    del normal
    enhanced = enhance_to_png(pixels, models, params, runtime)
    seconds = time.perf_counter() - started
    return {"baseline_peak_mb": baseline, "baseline_rss_mb": baseline_now, "peak_mb": _peak_mb(),
            "seconds": seconds, "width": enhanced.width, "height": enhanced.height,
            "channels": 4 if enhanced.mode == "RGBA" else 3, "png_mb": len(enhanced.png) / MB}


def run_case(path: Path, scale: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-m", "bench.enhance_memory", "--child", str(path), "--scale", str(scale)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["(no output)"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enhance_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", default="3,12,40", help="comma-separated sizes among 3, 12, 40")
    parser.add_argument("--formats", default="jpeg,png")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.scale)))
        return 0

    from PIL import Image

    print("| input | format | baseline RSS MB | peak RSS MB | growth MB | growth / 8-bit output | PNG MB | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="enhance-memory-") as scratch:
        for mp in (int(m) for m in args.megapixels.split(",")):
            width, height = SIZES[mp]
            photo = Image.fromarray(synthetic_photo(width, height))
            for fmt in args.formats.split(","):
                path = Path(scratch) / f"photo_{mp}mp.{'jpg' if fmt == 'jpeg' else 'png'}"
                if fmt == "jpeg":
                    photo.save(path, format="JPEG", quality=90)
                else:
                    photo.save(path, format="PNG", compress_level=1)
                result = run_case(path, args.scale)
                path.unlink()
                if "error" in result:
                    print(f"| {mp} MP {width}x{height} | {fmt} | failed: {result['error']} |||||")
                    continue
                output_mb = result["width"] * result["height"] * result["channels"] / MB
                growth = result["peak_mb"] - result["baseline_peak_mb"]
                print(f"| {mp} MP {width}x{height} | {fmt} | {result['baseline_peak_mb']:.0f} | "
                      f"{result['peak_mb']:.0f} | {growth:.0f} | {growth / output_mb:.2f}x of {output_mb:.0f} MB | "
                      f"{result['png_mb']:.0f} | {result['seconds']:.1f} |", flush=True)
                if mp == 12:
                    met = "met" if result["peak_mb"] <= TARGET_MB_12MP else "NOT met"
                    print(f"|  | target peak <= {TARGET_MB_12MP:.0f} MB at 12 MP x{args.scale}: {met} |||||||")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
