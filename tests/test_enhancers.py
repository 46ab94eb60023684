"""Classical baselines and the model wrapper: shapes, colour fidelity, what each one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catalog_enhance.models import get_model
from catalog_enhance.tasks.inference import enhancers
from catalog_enhance.tasks.inference.enhancers import (
    bicubic,
    classical_enhancers,
    enhancer_names,
    get_enhancer,
    model_enhancer,
    register_enhancer,
)
from catalog_enhance.tasks.imaging.metrics import quantize
from catalog_enhance.tasks.imaging.resize import imresize, rgb_to_ycbcr, rgb_to_y



def _textured(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = 0.5 + 0.3 * np.sin(xx / 2.0)[..., None] * np.cos(yy / 3.0)[..., None] * np.array([1.0, 0.5, -0.7])
    return np.clip(smooth + rng.normal(0, 0.05, (h, w, 3)), 0.05, 0.95)


def _high_frequency_energy(rgb: np.ndarray) -> float:
    y = rgb_to_y(rgb)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap**2))


def test_registry_lists_the_classical_baselines_bicubic_first():
    names = enhancer_names()
    assert names[0] == "bicubic"
    assert {"bicubic+unsharp", "bicubic+histeq", "bicubic+denoise", "bicubic+denoise+unsharp"} <= set(names)
    assert classical_enhancers() is not classical_enhancers()  # callers get their own dict
    with pytest.raises(ValueError, match="already registered"):
        register_enhancer("bicubic", bicubic)
    with pytest.raises(KeyError, match="known: bicubic"):
        get_enhancer("magic")


@pytest.mark.parametrize("name", ["bicubic", "bicubic+unsharp", "bicubic+histeq", "bicubic+denoise",
                                  "bicubic+denoise+unsharp"])
@pytest.mark.parametrize("scale", [2, 3])
def test_every_baseline_returns_an_hr_sized_rgb_image_in_range(name, scale):
    lr = _textured()
    out = get_enhancer(name)(lr, scale)
    assert out.shape == (12 * scale, 10 * scale, 3)
    assert np.issubdtype(out.dtype, np.floating)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_bicubic_is_matlab_imresize_and_keeps_a_constant_image_constant():
    lr = _textured()
    np.testing.assert_allclose(bicubic(lr, 2), np.clip(imresize(lr, 2), 0, 1))
    for value in (0.0, 0.37, 1.0):
        flat = np.full((7, 9, 3), value)
        np.testing.assert_allclose(bicubic(flat, 3), value, atol=1e-12)


def test_unsharp_mask_adds_high_frequency_energy():
    lr = _textured(16, 16)
    assert _high_frequency_energy(get_enhancer("bicubic+unsharp")(lr, 2)) > 1.2 * _high_frequency_energy(bicubic(lr, 2))


def test_the_restoration_pipeline_denoises_then_sharpens():
    from catalog_enhance.tasks.inference.enhancers import denoise_unsharp

    lr = _textured(16, 16)
    noisy = np.clip(lr + np.random.default_rng(0).normal(0, 0.08, lr.shape), 0, 1)
    denoised = denoise_unsharp(weight=0.1, amount=0.0)(noisy, 2)
    assert _high_frequency_energy(denoised) < _high_frequency_energy(bicubic(noisy, 2))
    assert _high_frequency_energy(denoise_unsharp(weight=0.1, amount=1.0)(noisy, 2)) > _high_frequency_energy(denoised)
    np.testing.assert_allclose(denoise_unsharp(weight=0.0, amount=0.0)(noisy, 2), bicubic(noisy, 2), atol=1e-9)


def test_denoiser_removes_high_frequency_energy_and_histeq_stretches_contrast():
    lr = _textured(16, 16)
    up = bicubic(lr, 2)
    assert _high_frequency_energy(get_enhancer("bicubic+denoise")(lr, 2)) < _high_frequency_energy(up)
    dull = 0.45 + 0.1 * lr  # a low-contrast image
    assert rgb_to_y(get_enhancer("bicubic+histeq")(dull, 2)).std() > 2 * rgb_to_y(bicubic(dull, 2)).std()


@pytest.mark.parametrize("name", ["bicubic", "bicubic+unsharp", "bicubic+histeq", "bicubic+denoise",
                                  "bicubic+denoise+unsharp"])
def test_baselines_touch_only_luma_so_grey_stays_grey(name):
    grey = np.repeat(_textured()[..., :1], 3, axis=2)
    out = quantize(get_enhancer(name)(grey, 2)).astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 1] - out[..., 2]).max() <= 1


class _Identity(nn.Module):
    """Same-size network that returns its input (SRCNN-style, upsamples_inside False)."""

    upsamples_inside = False

    def __init__(self, shift: float = 0.0):
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(shift), requires_grad=False)

    def forward(self, x):
        return x + self.shift


class _Nearest(nn.Module):
    """An LR -> HR network (ESPCN-style) that upsamples by pixel repetition."""

    upsamples_inside = True

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") + self.dummy


def _eight_bit(img: np.ndarray) -> np.ndarray:
    return quantize(img).astype(np.float64) / 255.0


def _assert_8bit_close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal as 8-bit images up to float32-vs-float64 rounding at a .5 boundary (one level, rarely)."""
    diff = np.abs(quantize(a).astype(int) - quantize(b).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.97


@pytest.mark.parametrize("channels", [1, 3])
def test_identity_network_on_the_upscaled_input_reproduces_bicubic(channels):
    lr = _eight_bit(_textured())
    out = model_enhancer(_Identity(), 2, channels)(lr, 2)
    assert out.shape == (24, 20, 3)
    _assert_8bit_close(out, bicubic(lr, 2))


def test_luma_model_changes_luma_only_and_keeps_chroma_from_bicubic():
    lr = _eight_bit(_textured())
    out = model_enhancer(_Identity(shift=0.04), 2, channels=1)(lr, 2)
    ref = rgb_to_ycbcr(bicubic(lr, 2))
    got = rgb_to_ycbcr(out)
    np.testing.assert_allclose(got[..., 0], ref[..., 0] + 0.04, atol=1 / 255)  # 8-bit output
    np.testing.assert_allclose(got[..., 1:], ref[..., 1:], atol=1 / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_network_that_upsamples_inside_receives_the_lr_image(channels):
    lr = _eight_bit(_textured(6, 5))
    out = model_enhancer(_Nearest(3), 3, channels)(lr, 3)
    assert out.shape == (18, 15, 3)
    nearest = np.repeat(np.repeat(lr, 3, axis=0), 3, axis=1)
    if channels == 3:
        _assert_8bit_close(out, nearest)
    else:  # only the luma went through the net; chroma is bicubic
        np.testing.assert_allclose(rgb_to_y(out), rgb_to_y(nearest), atol=1 / 255)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 4])
