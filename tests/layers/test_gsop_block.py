"""GSoPBlock: shapes, channel and position attention by their structure, adaptive pooling, contract."""

import keras
import numpy as np
import pytest

from gmsop_keras.layers.gsop_block import GSoPBlock, adaptive_pool_matrix
from tests.layer_checks import check_layer


def feature_map(seed=0, shape=(4, 6, 6, 8)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize("mode", ["channel", "position", "sum", "max", "concat"])
def test_output_shape_equals_input_shape(mode):
    x = feature_map()
    assert GSoPBlock(mode, reduced_dim=6, spatial_size=4)(x).shape == x.shape


def test_channel_mode_scales_each_channel_by_a_factor_in_0_1():
    x = feature_map(1)
    block = GSoPBlock("channel", reduced_dim=6)
    out = keras.ops.convert_to_numpy(block(x))
    ratio = out / x  # x is never exactly 0 here
    np.testing.assert_allclose(ratio, ratio[:, :1, :1, :].repeat(6, 1).repeat(6, 2), rtol=1e-4)
    assert ((ratio > 0) & (ratio < 1)).all()
    weights = keras.ops.convert_to_numpy(block.channel_attention(x))
    np.testing.assert_allclose(ratio[:, 0, 0, :], weights, rtol=1e-4)


def test_position_mode_is_relu_of_x_times_one_weight_per_position():
    x = feature_map(2)
    block = GSoPBlock("position", reduced_dim=6, spatial_size=4)
    out = keras.ops.convert_to_numpy(block(x))
    weights = keras.ops.convert_to_numpy(block.position_attention(x))
    assert weights.shape == (4, 6, 6) and ((weights > 0) & (weights < 1)).all()
    np.testing.assert_allclose(out, np.maximum(x * weights[..., None], 0), rtol=1e-5, atol=1e-6)


def test_sum_and_max_fuse_the_two_branches():
    x = feature_map(3)
    summed = GSoPBlock("sum", reduced_dim=6, spatial_size=4)
    maxed = GSoPBlock("max", reduced_dim=6, spatial_size=4)
    summed(x), maxed(x)
    maxed.set_weights(summed.get_weights())
    a = keras.ops.convert_to_numpy(summed.channel_attention(x))[:, None, None, :]
    p = keras.ops.convert_to_numpy(summed.position_attention(x))[..., None]
    channel, position = x * a, np.maximum(x * p, 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(summed(x)), channel + position, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(maxed(x)), np.maximum(channel, position), rtol=1e-4, atol=1e-5)


def test_adaptive_pool_matrix_matches_pytorch_windows():
    np.testing.assert_allclose(adaptive_pool_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    # 7 -> 8 (a 224 ResNet's last stage): overlapping windows, rows sum to 1
    down = adaptive_pool_matrix(7, 8)
    np.testing.assert_allclose(down.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(adaptive_pool_matrix(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_parameter_count_of_a_channel_block_matches_the_official_one():
    """conv C->128 (+bias), 2 BNs, row conv 128 x 128 x 4 (+bias), conv 512->C (+bias); C = 256."""
    block = GSoPBlock()
    block.build((None, 14, 14, 256))
    trainable = sum(int(np.prod(w.shape)) for w in block.trainable_weights)
    expected = (256 * 128 + 128) + 2 * 128 + 2 * 128 + (128 * 128 * 4 + 512) + (512 * 256 + 256)
    assert trainable == expected


@pytest.mark.parametrize("mode", ["channel", "position", "sum", "max", "concat"])
def test_layer_contract(mode, tmp_path):
    x = feature_map(4, (4, 4, 4, 8))
    check_layer(lambda: GSoPBlock(mode, reduced_dim=4, row_multiplier=2, spatial_size=2), x, x.shape, tmp_path, atol=1e-5)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="mode"):
        GSoPBlock("average")
    with pytest.raises(ValueError, match="reduced_dim"):
        GSoPBlock(reduced_dim=0)
    with pytest.raises(ValueError, match="row_multiplier"):
        GSoPBlock(row_multiplier=1.5)
    with pytest.raises(ValueError, match="feature maps"):
        GSoPBlock()(np.zeros((2, 5), dtype="float32"))


def batch_norms(layer):
    return [sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("mode", ["channel", "concat"])
def test_batch_norms_use_the_authors_epsilon_and_momentum(mode):
    """PyTorch's BatchNorm2d: eps 1e-5, momentum 0.1 (= Keras' 0.9); Keras' default eps 1e-3 would
    change the row BatchNorm of covariance rows (variances 1e-5 to 1e-2) by a third."""
    block = GSoPBlock(mode, reduced_dim=4, spatial_size=2)
    block(feature_map(5, (2, 4, 4, 8)))
    norms = batch_norms(block)
    assert len(norms) == (2 if mode == "channel" else 5)
    assert all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)


def test_reduce_stride_2_reads_every_other_position():
    """The authors reduce with a stride-2 1x1 convolution where a stage has 64 planes: the attention
    is that of the stride-1 block on the map's even rows and columns."""
    x = feature_map(6, (3, 8, 8, 8))
    strided, plain = GSoPBlock(reduced_dim=6, reduce_stride=2), GSoPBlock(reduced_dim=6)
    strided(x), plain(x)
    plain.set_weights(strided.get_weights())
    assert strided.channel_branch.reduce.strides == (2, 2)
    got = keras.ops.convert_to_numpy(strided.channel_attention(x, training=True))
    want = keras.ops.convert_to_numpy(plain.channel_attention(x[:, ::2, ::2], training=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_initialisation_follows_the_authors():
    """He normal over the fan-out for the reduction, the row-wise convolution (fan-out d * d * 4,
    std 0.0055 at d = 128, where He over one row would give 0.125) and the expansion."""
    block = GSoPBlock()
    block.build((None, 8, 8, 256))
    branch = block.channel_branch
    row = keras.ops.convert_to_numpy(branch.row_kernel)
    assert row.std() == pytest.approx((2.0 / (128 * 128 * 4)) ** 0.5, rel=0.02)
    reduce = keras.ops.convert_to_numpy(branch.reduce.kernel)
    assert reduce.std() == pytest.approx((2.0 / 128) ** 0.5, rel=0.02)
    expand = keras.ops.convert_to_numpy(branch.expand.kernel)
    assert expand.std() == pytest.approx((2.0 / 256) ** 0.5, rel=0.02)
    bias = keras.ops.convert_to_numpy(branch.row_bias)
    assert 0 < np.abs(bias).max() <= 128**-0.5  # PyTorch's default bias, uniform over the fan-in


def test_bad_conventions_name_the_argument():
    with pytest.raises(ValueError, match="reduce_stride"):
        GSoPBlock(reduce_stride=0)
    with pytest.raises(ValueError, match="epsilon"):
        GSoPBlock(epsilon=0)
    with pytest.raises(ValueError, match="momentum"):
        GSoPBlock(momentum=1.0)
