"""Work cut into batches: one task run per batch, not per row (Prefect has no batching of its own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` in consecutive batches of at most `size` (at least 1)."""
    size = max(1, int(size))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
