"""What decides which LR/HR pairs exist and what their pixels are (the pairs stage makes them,
evaluation finds its test set by the default config's hash)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalog_enhance.tasks.catalog.splits import DEFAULT_SPLIT_SALT, SplitFractions
from catalog_enhance.tasks.imaging.degradation_config import DegradationConfig
from catalog_enhance.tasks.imaging.degradation_config import config_hash as hash_of_config

# x1: same-size pairs (the input degraded, not shrunk) for restoration models.
SUPPORTED_SCALES = (1, 2, 3, 4)
DEFAULT_SCALES = (2, 3, 4)


class PairsConfig(BaseModel):
    """Everything that decides which pairs exist and what their pixels are."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scales: tuple[int, ...] = DEFAULT_SCALES
    # HR crop side; a multiple of 12 so one crop divides evenly by every scale 2, 3 and 4.
    hr_size: int = Field(192, ge=24)
    crops_per_image: int = Field(2, ge=1, le=64)
    degradation: DegradationConfig = DegradationConfig()
    splits: SplitFractions = SplitFractions()
    split_salt: str = DEFAULT_SPLIT_SALT
    seed: int = Field(0, ge=0)
    # An LR side shorter than this is useless for training: such (image, scale) is quarantined.
    min_lr_side: int = Field(8, ge=1)

    @field_validator("scales")
    @classmethod
    def _scales(cls, v):
        if not v or len(set(v)) != len(v) or any(s not in SUPPORTED_SCALES for s in v):
            raise ValueError(f"scales must be distinct values among {SUPPORTED_SCALES}, got {v}")
        return tuple(sorted(v))

    @field_validator("hr_size")
    @classmethod
    def _hr_size(cls, v):
        if v % 12:
            raise ValueError(f"hr_size must be a multiple of 12 (divisible by 2, 3 and 4), got {v}")
        return v

    @model_validator(mode="after")
    def _crops_give_usable_lr(self):
        if self.hr_size // max(self.scales) < self.min_lr_side:
            raise ValueError(
                f"hr_size {self.hr_size} gives {self.hr_size // max(self.scales)} px LR crops at "
                f"x{max(self.scales)}, below min_lr_side {self.min_lr_side}"
            )
        return self

    @property
    def config_hash(self) -> str:
        # `scales` is left out: each scale's pairs are made independently of the others, so
        # adding a scale later reuses (and never rewrites) the pairs already made.
        return hash_of_config(self, exclude={"scales"})
