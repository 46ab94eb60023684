"""PSNR-Y / SSIM-Y against values computed by hand (and by skimage) on small known images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from catalog_enhance.tasks.imaging.metrics import PSNR_CAP_DB, psnr_y, quantize, ssim_y, y_channel_255

# torchmetrics takes log(data_range) in float32: PSNR agrees with float64 hand values to ~1e-6 dB.
PSNR_TOL = 1e-5
# MATLAB BT.601 luma coefficients on 0-255 RGB: a +c offset on every channel moves Y by c*219/255.
Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0


def _photo_like(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture uint8 RGB image away from 0 and 255 (so offsets do not clip)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.array([1.0, 0.6, -0.8])
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 30, 220).round().astype(np.uint8)


def _hand_y(rgb_u8: np.ndarray) -> np.ndarray:
    r, g, b = (rgb_u8[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def test_constant_offset_gives_the_textbook_psnr():
    hr = _photo_like()
    for offset in (1, 5, 12):
        sr = (hr.astype(np.float64) + offset) / 255.0  # float SR output, as a model returns it
        expected = 20 * math.log10(255.0 / (offset * Y_GAIN))
        assert psnr_y(sr, hr, border=0) == pytest.approx(expected, abs=PSNR_TOL)
        assert psnr_y(sr, hr.astype(np.float64) / 255.0, border=2) == pytest.approx(expected, abs=PSNR_TOL)


def test_psnr_matches_hand_computed_mse_on_the_luma():
    hr = _photo_like(seed=1)
    sr = _photo_like(seed=2)
    border = 3
    diff = (_hand_y(sr) - _hand_y(hr))[border:-border, border:-border]
    expected = 10 * math.log10(255.0**2 / np.mean(diff**2))
    assert psnr_y(sr, hr, border) == pytest.approx(expected, abs=PSNR_TOL)


def test_border_shaving_excludes_a_corrupted_border():
    hr = _photo_like()
    border = 3
    sr = hr.astype(np.float64) / 255.0 + 4 / 255.0
    sr[:border], sr[-border:], sr[:, :border], sr[:, -border:] = 0.0, 1.0, 0.0, 1.0  # garbage edges
    expected = 20 * math.log10(255.0 / (4 * Y_GAIN))
    assert psnr_y(sr, hr, border) == pytest.approx(expected, abs=PSNR_TOL)
    assert psnr_y(sr, hr, border - 1) < expected - 5  # one garbage row/column left in: much worse
    assert ssim_y(sr, hr, border) > ssim_y(sr, hr, 0)


def test_sr_output_is_quantised_like_a_saved_image_before_scoring():
    hr = _photo_like()
    rng = np.random.default_rng(3)
    # Sub-half-step noise and out-of-range values vanish when rounded and clipped to 8 bits.
    sr = hr / 255.0 + rng.uniform(-0.45, 0.45, hr.shape) / 255.0
    assert psnr_y(sr, hr, 0) == PSNR_CAP_DB
    white = np.full((16, 16, 3), 255, np.uint8)
    assert psnr_y(np.full((16, 16, 3), 1.3), white, 0) == PSNR_CAP_DB
    assert quantize(np.array([[[0.5 / 255, 1.5 / 255, -0.2]]])).tolist() == [[[0, 2, 0]]]


def test_y_is_matlab_bt601_on_the_0_255_scale():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:10] = 255
    y = y_channel_255(img)[0, 0].numpy()
    assert y[0, 0] == pytest.approx(235.0) and y[-1, -1] == pytest.approx(16.0)
    grey = np.full((12, 14), 100, np.uint8)  # a 2-D grey image is treated as R = G = B
    assert y_channel_255(grey, border=2).shape == (1, 1, 8, 10)
    assert float(y_channel_255(grey)[0, 0, 0, 0]) == pytest.approx(16 + 219 * 100 / 255)


def test_ssim_of_identical_images_is_one():
    hr = _photo_like()
    assert ssim_y(hr, hr, 0) == pytest.approx(1.0, abs=1e-12)
    assert ssim_y(hr / 255.0, hr, 2) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_with_wang_et_al_settings():
    hr = _photo_like(48, 56, seed=4)
    rng = np.random.default_rng(5)
    sr = np.clip(hr + rng.normal(0, 12, hr.shape), 0, 255).round().astype(np.uint8)
    for border in (0, 2, 4):
        crop = slice(border, -border or None)
        expected = structural_similarity(
            _hand_y(sr)[crop, crop], _hand_y(hr)[crop, crop],
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        )
        assert ssim_y(sr, hr, border) == pytest.approx(expected, abs=1e-9)
    assert 0.3 < ssim_y(sr, hr, 2) < 0.99  # a real, non-trivial comparison


def test_bad_inputs_raise_clear_errors():
    hr = _photo_like(20, 20)
    with pytest.raises(ValueError, match="differ in size"):
        psnr_y(hr[:-2], hr, 0)
    with pytest.raises(ValueError, match="too small"):
        psnr_y(hr, hr, 10)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_y(hr, hr, 5)
    with pytest.raises(ValueError, match="NaN"):
        psnr_y(np.full(hr.shape, np.nan), hr, 0)
    with pytest.raises(ValueError, match="RGB"):
        psnr_y(np.zeros((20, 20, 4)), np.zeros((20, 20, 4)), 0)
