"""GaussianPooling2D: constant windows, the inference formula against numpy, training noise, contract."""

import keras
import numpy as np
import pytest

from gmsop_keras.layers.gaussian_pooling_2d import GaussianPooling2D
from tests.layer_checks import check_layer


def windows(x, size=2):
    """(B, H, W, C) -> (B, H/size, W/size, size*size, C), non-overlapping windows."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // size, size, w // size, size, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // size, w // size, size * size, c)


def own_mu(layer, x):
    """MU of the layer at inference, from its own sub-layers."""
    hidden = layer.hidden_dense(x.mean(axis=(1, 2)))
    hidden = keras.ops.relu(layer.hidden_norm(hidden, training=False))
    return keras.ops.convert_to_numpy(layer.mean_norm(layer.mean_dense(hidden), training=False))


def test_constant_windows_give_the_constant():
    values = np.random.default_rng(0).standard_normal((2, 1, 1, 3)).astype("float32")
    x = np.repeat(np.repeat(values, 4, axis=1), 4, axis=2)  # every 2x2 window is constant
    layer = GaussianPooling2D()
    for training in (False, True):
        got = keras.ops.convert_to_numpy(layer(x, training=training))
        # std is clamped at sqrt(1e-6) = 1e-3, times W = softplus(.) of order 1
        np.testing.assert_allclose(got, np.broadcast_to(values, got.shape), atol=1e-2)


def test_inference_is_mean_plus_softplus_mu_times_std():
    x = np.random.default_rng(1).standard_normal((3, 6, 6, 4)).astype("float32")
    layer = GaussianPooling2D()
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(got, keras.ops.convert_to_numpy(layer(x, training=False)))
    win = windows(x)
    std = np.sqrt(np.maximum(win.var(axis=3), 1e-6))
    weight = np.logaddexp(0.0, own_mu(layer, x))[:, None, None, :]
    np.testing.assert_allclose(got, win.mean(axis=3) + weight * std, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("noise", ["per_channel", "per_position"])
def test_training_draws_noise(noise):
    x = np.random.default_rng(2).standard_normal((2, 4, 4, 4)).astype("float32")
    layer = GaussianPooling2D(noise=noise, seed=3)
    first = keras.ops.convert_to_numpy(layer(x, training=True))
    second = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(first, second)
    # W > 0 always: the output stays above the window mean
    assert (first > windows(x).mean(axis=3)).all()


def test_per_position_noise_varies_across_positions():
    """With one eps per channel, W (out - mean) / std is the same at every position."""
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 3)).astype("float32")
    win = windows(x)
    mean, std = win.mean(axis=3), np.sqrt(np.maximum(win.var(axis=3), 1e-6))
    for noise, constant in (("per_channel", True), ("per_position", False)):
        out = keras.ops.convert_to_numpy(GaussianPooling2D(noise=noise, seed=5)(x, training=True))
        weight = ((out - mean) / std).reshape(2, -1, 3)
        assert np.allclose(weight, weight[:, :1], rtol=1e-3, atol=1e-4) == constant


def test_strides_and_same_padding_shapes():
    x = np.random.default_rng(6).standard_normal((2, 7, 7, 4)).astype("float32")
    assert GaussianPooling2D(pool_size=3, strides=2)(x).shape == (2, 3, 3, 4)
    assert GaussianPooling2D(padding="same")(x).shape == (2, 4, 4, 4)


def test_layer_contract(tmp_path):
    x = np.random.default_rng(7).standard_normal((4, 6, 6, 4)).astype("float32")
    check_layer(lambda: GaussianPooling2D(seed=1), x, (4, 3, 3, 4), tmp_path, atol=1e-5)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="noise"):
        GaussianPooling2D(noise="per_sample")
    with pytest.raises(ValueError, match="pool_size"):
        GaussianPooling2D(pool_size=0)
    with pytest.raises(ValueError, match="padding"):
        GaussianPooling2D(padding="full")
    with pytest.raises(ValueError, match="feature maps"):
        GaussianPooling2D()(np.zeros((2, 5), dtype="float32"))


def padded_windows_reference(x, size, stride, padding, count_include_pad):
    """Mean and std of every window of a zero-padded map, float64, as PyTorch's pooling."""
    b, h, w, c = x.shape
    padded = np.pad(x.astype("float64"), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    inside = np.pad(np.ones((h, w)), padding)
    out_h, out_w = (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1
    mean = np.zeros((b, out_h, out_w, c))
    std = np.zeros_like(mean)
    for i in range(out_h):
        for j in range(out_w):
            rows, cols = slice(i * stride, i * stride + size), slice(j * stride, j * stride + size)
            count = size * size if count_include_pad else inside[rows, cols].sum()
            window = padded[:, rows, cols, :]
            m = window.sum(axis=(1, 2)) / count
            mean[:, i, j] = m
            std[:, i, j] = np.sqrt(np.maximum((window**2).sum(axis=(1, 2)) / count - m**2, 1e-6))
    return mean, std


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_integer_padding_is_symmetric_as_pytorch(count_include_pad):
    """The Gaussian-pooling ResNet's stem pool: 3x3, stride 2, padding 1 on every side (Keras'
    'same' pads only the bottom and right of an even map). Padded zeros are left out of the
    moments, as the authors' CUDA layer does, or counted (their pure-PyTorch layer)."""
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 4)).astype("float32")
    layer = GaussianPooling2D(3, 2, padding=1, count_include_pad=count_include_pad)
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    assert got.shape == (2, 4, 4, 4) == tuple(layer.compute_output_shape(x.shape))
    mean, std = padded_windows_reference(x, 3, 2, 1, count_include_pad)
    weight = np.logaddexp(0.0, own_mu(layer, x))[:, None, None, :]
    np.testing.assert_allclose(got, mean + weight * std, rtol=1e-4, atol=1e-5)


def test_the_authors_batch_norm_and_initialisation():
    layer = GaussianPooling2D()
    layer.build((None, 8, 8, 512))
    norms = (layer.hidden_norm, layer.mean_norm, layer.sigma_norm)
    assert all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)
    kernel = keras.ops.convert_to_numpy(layer.mean_dense.kernel)  # 1x1 conv 256 -> 512, He over fan-out
    assert kernel.std() == pytest.approx((2.0 / 512) ** 0.5, rel=0.02)
    bias = keras.ops.convert_to_numpy(layer.mean_dense.bias)
    assert 0 < np.abs(bias).max() <= 256**-0.5


def test_bad_padding_names_the_argument():
    with pytest.raises(ValueError, match="padding"):
        GaussianPooling2D(3, padding=3)
    with pytest.raises(ValueError, match="padding"):
        GaussianPooling2D(padding="full")
