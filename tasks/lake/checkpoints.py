"""Checkpoints in the lake: written atomically, read back with `weights_only=True` only.

`torch.load(weights_only=True)` unpickles nothing but tensors and plain containers, so a crafted
checkpoint (a pickle whose `__reduce__` runs code) is refused instead of executed. Trainer state
dicts therefore hold only tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

import io
import pickle
import re

import torch

from catalog_enhance.data_contracts.layout import checkpoint_key

_STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read safely (refused, corrupt or missing)."""


def save_checkpoint(lake, key: str, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    lake.write_bytes(key, buffer.getvalue())  # atomic: never a half-written checkpoint


def load_checkpoint(lake, key: str) -> dict:
    """Tensors are loaded onto the CPU; the trainer moves them to its device."""
    try:
        data = lake.read_bytes(key)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {key!r}: not found") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {key!r} refused: it holds objects other than tensors and plain data "
            f"(weights_only load failed: {first_line})"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"checkpoint {key!r}: unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {key!r}: expected a dict, got {type(state).__name__}")
    return state


def latest_checkpoint_key(lake, model: str, run: str) -> str | None:
    """The run's final checkpoint if it finished, else its highest step; None if it has none."""
    final = checkpoint_key(model, run)
    if lake.exists(final):
        return final
    prefix = final.rsplit("/", 1)[0]
    steps = []
    for key in lake.list(prefix):
        match = _STEP_FILE.match(key.rsplit("/", 1)[-1])
        if match:
            steps.append(int(match.group(1)))
    return checkpoint_key(model, run, max(steps)) if steps else None
