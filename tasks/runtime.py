"""Where and how training runs: device, mixed precision, memory format, seeding.

One `Runtime` value decides everything device-specific, so trainers never branch on
`torch.cuda.is_available()` themselves: the same code runs on a GPU (bf16 autocast,
channels_last) and on this CPU-only machine (fp32, deterministic).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # torch.bfloat16 on CUDA (if supported), else None
    channels_last: bool  # True on CUDA
    deterministic: bool  # True on CPU

    def describe(self) -> str:
        amp = str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "fp32"
        return f"{self.device.type} ({amp}{', channels_last' if self.channels_last else ''})"


def _cuda_supports_bf16() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (AssertionError, RuntimeError):  # no usable CUDA driver behind is_available()
        return False


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_runtime(prefer: str | None = None) -> Runtime:
    """cuda, then mps, then cpu; `prefer` ("cpu", "cuda", "cuda:1", "mps") forces a device."""
    if prefer:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} requested but CUDA is not available")
        if device.type == "mps" and not _mps_available():
            raise RuntimeError(f"device {prefer!r} requested but MPS is not available")
        if device.type not in {"cpu", "cuda", "mps"}:
            raise ValueError(f"unsupported device {prefer!r} (expected cpu, cuda[:N] or mps)")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif _mps_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        # bf16 keeps fp32's exponent range, so no GradScaler is needed; channels_last lets
        # cuDNN pick tensor-core convolution kernels.
        return Runtime(device, torch.bfloat16 if _cuda_supports_bf16() else None, True, False)
    # MPS: fp32 (bf16 autocast support there is partial); CPU: fp32 and bit-reproducible.
    return Runtime(device, None, False, device.type == "cpu")


def configure_backends(runtime: Runtime) -> None:
    """Process-wide backend switches matching the runtime (called once per training run)."""
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch sizes: autotuning pays off
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices); weight initialisation depends on it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    if runtime.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.amp_dtype)


def to_device(tensor_or_module, runtime: Runtime):
    """Move a tensor or module to the runtime's device, channels_last for 4-D data on CUDA."""
    if isinstance(tensor_or_module, nn.Module):
        if runtime.channels_last:
            # torch's stub has no (device, memory_format=...) overload for Module.to; the call is
            # valid (Module.to parses the same arguments as Tensor.to).
            return tensor_or_module.to(runtime.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        return tensor_or_module.to(runtime.device)
    tensor = tensor_or_module
    non_blocking = runtime.device.type == "cuda"
    if runtime.channels_last and tensor.dim() == 4:
        return tensor.to(runtime.device, memory_format=torch.channels_last, non_blocking=non_blocking)
    return tensor.to(runtime.device, non_blocking=non_blocking)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, step, stream) only.

    Every random choice of step k (batch, crops, noise) is drawn from it, so step k does the same
    thing whether the run got there uninterrupted or resumed from a checkpoint; `stream` separates
    independent uses within a step (e.g. 0 = batch, 1 = generator noise).
    """
    digest = hashlib.sha256(f"{int(seed)}:{int(step)}:{int(stream)}".encode()).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return generator
