"""What a degradation is: typed stages, `DegradationConfig`, its identity, and the named configs.

A `DegradationConfig` is an ordered list of small typed stages. Exactly one of them is the
*downscale* that fixes the LR size at `ceil(HR / scale)`: `bicubic` (MATLAB-compatible,
`tasks.imaging.resize.imresize`) or `final` (Real-ESRGAN's last step: resize to that size with a
random method, a sinc filter and JPEG in random order). Stages before it act at HR resolution
(camera blur, a random `resize`), stages after it on the LR image (sensor noise, JPEG). How the
stages are applied is `tasks.imaging.degrade`; `config_hash` names a config in lake keys, and
`NAMED_DEGRADATIONS` maps the names a user types (`bicubic`, `light`, `realistic`) to configs.

Parameter ranges follow Real-ESRGAN (Wang et al., ICCVW 2021): the defaults of its
`options/train_realesrnet_x4plus.yml`, the kernel sampling of BasicSR's
`basicsr/data/realesrgan_dataset.py` / `degradations.py` and the order of operations of
`realesrgan/models/realesrnet_model.py` (`feed_data`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Range = tuple[float, float]
ResizeMethod = Literal["area", "bilinear", "bicubic"]
RESIZE_METHODS: tuple[ResizeMethod, ...] = ("area", "bilinear", "bicubic")
# Real-ESRGAN: odd kernel sizes 7..21 (`kernel_range` in realesrgan_dataset.py).
KERNEL_SIZES = (7, 21)


def _check_range(value: tuple, low: float, high: float, name: str) -> tuple:
    a, b = value
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value}")
    return value


def _check_kernel_sizes(value: tuple[int, int]) -> tuple[int, int]:
    _check_range(value, 3, 41, "kernel_sizes")
    if value[0] % 2 == 0 or value[1] % 2 == 0:
        raise ValueError(f"kernel_sizes must be odd, got {value}")
    return value


class _Stage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BicubicStage(_Stage):
    """The downscale: by the pair's scale with MATLAB's bicubic `imresize`."""

    kind: Literal["bicubic"] = "bicubic"
    antialiasing: bool = True


class KernelProbabilities(BaseModel):
    """Relative weights of the blur kernel families (Real-ESRGAN's `kernel_list` / `kernel_prob`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    iso: float = Field(0.45, ge=0)
    aniso: float = Field(0.25, ge=0)
    generalized_iso: float = Field(0.12, ge=0)
    generalized_aniso: float = Field(0.03, ge=0)
    plateau_iso: float = Field(0.12, ge=0)
    plateau_aniso: float = Field(0.03, ge=0)

    @model_validator(mode="after")
    def _some(self):
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one kernel family needs a positive probability")
        return self


class BlurStage(_Stage):
    """Blur by one random kernel: with `sinc_probability` a circular low-pass, otherwise a kernel
    drawn from `kernels` (isotropic or anisotropic Gaussian, generalized Gaussian, plateau).
    Defaults: Real-ESRGAN's first blur (`blur_sigma`, `betag_range`, `betap_range`, `sinc_prob`)."""

    kind: Literal["blur"] = "blur"
    probability: float = Field(1.0, ge=0, le=1)
    kernel_sizes: tuple[int, int] = KERNEL_SIZES  # an odd size drawn uniformly in between
    kernels: KernelProbabilities = KernelProbabilities()
    sigma: Range = (0.2, 3.0)  # pixels, each axis drawn uniformly
    generalized_beta: Range = (0.5, 4.0)
    plateau_beta: Range = (1.0, 2.0)
    sinc_probability: float = Field(0.1, ge=0, le=1)

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, v):
        return _check_range(v, 1e-3, 50.0, "sigma")

    @field_validator("generalized_beta", "plateau_beta")
    @classmethod
    def _beta(cls, v):
        return _check_range(v, 0.05, 20.0, "beta")

    @field_validator("kernel_sizes")
    @classmethod
    def _sizes(cls, v):
        return _check_kernel_sizes(v)


class SincStage(_Stage):
    """A circular low-pass (sinc) filter: Real-ESRGAN's final filter against ringing and overshoot
    artifacts (`final_sinc_prob` 0.8, cutoff uniform in [pi/3, pi], sizes 7..21)."""

    kind: Literal["sinc"] = "sinc"
    probability: float = Field(1.0, ge=0, le=1)
    kernel_sizes: tuple[int, int] = KERNEL_SIZES
    cutoff: Range = (math.pi / 3, math.pi)  # radians per pixel, pi = Nyquist

    @field_validator("cutoff")
    @classmethod
    def _cutoff(cls, v):
        return _check_range(v, 1e-3, math.pi, "cutoff")

    @field_validator("kernel_sizes")
    @classmethod
    def _sizes(cls, v):
        return _check_kernel_sizes(v)


