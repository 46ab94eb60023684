"""How to enhance: the parameters of a run (`EnhanceParams`, whose identity is a part of every
output key) and the runtime the models run on (`inference_runtime`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalog_enhance.tasks.inference.tiling import Tiling
from catalog_enhance.tasks.kinds import EnhancementRole
from catalog_enhance.tasks.runtime import Runtime


def inference_runtime(runtime: Runtime) -> Runtime:
    """The runtime enhancement runs models on: the training runtime, plus channels_last on CPU.

    oneDNN's NHWC convolutions are about twice as fast as NCHW ones on this kind of CPU (3x3
    64->64: ~430 vs ~200 GFLOP/s; the cpu-preset ESPCN: 87 vs 188 ms a 256 px image, see
    bench/NOTES.md). Training keeps NCHW: on its small patches channels_last did not help.
    """
    if runtime.device.type == "cpu" and not runtime.channels_last:
        return replace(runtime, channels_last=True)
    return runtime


# Enhancement modes -> the role of the model kind whose champion each runs (`tasks.kinds`):
# `fidelity` enlarges clean images (the PSNR champion, trained on bicubic pairs); `restore` also
# undoes JPEG, noise and blur (the restoration champion, trained on realistic degradations).
ENHANCEMENT_MODES: dict[str, EnhancementRole] = {"fidelity": "upscale", "restore": "restore"}
EnhancementMode = Literal["fidelity", "restore"]


class EnhanceParams(BaseModel):
    """How to enhance: in a `mode`, by a `scale`, or to an exact `target_long_side` (which then
    wins over `scale`), with tiled inference; optionally followed by the CycleGAN studio transform."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mode: EnhancementMode = "fidelity"
    scale: int | None = Field(2, ge=1, le=8)
    target_long_side: int | None = Field(None, ge=1, le=32768)
    tile: int = Field(256, ge=16)  # core tile side in input pixels
    overlap: int = Field(16, ge=0)  # context around each tile, in input pixels (>= receptive field)
    batch_tiles: int = Field(8, ge=1)  # tiles per forward pass: speed only, never the pixels
    style_transform: bool = False

    @model_validator(mode="before")
    @classmethod
    def _target_wins(cls, data):
        # `scale` has a default, so a caller who asks for a target size gets the target.
        if isinstance(data, dict) and data.get("target_long_side") is not None:
            data = {**data, "scale": None}
        return data

    @model_validator(mode="after")
    def _one_size(self):
        if self.scale is None and self.target_long_side is None:
            raise ValueError("give a scale or a target_long_side")
        return self

    @property
    def role(self) -> EnhancementRole:
        """The enhancement role (`tasks.kinds`) of the model this mode runs."""
        return ENHANCEMENT_MODES[self.mode]

    @property
    def tiling(self) -> Tiling:
        """`tile`, `overlap` and `batch_tiles` as the one object tiled inference takes."""
        return Tiling(tile=self.tile, overlap=self.overlap, batch_tiles=self.batch_tiles)

    def for_image(self, style: bool) -> "EnhanceParams":
        """These parameters as applied to one image: the style transform only where it runs."""
        return self if style == self.style_transform else self.model_copy(update={"style_transform": style})

    def identity(self, style_version: str | None = None) -> dict:
        """Everything that decides the output pixels (`batch_tiles` does not), plus the style
        model's version when the transform runs."""
        # The default mode stays out, so outputs made before modes existed keep their keys.
        identity = self.model_dump(exclude={"batch_tiles"} | ({"mode"} if self.mode == "fidelity" else set()))
        if self.style_transform:
            if not style_version:
                raise ValueError("style_transform needs the style model's version in the params identity")
            identity["style_model_version"] = style_version
        return identity

    def params_json(self, style_version: str | None = None) -> str:
        return json.dumps(self.identity(style_version), sort_keys=True, separators=(",", ":"))

    def params_hash(self, style_version: str | None = None) -> str:
        """12 hex of the sha256 of `params_json`: a part of every output key."""
        return hashlib.sha256(self.params_json(style_version).encode()).hexdigest()[:12]

    def describe(self) -> str:
        size = f"long side {self.target_long_side}" if self.target_long_side else f"x{self.scale}"
        return (f"{self.mode}, {size}, tile {self.tile}+{self.overlap}"
                + (", studio transform" if self.style_transform else ""))
