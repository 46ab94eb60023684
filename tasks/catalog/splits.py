"""Train / val / test by product: a product's split is a hash of (salt, product_id) alone.

Every image of one product (its studio and lifestyle shots, all its SKUs) lands in one split, and
a product's split never changes when others arrive; pairs, the generative trainers' catalog rows,
the FID feature extractor and evaluation all ask this one function.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SPLIT_SALT = "catalog-enhance-split-v1"


class SplitFractions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        if not math.isclose(self.train + self.val + self.test, 1.0, abs_tol=1e-9):
            raise ValueError(f"split fractions must sum to 1, got {self.train}+{self.val}+{self.test}")
        return self



def assign_split(
    product_id: str,
    fractions: SplitFractions | Sequence[float] = SplitFractions(),
    salt: str = DEFAULT_SPLIT_SALT,
) -> str:
    """'train', 'val' or 'test' for a product, from a hash of (salt, product_id) alone.

    Deterministic and independent of every other product, so a product's split never changes
    when new products arrive. `fractions` is a SplitFractions or (train, val, test).
    """
    if not isinstance(fractions, SplitFractions):
        fractions = SplitFractions(train=fractions[0], val=fractions[1], test=fractions[2])
    digest = hashlib.sha256(f"{salt}\x00{product_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.val:
        return "val"
    return "test"
