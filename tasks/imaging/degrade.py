"""The degradation pipeline that turns an HR image into its LR input, in the spirit of Real-ESRGAN.

A `DegradationConfig` is an ordered list of small typed stages; exactly one of them is the
`bicubic` downscale (MATLAB-compatible, `tasks.resize.imresize`), and the default config is that
stage alone, the classical protocol of the SR papers. Stages before it act on the HR image
(e.g. camera blur), stages after it on the LR image (sensor noise, JPEG). Every random choice is
drawn from the caller's `np.random.Generator` in a fixed order, so a seeded generator gives
identical output, and `config_hash` names a config in lake keys.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalog_enhance.tasks.imaging.resize import Image, imresize

Range = tuple[float, float]


def _check_range(value: tuple, low: float, high: float, name: str) -> tuple:
    a, b = value
    if not (low <= a <= b <= high):
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}, got {value}")
    return value


class _Stage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BicubicStage(_Stage):
    """Downscale by the pair's scale with MATLAB's bicubic `imresize`."""

    kind: Literal["bicubic"] = "bicubic"
    antialiasing: bool = True


class BlurStage(_Stage):
    """Gaussian blur: isotropic, or anisotropic (two sigmas and a random rotation)."""

    kind: Literal["blur"] = "blur"
    probability: float = Field(1.0, ge=0, le=1)
    sigma: Range = (0.2, 3.0)  # pixels, drawn uniformly
    anisotropic_probability: float = Field(0.0, ge=0, le=1)
    kernel_size: int = Field(21, ge=3, le=41)

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, v):
        return _check_range(v, 1e-3, 50.0, "sigma")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {v}")
        return v


class NoiseStage(_Stage):
    """Additive Gaussian noise, or Poisson (shot) noise as Real-ESRGAN models it; clipped to [0, 1]."""

    kind: Literal["noise"] = "noise"
    probability: float = Field(1.0, ge=0, le=1)
    model: Literal["gaussian", "poisson"] = "gaussian"
    sigma: Range = (1.0, 30.0)  # Gaussian std in 0-255 units, drawn uniformly
    poisson_scale: Range = (0.05, 3.0)  # multiplies the Poisson noise, drawn uniformly
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
    quality: tuple[int, int] = (30, 95)

    @field_validator("quality")
    @classmethod
    def _quality(cls, v):
        return _check_range(v, 1, 100, "quality")


Stage = Annotated[BicubicStage | BlurStage | NoiseStage | JpegStage, Field(discriminator="kind")]


class DegradationConfig(BaseModel):
    """Ordered stages; exactly one `bicubic` stage (the downscale). Default: bicubic alone."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    stages: tuple[Stage, ...] = (BicubicStage(),)

    @model_validator(mode="after")
    def _one_downscale(self):
        n = sum(isinstance(s, BicubicStage) for s in self.stages)
        if n != 1:
            raise ValueError(f"a degradation needs exactly one 'bicubic' stage, got {n}")
        return self


def canonical_json(config: BaseModel, exclude: set[str] | None = None) -> str:
    """Sorted-key, whitespace-free JSON of a config (defaults included): its stable identity."""
    return json.dumps(config.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":"))


def config_hash(config: BaseModel, exclude: set[str] | None = None) -> str:
    """First 12 hex digits of the sha256 of `canonical_json(config)`; used in lake keys."""
    return hashlib.sha256(canonical_json(config, exclude).encode()).hexdigest()[:12]


# -- stages -------------------------------------------------------------------------------------


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A normalised (size, size) bivariate Gaussian, rotated by theta (radians)."""
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    inverse = np.linalg.inv(covariance)
    r = np.arange(size) - size // 2
    grid = np.stack(np.meshgrid(r, r, indexing="xy"), axis=-1)  # (y, x, [x, y])
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", grid, inverse, grid))
    return kernel / kernel.sum()


def _on_tensor(x: Image, fn) -> Image:
    """Run a torch function on a channels-first tensor, whatever the image's kind."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    out = fn(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, -3))))
    return np.ascontiguousarray(out.movedim(-3, -1).numpy())


def _on_array(x: Image, fn) -> Image:
    """Run a numpy function on a channels-last `(..., H, W, C)` array, whatever the image's kind."""
    if not isinstance(x, torch.Tensor):
        return fn(x)
    out = fn(x.movedim(-3, -1).cpu().numpy())
    return torch.from_numpy(out).movedim(-1, -3).to(x.device)


