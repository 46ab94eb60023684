"""The integer-upscale fast path of `imresize` (tensors) against the generic MATLAB path (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catalog_enhance.tasks.imaging.resize import imresize


@pytest.mark.parametrize("scale", [2, 3, 4, 5])
def test_tensor_upscale_equals_the_generic_path_at_every_size_including_tiny(scale):
    rng = np.random.default_rng(scale)
    for h, w in [(1, 1), (1, 7), (2, 3), (3, 2), (5, 9), (17, 12)]:
        img = rng.random((h, w, 2))
        generic = imresize(img, scale)  # numpy: the tap-by-tap path
        tensor = imresize(torch.from_numpy(img).permute(2, 0, 1), scale)
        assert tensor.shape == (2, h * scale, w * scale)
        np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), generic, atol=1e-12)


def test_size_given_as_an_integer_multiple_and_mixed_axes_match_the_generic_path():
    img = np.random.default_rng(0).random((6, 10, 3))
    tensor = torch.from_numpy(img).permute(2, 0, 1)[None]  # (1, 3, 6, 10)
    for size in [(12, 20), (18, 10), (12, 15), (3, 30)]:  # x2/x2, x3/x1, x2/x1.5, x0.5/x3
        out = imresize(tensor, size=size)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(out, imresize(img, size=size), atol=1e-12)


def test_float32_planes_stay_float32_and_constant_planes_stay_constant():
    plane = torch.full((2, 13, 11), 128 / 255, dtype=torch.float32)
    out = imresize(plane, 3)
    assert out.dtype == torch.float32 and out.shape == (2, 39, 33)
    assert torch.allclose(out, torch.tensor(128 / 255), atol=1e-6)
