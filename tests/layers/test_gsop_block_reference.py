"""GSoPBlock against a float64 numpy forward of the block, written from its docstring.

- channel attention: `sigmoid(Dense_C(rowconv(rowBN(Cov(ReLU(BN(conv1x1_d(ReLU(x)))))))))`,
  `Cov` the biased `d x d` covariance of the positions, `rowBN` a BatchNorm whose features are the
  rows (statistics over the batch and the columns), `rowconv` one `(n, 1)` kernel per row with
  `row_multiplier` outputs each (output `i * row_multiplier + m`, as PyTorch's grouped conv);
- position attention: `ReLU(x)` reduced to `d` channels (1x1 conv + BN), adaptive average pooling
  to `s x s` (PyTorch's windows `floor(i n / m)` to `ceil((i + 1) n / m)`), the biased
  `s^2 x s^2` covariance of the positions over the channels, row BN, row-wise conv, ReLU,
  `Dense_{s^2}`, sigmoid, and adaptive average pooling back up to the map's size;
- `"concat"`: `BN(conv_c(x * a_channel) + conv_p(ReLU(x * a_position)))`, each conv `(k, 1)` with
  bias, `"same"` zero padding, `C / 64` groups and `k = 2 round(log2(32 / groups)) + 5`.

BatchNorm epsilon 1e-5; at inference the moving statistics, when training the batch's (biased).
"""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import GSoPBlock

BN_EPSILON = 1e-5  # the authors' (PyTorch's) BatchNorm epsilon
RTOL = 1e-4  # float32 layer against float64 numpy
SPATIAL_SIZE = 3
REDUCED_DIM = 6
ROW_MULTIPLIER = 2


def numpy_value(variable):
    return np.float64(keras.ops.convert_to_numpy(variable))


def batch_norm(norm, x, axes, training):
    """BatchNorm of the features on the axis not in `axes`, float64."""
    if training:
        mean, variance = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    else:
        mean, variance = numpy_value(norm.moving_mean), numpy_value(norm.moving_variance)
    shape = [1] * x.ndim
    shape[[i for i in range(x.ndim) if i not in axes][0]] = -1
    mean, variance = np.reshape(mean, shape), np.reshape(variance, shape)
    gamma, beta = numpy_value(norm.gamma).reshape(shape), numpy_value(norm.beta).reshape(shape)
    return gamma * (x - mean) / np.sqrt(variance + BN_EPSILON) + beta


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def biased_covariance(samples):
    """`(B, samples, variables) -> (B, variables, variables)`, divided by the number of samples."""
    centred = samples - samples.mean(axis=1, keepdims=True)
    return np.einsum("bni,bnj->bij", centred, centred) / samples.shape[1]


