"""The degradation pipeline: bicubic by default, blur/noise/JPEG stages, determinism, config hash."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from catalog_enhance.tasks.imaging.degrade import (
    BicubicStage,
    BlurStage,
    DegradationConfig,
    JpegStage,
    NoiseStage,
    config_hash,
    degrade,
    gaussian_kernel,
)
from catalog_enhance.tasks.imaging.resize import imresize


def _image(h=48, w=48, seed=0):
    return np.random.default_rng(seed).random((h, w, 3))


def _flat(value=0.5, h=96, w=96):
    return np.full((h, w, 3), value)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_is_bicubic_only_and_equals_imresize(scale):
    hr = _image()
    lr = degrade(hr, scale, DegradationConfig(), np.random.default_rng(0))
    assert lr.shape == (48 // scale, 48 // scale, 3)
    np.testing.assert_array_equal(lr, imresize(hr, 1 / scale))
    batch = torch.from_numpy(hr).permute(2, 0, 1)[None]
    lr_batch = degrade(batch, scale, DegradationConfig(), np.random.default_rng(0))
    torch.testing.assert_close(lr_batch, imresize(batch, 1 / scale))


def test_uint8_input_is_treated_as_0_255():
    hr = (_image() * 255).round().astype(np.uint8)
    lr = degrade(hr, 2, DegradationConfig(), np.random.default_rng(0))
    np.testing.assert_allclose(lr, imresize(hr.astype(np.float32) / 255, 0.5), atol=1e-6)


def test_gaussian_noise_has_the_configured_std():
    config = DegradationConfig(stages=[BicubicStage(), NoiseStage(sigma=(10.0, 10.0))])
    lr = degrade(_flat(h=256, w=256), 2, config, np.random.default_rng(0))
    noise = lr - 0.5
    assert abs(noise.std() * 255 - 10.0) < 0.3  # 3*128*128 samples: std error ~0.04
    assert abs(noise.mean()) < 0.002
    # Colour noise: channels independent.
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.05


def test_grey_noise_is_the_same_on_every_channel():
    config = DegradationConfig(stages=[BicubicStage(), NoiseStage(sigma=(5.0, 5.0), grey_probability=1.0)])
    lr = degrade(_flat(), 2, config, np.random.default_rng(0))
    assert lr.std() > 0.01
    np.testing.assert_array_equal(lr[..., 0], lr[..., 1])
    np.testing.assert_array_equal(lr[..., 0], lr[..., 2])


def test_poisson_noise_changes_pixels_and_stays_in_range():
    config = DegradationConfig(stages=[BicubicStage(), NoiseStage(model="poisson", poisson_scale=(1.0, 1.0))])
    hr = _image(96, 96)
    clean = imresize(hr, 0.5)
    lr = degrade(hr, 2, config, np.random.default_rng(0))
    assert lr.min() >= 0 and lr.max() <= 1
    assert 0.005 < np.abs(lr - np.clip(clean, 0, 1)).mean() < 0.2


def _smooth(h=96, w=96):
    y, x = np.mgrid[0:h, 0:w] / 16.0
    return np.stack([0.5 + 0.4 * np.sin(x), 0.5 + 0.4 * np.cos(y), 0.5 + 0.2 * np.sin(x + y)], axis=-1)


def test_jpeg_stage_output_is_a_decoded_jpeg():
    hr = _smooth()
    low = DegradationConfig(stages=[BicubicStage(), JpegStage(quality=(10, 10))])
    high = DegradationConfig(stages=[BicubicStage(), JpegStage(quality=(95, 95))])
    clean = np.clip(imresize(hr, 0.5), 0, 1)
    lr_low = degrade(hr, 2, low, np.random.default_rng(0))
    lr_high = degrade(hr, 2, high, np.random.default_rng(0))
    assert lr_low.shape == clean.shape and lr_low.dtype == clean.dtype
    # Decoded 8-bit pixels: every value is a multiple of 1/255.
    np.testing.assert_allclose(lr_low * 255, np.round(lr_low * 255), atol=1e-9)
    assert np.abs(lr_low - clean).mean() > 2 * np.abs(lr_high - clean).mean()


def test_blur_kernel_and_stage():
    kernel = gaussian_kernel(21, 2.0, 2.0, 0.0)
    assert abs(kernel.sum() - 1) < 1e-12
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    aniso = gaussian_kernel(21, 4.0, 0.5, 0.0)
    assert aniso[10, :].sum() > aniso[:, 10].sum()  # wide along x, narrow along y
    blur_first = DegradationConfig(stages=[BlurStage(sigma=(2.0, 2.0)), BicubicStage()])
    hr = _image(96, 96)
    blurred = degrade(hr, 2, blur_first, np.random.default_rng(0))
    assert blurred.std() < 0.5 * imresize(hr, 0.5).std()
    # A constant image stays constant (replicate padding), even with a kernel wider than the LR.
    small_blur = DegradationConfig(stages=[BicubicStage(), BlurStage(sigma=(3.0, 3.0), kernel_size=41)])
    np.testing.assert_allclose(degrade(_flat(0.3, 24, 24), 3, small_blur, np.random.default_rng(0)), 0.3, atol=1e-12)


def _realistic():
    return DegradationConfig(
        stages=[
            BlurStage(anisotropic_probability=0.5, probability=0.8),
            BicubicStage(),
            NoiseStage(model="poisson", probability=0.5),
            NoiseStage(grey_probability=0.4),
            JpegStage(),
        ]
    )


def test_same_seed_same_output_and_different_seed_differs():
    hr, config = _image(), _realistic()
    a = degrade(hr, 4, config, np.random.default_rng(123))
    b = degrade(hr, 4, config, np.random.default_rng(123))
    c = degrade(hr, 4, config, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # A batch tensor with shared parameters gives the same as the single image.
    t = degrade(torch.from_numpy(hr).permute(2, 0, 1)[None], 4, config, np.random.default_rng(123))
    np.testing.assert_allclose(t[0].permute(1, 2, 0).numpy(), a, atol=1e-12)


def test_config_validation_and_parsing():
    with pytest.raises(pydantic.ValidationError, match="exactly one 'bicubic'"):
        DegradationConfig(stages=[NoiseStage()])
    with pytest.raises(pydantic.ValidationError, match="exactly one 'bicubic'"):
        DegradationConfig(stages=[BicubicStage(), BicubicStage()])
    with pytest.raises(pydantic.ValidationError):
        BlurStage(kernel_size=20)
    with pytest.raises(pydantic.ValidationError):
        JpegStage(quality=(90, 30))
    with pytest.raises(pydantic.ValidationError):
        DegradationConfig(stages=[{"kind": "sharpen"}, {"kind": "bicubic"}])
    parsed = DegradationConfig.model_validate({"stages": [{"kind": "blur", "sigma": [1, 2]}, {"kind": "bicubic"}]})
    assert isinstance(parsed.stages[0], BlurStage) and parsed.stages[0].sigma == (1.0, 2.0)


def test_config_hash_is_stable_and_sensitive():
    config = _realistic()
    h = config_hash(config)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(DegradationConfig.model_validate_json(config.model_dump_json())) == h
    assert config_hash(DegradationConfig()) != h
    changed = DegradationConfig(stages=[*config.stages[:-1], JpegStage(quality=(30, 90))])
    assert config_hash(changed) != h
    # Order of stages is part of the identity.
    swapped = DegradationConfig(stages=[BicubicStage(), BlurStage()])
    assert config_hash(swapped) != config_hash(DegradationConfig(stages=[BlurStage(), BicubicStage()]))