class ResizeStage(_Stage):
    """Resize up, down or not at all (`up_down_keep` probabilities) by a factor drawn uniformly in
    [1, factor high] or [factor low, 1], with a method drawn from `methods`; the factor applies to
    the current image (`relative_to="input"`, Real-ESRGAN's first resize) or to the pair's LR size
    (`"lr"`, its second). Only before the downscale, which then restores the exact LR size."""

    kind: Literal["resize"] = "resize"
    probability: float = Field(1.0, ge=0, le=1)
    up_down_keep: tuple[float, float, float] = (0.2, 0.7, 0.1)  # Real-ESRGAN `resize_prob`
    factor: Range = (0.15, 1.5)  # Real-ESRGAN `resize_range`
    methods: tuple[ResizeMethod, ...] = RESIZE_METHODS
    relative_to: Literal["input", "lr"] = "input"

    @field_validator("up_down_keep")
    @classmethod
    def _probabilities(cls, v):
        if min(v) < 0 or sum(v) <= 0:
            raise ValueError(f"up_down_keep must be non-negative weights with a positive sum, got {v}")
        return v

    @field_validator("factor")
    @classmethod
    def _factor(cls, v):
        if not (0 < v[0] <= 1 <= v[1] <= 8):
            raise ValueError(f"factor must satisfy 0 < low <= 1 <= high <= 8, got {v}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        if not v:
            raise ValueError("methods must name at least one of area, bilinear, bicubic")
        return v


class NoiseStage(_Stage):
    """Additive Gaussian noise (with `gaussian_probability`) or Poisson (shot) noise as Real-ESRGAN
    models it, on every channel independently or, with `grey_probability`, the same on all;
    clipped to [0, 1]. Defaults: Gaussian only, colour (Real-ESRGAN: 0.5 Gaussian, 0.4 grey)."""

    kind: Literal["noise"] = "noise"
    probability: float = Field(1.0, ge=0, le=1)
    gaussian_probability: float = Field(1.0, ge=0, le=1)  # otherwise Poisson
    sigma: Range = (1.0, 30.0)  # Gaussian std in 0-255 units, drawn uniformly (`noise_range`)
    poisson_scale: Range = (0.05, 3.0)  # multiplies the Poisson noise (`poisson_scale_range`)
    grey_probability: float = Field(0.0, ge=0, le=1)  # same noise on every channel

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, v):
        return _check_range(v, 0.0, 255.0, "sigma")

    @field_validator("poisson_scale")
    @classmethod
    def _scale(cls, v):
        return _check_range(v, 0.0, 100.0, "poisson_scale")


class JpegStage(_Stage):
    """JPEG compression round trip through PIL at a quality drawn uniformly (inclusive)."""

    kind: Literal["jpeg"] = "jpeg"
    probability: float = Field(1.0, ge=0, le=1)
    quality: tuple[int, int] = (30, 95)  # Real-ESRGAN `jpeg_range`

    @field_validator("quality")
    @classmethod
    def _quality(cls, v):
        return _check_range(v, 1, 100, "quality")


class FinalStage(_Stage):
    """The downscale of Real-ESRGAN's second-order chain: resize to exactly the LR size with a
    random method, then the `sinc` filter; and `jpeg`, before that (with `jpeg_first_probability`)
    or after it. Real-ESRGAN draws both orders with probability 1/2: other orders were found to
    give twisted lines (realesrnet_model.py)."""

    kind: Literal["final"] = "final"
    methods: tuple[ResizeMethod, ...] = RESIZE_METHODS
    sinc: SincStage | None = SincStage(probability=0.8)
    jpeg: JpegStage | None = JpegStage()
    jpeg_first_probability: float = Field(0.5, ge=0, le=1)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        if not v:
            raise ValueError("methods must name at least one of area, bilinear, bicubic")
        return v


Stage = Annotated[
    BicubicStage | BlurStage | SincStage | ResizeStage | NoiseStage | JpegStage | FinalStage,
    Field(discriminator="kind"),
]
DOWNSCALES = (BicubicStage, FinalStage)