def _blur(x: torch.Tensor, stage: BlurStage, rng: np.random.Generator) -> torch.Tensor:
    anisotropic = rng.random() < stage.anisotropic_probability
    sigma_x = rng.uniform(*stage.sigma)
    sigma_y = rng.uniform(*stage.sigma) if anisotropic else sigma_x
    theta = rng.uniform(-np.pi, np.pi) if anisotropic else 0.0
    kernel = torch.tensor(gaussian_kernel(stage.kernel_size, sigma_x, sigma_y, theta), dtype=x.dtype)
    pad = stage.kernel_size // 2
    flat = x.reshape(-1, 1, *x.shape[-2:])
    # Replicate padding works for any image size (reflect needs pad < side, LR crops are small).
    flat = F.conv2d(F.pad(flat, (pad, pad, pad, pad), mode="replicate"), kernel.to(x.device)[None, None])
    return flat.reshape(x.shape)


def _noise(img: np.ndarray, stage: NoiseStage, rng: np.random.Generator) -> np.ndarray:
    """On a channels-last array."""
    grey = rng.random() < stage.grey_probability
    img = np.clip(img, 0, 1)
    if stage.model == "gaussian":
        sigma = rng.uniform(*stage.sigma) / 255.0
        noise = rng.standard_normal((*img.shape[:-1], 1) if grey else img.shape) * sigma
    else:
        scale = rng.uniform(*stage.poisson_scale)
        source = img
        if grey and img.shape[-1] == 3:
            source = (img @ np.array([0.299, 0.587, 0.114]))[..., None]  # one noise field for all
        # Real-ESRGAN's Poisson model: photon count tied to the number of distinct grey levels.
        levels = len(np.unique(np.round(source * 255)))
        vals = 2 ** np.ceil(np.log2(max(levels, 2)))
        noise = (rng.poisson(source * vals) / vals - source) * scale
    return np.clip(img + noise, 0, 1).astype(img.dtype)


def _jpeg(img: np.ndarray, stage: JpegStage, rng: np.random.Generator) -> np.ndarray:
    """On a channels-last array: encode each image at one drawn quality, decode."""
    quality = int(rng.integers(stage.quality[0], stage.quality[1] + 1))
    if img.shape[-1] not in (1, 3):
        raise ValueError(f"jpeg stage needs 1 or 3 channels, got {img.shape[-1]}")
    flat = img.reshape(-1, *img.shape[-3:])
    out = np.empty(flat.shape, dtype=img.dtype)
    for i, one in enumerate(flat):
        u8 = np.floor(np.clip(one, 0, 1) * 255 + 0.5).astype(np.uint8)
        pil = PILImage.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(PILImage.open(io.BytesIO(buffer.getvalue())).convert(pil.mode))
        out[i] = decoded.reshape(one.shape) / 255.0
    return out.reshape(img.shape)


def degrade(hr: Image, scale: int, config: DegradationConfig, rng: np.random.Generator) -> Image:
    """Apply `config`'s stages to an HR image and return the LR image (1/scale in each side).

    `hr` is a numpy `(H, W, C)` image or a `(..., C, H, W)` tensor, float in [0, 1] (a uint8
    array is converted to float32). The result has the input's kind, layout and float dtype;
    bicubic output is not clipped (as MATLAB), noise and JPEG stages clip to [0, 1]. For a
    batch tensor, random parameters are drawn once and shared by the batch. numpy input is
    computed with numpy where possible (fast for single images, no torch thread contention).
    """
    if isinstance(hr, np.ndarray) and hr.dtype == np.uint8:
        hr = hr.astype(np.float32) / 255.0
    if isinstance(hr, torch.Tensor):
        if hr.ndim < 3 or not hr.is_floating_point():
            raise TypeError(f"degrade expects a float (..., C, H, W) tensor, got {hr.dtype} {tuple(hr.shape)}")
    elif hr.ndim != 3 or not np.issubdtype(hr.dtype, np.floating):
        raise TypeError(f"degrade expects a float (H, W, C) array, got {hr.dtype} {hr.shape}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    x = hr
    for stage in config.stages:
        if isinstance(stage, BicubicStage):
            x = imresize(x, 1 / scale, antialiasing=stage.antialiasing)
            continue
        # The gate is the stage's first draw; everything after follows from the generator.
        if rng.random() >= stage.probability:
            continue
        if isinstance(stage, BlurStage):
            x = _on_tensor(x, lambda t: _blur(t, stage, rng))
        elif isinstance(stage, NoiseStage):
            x = _on_array(x, lambda a: _noise(a, stage, rng))
        else:
            x = _on_array(x, lambda a: _jpeg(a, stage, rng))
    return x