def test_zero_initialised_espcn_keeps_white_white_and_grey_untinted(channels, scale):
    torch.manual_seed(0)
    enhance = model_enhancer(get_model("espcn", scale=scale, channels=channels), scale, channels)
    white = enhance(np.ones((5, 6, 3)), scale)
    assert white.shape == (5 * scale, 6 * scale, 3)
    assert (quantize(white) == 255).all()
    grey = quantize(enhance(np.full((5, 6, 3), 128 / 255), scale))
    assert (grey == 128).all()
    ramp = np.repeat(np.linspace(0.1, 0.9, 6)[None, :, None], 5, axis=0).repeat(3, axis=2)
    out = quantize(enhance(ramp, scale)).astype(int)
    assert np.abs(out[..., 0] - out[..., 2]).max() <= 1  # R = G = B: no tint


def test_srcnn_with_zeroed_reconstruction_is_exactly_bicubic_and_runs_in_eval_mode():
    torch.manual_seed(0)
    net = get_model("srcnn", channels=1, residual=True)
    nn.init.zeros_(net.reconstruction.weight)
    net.train()
    enhance = model_enhancer(net, 2, channels=1)
    assert not net.training
    lr = _eight_bit(_textured())
    _assert_8bit_close(enhance(lr, 2), bicubic(lr, 2))
    assert (quantize(enhance(np.ones((6, 6, 3)), 2)) == 255).all()


def test_model_enhancer_refuses_a_wrong_scale_channels_or_input():
    enhance = model_enhancer(_Identity(), 2, 3)
    with pytest.raises(ValueError, match="trained for x2"):
        enhance(_textured(), 3)
    with pytest.raises(ValueError, match="channels"):
        model_enhancer(_Identity(), 2, 2)
    with pytest.raises(TypeError, match="float"):
        enhance(np.zeros((4, 4, 3), np.uint8), 2)
    with pytest.raises(ValueError, match="RGB"):
        enhance(np.zeros((4, 4)), 2)


def test_enhancers_module_has_no_per_image_state():
    # Stateless per call (Real-ESRGAN #658): two images through one wrapper give what each gives alone.
    enhance = model_enhancer(_Nearest(2), 2, 1)
    a, b = _textured(seed=1), _textured(seed=2)
    alone = enhance(b, 2)
    enhance(a, 2)
    np.testing.assert_array_equal(enhance(b, 2), alone)
    assert not any(isinstance(v, np.ndarray) for v in vars(enhancers).values())
