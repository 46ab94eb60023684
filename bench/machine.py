"""The machine the figures come from, and the timer every benchmark uses."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    """The SIMD extensions that decide convolution speed (AVX2, AVX-512, AMX...)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    wanted = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                                                         "amx_tile", "amx_bf16")]
                    return " ".join(wanted) or "none of avx2/avx512/amx"
    except OSError:
        pass
    return "unknown"


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def describe() -> dict[str, object]:
    """CPU, cores, memory, torch and its threads, the date: the header of RESULTS.md."""
    import torch

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": cpu_model(),
        "SIMD": cpu_flags(),
        "cores (usable / online)": f"{affinity} / {os.cpu_count()}",
        "memory": f"{memory_gib():.1f} GiB" if memory_gib() else "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads (intra-op / inter-op)": f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in load_average()),
    }


def best_seconds(fn: Callable[[], object], *, repeats: int = 3, min_seconds: float = 0.3, warmup: int = 1) -> float:
    """Seconds per call of `fn`: the best of `repeats` rounds, each long enough to time reliably.

    Best-of rather than mean: on a shared machine other work only ever adds time, so the fastest
    round is the closest to what the code itself costs.
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best
