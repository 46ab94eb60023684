"""MATLAB-compatible imresize and BT.601 colour conversions, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color

from catalog_enhance.tasks.imaging.resize import (
    imresize,
    mod_crop,
    resize_weights,
    rgb_to_y,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)

SCALES = [1 / 2, 1 / 3, 1 / 4, 2, 3, 4]


@pytest.mark.parametrize("scale", SCALES)
def test_constant_image_stays_constant(scale):
    img = np.full((24, 36, 3), 0.37)
    out = imresize(img, scale)
    assert out.shape == (round(24 * scale), round(36 * scale), 3)
    np.testing.assert_allclose(out, 0.37, atol=1e-12)


def test_one_dimensional_downscale_matches_hand_computation():
    # imresize([1 2 3 4], 0.5): kernel 0.5*cubic(0.5 d) over taps -3..6 (1-based), u = 1.5.
    # Normalised weights on taps -2..5: [-0.01171875, -0.03515625, 0.11328125, 0.43359375,
    # 0.43359375, 0.11328125, -0.03515625, -0.01171875]; symmetric padding makes taps -2..5
    # read [3, 2, 1, 1, 2, 3, 4, 4]: 1.4609375; the second output mirrors it: 5 - 1.4609375.
    out = imresize(np.array([[1.0, 2.0, 3.0, 4.0]]), 0.5)
    np.testing.assert_allclose(out, [[1.4609375, 3.5390625]], atol=1e-12)


def test_published_octave_output_without_antialiasing():
    # Octave image package (MATLAB-compatible imresize), published in a script:
    # imresize(transpose(reshape(0:15, 4, 4)), 0.5, 'bicubic', 'AntiAliasing', false)
    img = np.arange(16, dtype=np.float64).reshape(4, 4)
    out = imresize(img, 0.5, antialiasing=False)
    np.testing.assert_allclose(out, [[2.1875, 4.3125], [10.6875, 12.8125]], atol=1e-12)


def test_upscale_reproduces_a_ramp_away_from_the_edges():
    # Keys' cubic (a = -0.5) reproduces linear functions; output pixel i (1-based) samples the
    # input at u = i/s + (1 - 1/s)/2, where a ramp with value k at pixel k reads u.
    ramp = np.arange(1, 21, dtype=np.float64)[None, :]
    for s in (2, 3, 4):
        out = imresize(ramp, s)[0]
        i = np.arange(1, out.size + 1)
        u = i / s + 0.5 * (1 - 1 / s)
        inner = slice(3 * s, -3 * s)
        np.testing.assert_allclose(out[inner], u[inner], atol=1e-12)


def test_weights_are_normalised_and_indices_in_range():
    for in_len, out_len, scale in [(12, 6, 0.5), (12, 4, 1 / 3), (5, 20, 4.0), (9, 5, 5 / 9)]:
        weights, indices = resize_weights(in_len, out_len, scale, True)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
        assert indices.min() >= 0 and indices.max() < in_len
    # Antialiasing widens the kernel by 1/scale when downscaling: more taps.
    assert resize_weights(16, 4, 0.25, True)[0].shape[1] > resize_weights(16, 4, 0.25, False)[0].shape[1]


@pytest.mark.parametrize("scale", SCALES)
def test_flip_symmetry(scale):
    img = np.random.default_rng(0).random((24, 24, 3))
    out = imresize(img, scale)
    np.testing.assert_allclose(imresize(img[::-1, ::-1], scale), out[::-1, ::-1], atol=1e-12)
    np.testing.assert_allclose(imresize(img.transpose(1, 0, 2), scale), out.transpose(1, 0, 2), atol=1e-12)


def test_antialiasing_reduces_aliasing_of_a_high_frequency_pattern():
    # 0.3 cycles/pixel is far above the Nyquist limit (0.125) after x4 downscaling: without the
    # widened kernel it folds into a strong low-frequency pattern (std ~0.28 of a possible 0.35).
    x = np.arange(96)
    stripes = np.tile(0.5 + 0.5 * np.cos(2 * np.pi * 0.3 * x), (96, 1))[..., None]
    aa = imresize(stripes, 0.25)
    no_aa = imresize(stripes, 0.25, antialiasing=False)
    assert no_aa.std() > 0.2
    assert aa.std() < 0.15 * no_aa.std()


def test_tensor_batch_matches_numpy_and_keeps_dtype():
    rng = np.random.default_rng(1)
    images = rng.random((2, 18, 30, 3))
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)  # NCHW float64
    for scale in SCALES:
        out = imresize(batch, scale)
        for n in range(2):
            np.testing.assert_allclose(out[n].permute(1, 2, 0).numpy(), imresize(images[n], scale), atol=1e-12)
    out32 = imresize(batch.float(), 1 / 3)
    assert out32.dtype == torch.float32 and out32.shape == (2, 3, 6, 10)
    np.testing.assert_allclose(out32.numpy(), imresize(batch, 1 / 3).numpy(), atol=1e-5)


def test_output_size_and_arbitrary_sizes():
    img = np.random.default_rng(2).random((192, 100, 3))
    assert imresize(img, 1 / 3).shape == (64, 34, 3)  # ceil(100/3) = 34; 192/3 never 65
    assert imresize(img, size=(50, 230)).shape == (50, 230, 3)
    # A 2-D (H, W) image and a (C, H, W) tensor work too.
    assert imresize(img[..., 0], size=(7, 9)).shape == (7, 9)
    assert imresize(torch.zeros(3, 10, 10), size=(4, 5)).shape == (3, 4, 5)
    # With size given, each axis uses out/in as its scale: halving is the same as scale 0.5.
    np.testing.assert_allclose(imresize(img, size=(96, 50)), imresize(img, 0.5), atol=1e-12)


def test_bad_arguments():
    with pytest.raises(TypeError, match="float"):
        imresize(np.zeros((4, 4, 3), dtype=np.uint8), 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)), 0.5, size=(2, 2))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)))


def test_y_of_white_black_and_primaries():
    pixels = np.array([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    y = rgb_to_y(pixels)
    np.testing.assert_allclose(y[0] * 255, [235.0, 16.0, 16 + 65.481, 16 + 24.966], atol=1e-9)
    t = rgb_to_y(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    assert t.shape == (1, 1, 1, 4)
    np.testing.assert_allclose(t[0, 0].numpy(), y, atol=1e-12)


def test_ycbcr_matches_skimage_bt601_and_round_trips():
    rgb = np.random.default_rng(3).random((9, 11, 3))
    ycbcr = rgb_to_ycbcr(rgb)
    # scikit-image implements the same ITU-R BT.601 transform, in 0-255 units.
    np.testing.assert_allclose(ycbcr * 255, color.rgb2ycbcr(rgb), atol=1e-9)
    np.testing.assert_allclose(ycbcr[..., 0], rgb_to_y(rgb), atol=1e-12)
    np.testing.assert_allclose(ycbcr_to_rgb(ycbcr), rgb, atol=1e-12)
    grey = rgb_to_ycbcr(np.full((1, 1, 3), 0.5))
    np.testing.assert_allclose(grey[0, 0, 1:] * 255, [128.0, 128.0], atol=1e-9)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    back = ycbcr_to_rgb(rgb_to_ycbcr(tensor))
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, tensor, atol=1e-5, rtol=0)


def test_mod_crop():
    assert mod_crop(np.zeros((25, 31, 3)), 4).shape == (24, 28, 3)
    assert mod_crop(np.zeros((25, 31)), 3).shape == (24, 30)
    assert mod_crop(torch.zeros(2, 3, 25, 31), 2).shape == (2, 3, 24, 30)
    img = np.arange(35.0).reshape(5, 7)
    np.testing.assert_array_equal(mod_crop(img, 2), img[:4, :6])  # keeps the top-left