def adaptive_average_pool(x, out_h, out_w):
    """PyTorch's adaptive average pooling of `(B, H, W, C)`, up or down, window by window."""
    b, h, w, c = x.shape
    out = np.zeros((b, out_h, out_w, c))
    for i in range(out_h):
        rows = slice((i * h) // out_h, -((-(i + 1) * h) // out_h))
        for j in range(out_w):
            cols = slice((j * w) // out_w, -((-(j + 1) * w) // out_w))
            out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    return out


def row_features(branch, matrices, training):
    """Row BN (features = rows, statistics over batch and columns), then the row-wise conv."""
    rows = batch_norm(branch.row_norm, matrices, axes=(0, 2), training=training)
    kernel, bias = numpy_value(branch.row_kernel), numpy_value(branch.row_bias)  # (n, n, M), (n, M)
    n, _, m = kernel.shape
    out = np.zeros((len(rows), n * m))
    for i in range(n):  # one group per row
        for k in range(m):
            out[:, i * m + k] = rows[:, i, :] @ kernel[i, :, k] + bias[i, k]
    return out


def reduce(branch, x, training):
    """BN(conv1x1_d(ReLU(x))), the conv with its bias."""
    z = np.einsum("bhwc,cd->bhwd", relu(x), numpy_value(branch.reduce.kernel)[0, 0]) + numpy_value(branch.reduce.bias)
    return batch_norm(branch.reduce_norm, z, axes=(0, 1, 2), training=training)


def dense(layer, x):
    return x @ numpy_value(layer.kernel) + numpy_value(layer.bias)


def numpy_channel_attention(block, x, training):
    branch = block.channel_branch
    z = relu(reduce(branch, x, training))
    b, h, w, d = z.shape
    cov = biased_covariance(z.reshape(b, h * w, d))
    return sigmoid(dense(branch.expand, row_features(branch, cov, training)))


def numpy_position_attention(block, x, training):
    branch = block.position_branch
    s = SPATIAL_SIZE
    z = adaptive_average_pool(reduce(branch, x, training), s, s)  # no ReLU after the BN
    b, _, _, d = z.shape
    cov = biased_covariance(z.reshape(b, s * s, d).transpose(0, 2, 1))  # positions are the variables
    attention = sigmoid(dense(branch.expand, relu(row_features(branch, cov, training))))
    return adaptive_average_pool(attention.reshape(b, s, s, 1), x.shape[1], x.shape[2])[..., 0]


def grouped_conv_k_by_1(layer, x):
    """`(k, 1)` convolution, `"same"` zero padding (k odd: (k - 1) / 2 rows each side), groups."""
    kernel, bias = numpy_value(layer.kernel), numpy_value(layer.bias)  # (k, 1, C / groups, C)
    k, _, per_group, filters = kernel.shape
    groups = x.shape[-1] // per_group
    height = x.shape[1]
    padded = np.pad(x, ((0, 0), ((k - 1) // 2, (k - 1) // 2), (0, 0), (0, 0)))
    out = np.zeros(x.shape[:3] + (filters,))
    outputs_per_group = filters // groups
    for g in range(groups):
        inputs = slice(g * per_group, (g + 1) * per_group)
        outputs = slice(g * outputs_per_group, (g + 1) * outputs_per_group)
        for row in range(height):
            window = padded[:, row : row + k, :, inputs]  # (B, k, W, C / groups)
            out[:, row, :, outputs] = np.einsum("bkwc,kcf->bwf", window, kernel[:, 0, :, outputs])
    return out + bias


def numpy_concat_block(block, x, training):
    x = x.astype("float64")
    channel_out = x * numpy_channel_attention(block, x, training)[:, None, None, :]
    position_out = relu(x * numpy_position_attention(block, x, training)[..., None])
    mixed = grouped_conv_k_by_1(block.concat_channel, channel_out) + grouped_conv_k_by_1(
        block.concat_position, position_out
    )
    return batch_norm(block.concat_norm, mixed, axes=(0, 1, 2), training=training)


def batch_norms(block):
    branches = [b for b in (block.channel_branch, block.position_branch) if b is not None]
    norms = [n for b in branches for n in (b.reduce_norm, b.row_norm)]
    return norms + ([block.concat_norm] if block.mode == "concat" else [])


def randomise(block, seed, shape):
    """Scales and offsets away from 1 and 0; moving statistics of 20 training calls on other
    batches, moved by up to 30% (realistic, so that the attention is not saturated, and not the
    test batch's)."""
    rng = np.random.default_rng(seed)
    for norm in batch_norms(block):
        size = norm.gamma.shape[0]
        norm.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
        norm.beta.assign(rng.uniform(-0.5, 0.5, size).astype("float32"))
        norm.moving_mean.assign(np.zeros(size, "float32"))  # forget the initial 0 and 1
        norm.moving_variance.assign(np.zeros(size, "float32"))
    for _ in range(20):
        block(rng.standard_normal(shape).astype("float32"), training=True)
    for norm in batch_norms(block):
        size = norm.gamma.shape[0]
        variance = keras.ops.convert_to_numpy(norm.moving_variance)
        mean = keras.ops.convert_to_numpy(norm.moving_mean) + 0.3 * np.sqrt(variance) * rng.uniform(-1, 1, size)
        norm.moving_mean.assign(mean.astype("float32"))
        norm.moving_variance.assign((variance * rng.uniform(0.7, 1.3, size)).astype("float32"))


def assert_matches(got, want):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())


# 8 channels: one group, k = 15 (more padding than map); 128: two groups of 64, k = 13
@pytest.mark.parametrize("channels", [8, 128])
@pytest.mark.parametrize("training", [False, True])
def test_concat_block_and_its_attention_match_numpy(channels, training):
    shape = (4, 5, 5, channels)  # 5 -> 3 -> 5: overlapping adaptive windows both ways
    x = np.random.default_rng(channels).standard_normal(shape).astype("float32")
    block = GSoPBlock("concat", reduced_dim=REDUCED_DIM, row_multiplier=ROW_MULTIPLIER, spatial_size=SPATIAL_SIZE)
    block.build(shape)
    groups, k = max(1, channels // 64), {8: 15, 128: 13}[channels]
    assert block.concat_channel.kernel.shape == (k, 1, channels // groups, channels)
    randomise(block, channels, shape)
    channel_attention = numpy_channel_attention(block, x.astype("float64"), training)
    position_attention = numpy_position_attention(block, x.astype("float64"), training)
    want = numpy_concat_block(block, x, training)
    for attention in (channel_attention, position_attention):  # discriminating values
        assert attention.std() > 0.02 and 0.02 < attention.min() and attention.max() < 0.98
    got_channel = keras.ops.convert_to_numpy(block.channel_attention(x, training=training))
    got_position = keras.ops.convert_to_numpy(block.position_attention(x, training=training))
    assert_matches(got_channel, channel_attention)
    assert_matches(got_position, position_attention)
    assert_matches(keras.ops.convert_to_numpy(block(x, training=training)), want)


@pytest.mark.parametrize("mode", ["channel", "position", "sum", "max"])
def test_other_modes_match_numpy_at_inference(mode):
    """The same attention values, combined as the docstring says, in the block's output."""
    shape = (4, 5, 5, 8)
    x = np.random.default_rng(3).standard_normal(shape).astype("float32")
    block = GSoPBlock(mode, reduced_dim=REDUCED_DIM, row_multiplier=ROW_MULTIPLIER, spatial_size=SPATIAL_SIZE)
    block.build(shape)
    randomise(block, 4, shape)
    x64 = x.astype("float64")
    channel_out = position_out = None
    if mode != "position":
        channel_out = x64 * numpy_channel_attention(block, x64, False)[:, None, None, :]
    if mode != "channel":
        position_out = relu(x64 * numpy_position_attention(block, x64, False)[..., None])
    if mode == "sum":
        want = channel_out + position_out
    elif mode == "max":
        want = np.maximum(channel_out, position_out)
    else:
        want = channel_out if mode == "channel" else position_out
    assert_matches(keras.ops.convert_to_numpy(block(x, training=False)), want)
