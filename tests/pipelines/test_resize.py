"""MATLAB-style bicubic imresize: weights from MATLAB's formulas, rounding per pass, order of passes."""

import math

import numpy as np
import pytest
from PIL import Image

from pipelines.resize import resize_images, resize_matrix


def cubic(x):
    x = abs(x)
    if x <= 1:
        return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
    if x <= 2:
        return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
    return 0.0


def matlab_weights(in_length, out_length):
    """imresize.m `contributions`, transcribed loop by loop with 1-based indices."""
    scale = out_length / in_length
    width = 4.0 / scale if scale < 1 else 4.0
    matrix = np.zeros((out_length, in_length))
    for x in range(1, out_length + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + p for p in range(math.ceil(width) + 2)]
        weights = [scale * cubic(scale * (u - j)) if scale < 1 else cubic(u - j) for j in taps]
        total = sum(weights)
        for j, w in zip(taps, weights):
            k = (j - 1) % (2 * in_length)  # mirror: 1..n, n..1, repeated
            index = k if k < in_length else 2 * in_length - 1 - k
            matrix[x - 1, index] += w / total
    return matrix


@pytest.mark.parametrize("in_length, out_length", [(256, 100), (7, 3), (5, 9), (100, 96), (3, 1)])
def test_weights_follow_matlab(in_length, out_length):
    np.testing.assert_allclose(resize_matrix(in_length, out_length), matlab_weights(in_length, out_length),
                               atol=1e-12)


def test_two_passes_rounded_smaller_scale_first():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 30, 17, 3), dtype=np.uint8)
    out = resize_images(image, (10, 8))  # scales 1/3 (rows) and 8/17: rows first
    rows = np.floor(np.clip(np.einsum("oh,nhwc->nowc", matlab_weights(30, 10), image), 0, 255) + 0.5)
    both = np.floor(np.clip(np.einsum("ow,nhwc->nhoc", matlab_weights(17, 8), rows), 0, 255) + 0.5)
    np.testing.assert_array_equal(out, both.astype(np.uint8))
    out = resize_images(image, (20, 5))  # scales 2/3 and 5/17: columns first
    cols = np.floor(np.clip(np.einsum("ow,nhwc->nhoc", matlab_weights(17, 5), image), 0, 255) + 0.5)
    both = np.floor(np.clip(np.einsum("oh,nhwc->nowc", matlab_weights(30, 20), cols), 0, 255) + 0.5)
    np.testing.assert_array_equal(out, both.astype(np.uint8))


def test_constant_identity_and_pil_agreement():
    constant = np.full((2, 37, 53, 3), 77, np.uint8)
    assert (resize_images(constant, (10, 20)) == 77).all()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (2, 9, 9, 3), dtype=np.uint8)
    assert resize_images(image, (9, 9)) is image
    smooth = np.stack([np.asarray(Image.fromarray(im).resize((256, 256), Image.BICUBIC)) for im in image])
    ours = resize_images(smooth, (100, 100)).astype(int)
    pil = np.stack([np.asarray(Image.fromarray(im).resize((100, 100), Image.BICUBIC)) for im in smooth])
    assert np.abs(ours - pil)[:, 3:-3, 3:-3].max() <= 2  # same kernel; borders differ (mirror vs clamp)


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="`images` must be uint8"):
        resize_images(np.zeros((1, 4, 4, 3), np.float32), (2, 2))