class DegradationConfig(BaseModel):
    """Ordered stages; exactly one downscale (`bicubic` or `final`), every `resize` before it.
    Default: bicubic alone (the classical protocol of the SR papers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    stages: tuple[Stage, ...] = (BicubicStage(),)

    @model_validator(mode="after")
    def _one_downscale(self):
        downscales = [i for i, s in enumerate(self.stages) if isinstance(s, DOWNSCALES)]
        if len(downscales) != 1:
            raise ValueError(f"a degradation needs exactly one 'bicubic' or 'final' stage, got {len(downscales)}")
        if any(isinstance(s, ResizeStage) for s in self.stages[downscales[0]:]):
            raise ValueError("a 'resize' stage must come before the downscale (which fixes the LR size)")
        return self


def canonical_json(config: BaseModel, exclude: set[str] | None = None) -> str:
    """Sorted-key, whitespace-free JSON of a config (defaults included): its stable identity."""
    return json.dumps(config.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":"))


def config_hash(config: BaseModel, exclude: set[str] | None = None) -> str:
    """First 12 hex digits of the sha256 of `canonical_json(config)`; used in lake keys."""
    return hashlib.sha256(canonical_json(config, exclude).encode()).hexdigest()[:12]


# -- named configurations ---------------------------------------------------------------------


def _bicubic() -> DegradationConfig:
    return DegradationConfig()


def _light() -> DegradationConfig:
    """One order, mild: a soft, slightly noisy, well compressed photo. The project's own choice,
    narrower than Real-ESRGAN's first order (whose ranges `realistic` uses)."""
    return DegradationConfig(
        stages=(
            BlurStage(probability=0.5, sigma=(0.2, 1.5), sinc_probability=0.0),
            BicubicStage(),
            NoiseStage(probability=0.5, sigma=(1.0, 10.0), grey_probability=0.4),
            JpegStage(quality=(60, 95)),
        )
    )


def _realistic() -> DegradationConfig:
    """Real-ESRGAN's second-order model with its published defaults (train_realesrnet_x4plus.yml)."""
    return DegradationConfig(
        stages=(
            # first order: blur_sigma [0.2, 3], betag [0.5, 4], betap [1, 2], sinc_prob 0.1
            BlurStage(),
            ResizeStage(up_down_keep=(0.2, 0.7, 0.1), factor=(0.15, 1.5), relative_to="input"),
            # gaussian_noise_prob 0.5, noise_range [1, 30], poisson_scale_range [0.05, 3], gray_noise_prob 0.4
            NoiseStage(gaussian_probability=0.5, sigma=(1.0, 30.0), poisson_scale=(0.05, 3.0), grey_probability=0.4),
            JpegStage(quality=(30, 95)),
            # second order: second_blur_prob 0.8, blur_sigma2 [0.2, 1.5], resize_prob2, resize_range2
            BlurStage(probability=0.8, sigma=(0.2, 1.5)),
            ResizeStage(up_down_keep=(0.3, 0.4, 0.3), factor=(0.3, 1.2), relative_to="lr"),
            NoiseStage(gaussian_probability=0.5, sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5), grey_probability=0.4),
            # resize back + final sinc (final_sinc_prob 0.8) and jpeg_range2 [30, 95], in random order
            FinalStage(sinc=SincStage(probability=0.8), jpeg=JpegStage(quality=(30, 95))),
        )
    )


# name -> factory; `bicubic` is the default config (its hash names the pairs already in lakes).
NAMED_DEGRADATIONS: dict[str, Callable[[], DegradationConfig]] = {
    "bicubic": _bicubic,
    "light": _light,
    "realistic": _realistic,
}


class UnknownDegradation(ValueError):
    """A degradation name that is not in `NAMED_DEGRADATIONS`."""


def named_degradation(name: str) -> DegradationConfig:
    """The config called `name`; `UnknownDegradation` names the known ones otherwise."""
    try:
        return NAMED_DEGRADATIONS[name]()
    except KeyError:
        raise UnknownDegradation(
            f"unknown degradation {name!r}; known: {', '.join(NAMED_DEGRADATIONS)}"
        ) from None


def degradation_json(name: str) -> str:
    """How the pairs manifest records the named degradation (its `degradation` column)."""
    return canonical_json(named_degradation(name))


def degradation_name(config: DegradationConfig) -> str | None:
    """The name of a config equal to `config`, or None (a config built by hand)."""
    return next((name for name, make in NAMED_DEGRADATIONS.items() if make() == config), None)
