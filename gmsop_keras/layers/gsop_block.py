"""GSoPBlock: global second-order pooling attention inside a residual branch (GSoP-Net)."""

import keras
import numpy as np
from keras import ops

from gmsop_keras.layers.initializers import he_fan_out, uniform_fan_in
from gmsop_keras.ops import covariance

MODES = ("channel", "position", "sum", "max", "concat")
# The authors' BatchNorm (PyTorch's defaults): epsilon 1e-5, momentum 0.1 in
# PyTorch's convention, which is 0.9 in Keras'. The row-wise BatchNorm
# normalises covariance rows whose variances are as small as 1e-5, so the
# epsilon changes the output (by a third with Keras' default 1e-3).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="gmsop_keras")
class GSoPBlock(keras.layers.Layer):
    """Rescales a feature map by attention computed from its covariance.

    Applied to the output of a residual branch, before the addition.

    - `"channel"` (the paper's GSoP, default): `x * a` with one weight per
      channel, `a = sigmoid(Dense_C(rowconv(rowBN(Cov(ReLU(BN(conv1x1_d(ReLU(x)))))))))`;
      `Cov` is the `d x d` covariance of the positions, `rowBN` a BatchNorm
      whose features are the rows, and `rowconv` the row-wise convolution
      (a grouped convolution with one group per row: `row_multiplier` outputs
      per row, `d * row_multiplier` in all).
    - `"position"`: `ReLU(x * a)` with one weight per position. The map,
      reduced to `d` channels (1x1 convolution + BN) and average-pooled to
      `spatial_size x spatial_size` (adaptive, as PyTorch does), gives an
      `s^2 x s^2` covariance of positions; row BN, row-wise convolution, ReLU,
      `Dense_{s^2}` and a sigmoid make an `s x s` attention map, resized to the
      map's size by adaptive average pooling.
    - `"sum"`: `x * a_channel + ReLU(x * a_position)`; `"max"`: their
      element-wise maximum; `"concat"`: each goes through a `(k, 1)` grouped
      convolution (`C / 64` groups, `k = 2 log2(32 / groups) + 5`, the
      official code's choice), the two are added and batch-normalised.

    Runs in float32 by default (covariances), also under mixed precision.

    The authors' conventions (their PyTorch code): BatchNorm epsilon 1e-5 and
    momentum 0.1 in PyTorch's terms (`momentum=0.9` here); convolutions and
    the row-wise convolution initialised He-normal over their fan-out, biases
    uniform in `+-1/sqrt(fan_in)`; in the first stage of a ResNet-50 (64
    planes) the channel branch's reduction has stride 2 (`reduce_stride=2`).

    Args:
        mode: one of `"channel"`, `"position"`, `"sum"`, `"max"`, `"concat"`.
        reduced_dim: `d`, width of the 1x1 reduction (paper: 128).
        row_multiplier: outputs of the row-wise convolution per row (paper: 4).
        spatial_size: side of the pooled map of the position branch (paper: 8).
        reduce_stride: stride of the channel branch's 1x1 reduction (the
            authors use 2 where a ResNet stage has 64 planes, else 1).
        epsilon: BatchNorm epsilon (the authors': 1e-5).
        momentum: BatchNorm momentum, Keras' convention (PyTorch's 0.1 = 0.9).

    Input shape:
        `(batch, height, width, channels)`, static height and width for the
        position modes.

    Output shape:
        Same as the input.

    Example:

    >>> block = GSoPBlock(reduced_dim=16)
    >>> block(keras.ops.ones((2, 8, 8, 32))).shape
    (2, 8, 8, 32)

    Reference:
        Gao, Xie, Wang, Li. Global Second-order Pooling Convolutional
        Networks. CVPR 2019.
    """

    def __init__(
        self,
        mode="channel",
        reduced_dim=128,
        row_multiplier=4,
        spatial_size=8,
        reduce_stride=1,
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
        sizes = (
            ("reduced_dim", reduced_dim),
            ("row_multiplier", row_multiplier),
            ("spatial_size", spatial_size),
            ("reduce_stride", reduce_stride),
        )
        for name, value in sizes:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value}")
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0. Received: epsilon={epsilon}")
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        self.mode = mode
        self.reduced_dim = reduced_dim
        self.row_multiplier = row_multiplier
        self.spatial_size = spatial_size
        self.reduce_stride = reduce_stride
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`GSoPBlock` expects feature maps (batch, height, width, channels) with a known "
                f"number of channels. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        self.channel_branch = self.position_branch = None
        if self.mode != "position":
            self.channel_branch = _Branch(self, "channel", self.reduced_dim, self.reduced_dim, input_shape)
        if self.mode != "channel":
            if input_shape[1] is None or input_shape[2] is None:
                raise ValueError(
                    f"`GSoPBlock(mode={self.mode!r})` needs a static height and width. "
                    f"Received: input_shape={input_shape}"
                )
            self.position_branch = _Branch(self, "position", self.spatial_size**2, self.reduced_dim, input_shape)
        if self.mode == "concat":
            groups = max(1, channels // 64)
            if channels % groups:
                raise ValueError(f"`mode='concat'` needs channels divisible by {groups}. Received: {channels}")
            factor = max(0, int(round(np.log2(32 / groups))))
            kernel = (2 * factor + 5, 1)
            conv = dict(filters=channels, kernel_size=kernel, padding="same", groups=groups, dtype=self.dtype_policy)
            fan_in = kernel[0] * channels // groups
            self.concat_channel = keras.layers.Conv2D(
                **conv, kernel_initializer=he_fan_out(), bias_initializer=uniform_fan_in(fan_in), name="concat_channel"
            )
            self.concat_position = keras.layers.Conv2D(
                **conv, kernel_initializer=he_fan_out(), bias_initializer=uniform_fan_in(fan_in), name="concat_position"
            )
            self.concat_norm = self._batch_norm(name="concat_norm")
            for layer in (self.concat_channel, self.concat_position):
                layer.build(input_shape)
            self.concat_norm.build(input_shape)

    def _batch_norm(self, **kwargs):
        return keras.layers.BatchNormalization(
            epsilon=self.epsilon, momentum=self.momentum, dtype=self.dtype_policy, **kwargs
        )

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if self.channel_branch is not None:
            channel_out = x * self.channel_attention(x, training=training)[:, None, None, :]
        if self.position_branch is not None:
            position_out = ops.relu(x * self.position_attention(x, training=training)[..., None])
        if self.mode == "channel":
            return channel_out
        if self.mode == "position":
            return position_out
        if self.mode == "sum":
            return channel_out + position_out
        if self.mode == "max":
            return ops.maximum(channel_out, position_out)
        mixed = self.concat_channel(channel_out) + self.concat_position(position_out)
        return self.concat_norm(mixed, training=training)

    def channel_attention(self, x, training=None):
        """Per-channel weights in (0, 1), shape `(batch, channels)`."""
        branch = self.channel_branch
        z = ops.relu(branch.reduce_norm(branch.reduce(ops.relu(x)), training=training))
        return ops.sigmoid(branch.expand(self._row_features(covariance(z), branch, training)))

    def position_attention(self, x, training=None):
        """Per-position weights in (0, 1), shape `(batch, height, width)`."""
        branch = self.position_branch
        height, width = x.shape[1], x.shape[2]
        size = self.spatial_size
        z = branch.reduce_norm(branch.reduce(ops.relu(x)), training=training)
        down_h, down_w = adaptive_pool_matrix(height, size), adaptive_pool_matrix(width, size)
        z = ops.einsum("ih,jw,bhwc->bijc", down_h, down_w, z)
        # positions are the variables, channels the samples: an s^2 x s^2 covariance
        positions = ops.transpose(ops.reshape(z, (-1, size * size, self.reduced_dim)), (0, 2, 1))
        rows = ops.relu(self._row_features(covariance(positions), branch, training))
        attention = ops.reshape(ops.sigmoid(branch.expand(rows)), (-1, size, size))
        up_h, up_w = adaptive_pool_matrix(size, height), adaptive_pool_matrix(size, width)
        return ops.einsum("hi,wj,bij->bhw", up_h, up_w, attention)

    def _row_features(self, matrices, branch, training):
        """Row BN, then the row-wise convolution: `(B, n, n) -> (B, n * row_multiplier)`."""
        rows = branch.row_norm(ops.cast(matrices, self.compute_dtype), training=training)
        out = ops.einsum("bik,ikm->bim", rows, branch.row_kernel) + branch.row_bias
        return ops.reshape(out, (-1, branch.row_kernel.shape[0] * self.row_multiplier))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "mode": self.mode,
            "reduced_dim": self.reduced_dim,
            "row_multiplier": self.row_multiplier,
            "spatial_size": self.spatial_size,
            "reduce_stride": self.reduce_stride,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
        }
        return {**base_config, **config}


class _Branch(keras.layers.Layer):
    """Sub-layers and row-wise kernel of one attention branch (a container, not called)."""

    def __init__(self, block, kind, rows, reduced_dim, input_shape):
        super().__init__(dtype=block.dtype_policy, name=f"{kind}_branch")
        channels = input_shape[-1]
        outputs = channels if kind == "channel" else rows
        policy = block.dtype_policy
        multiplier = block.row_multiplier
        stride = block.reduce_stride if kind == "channel" else 1
        self.reduce = keras.layers.Conv2D(
            reduced_dim,
            1,
            strides=stride,
            kernel_initializer=he_fan_out(),
            bias_initializer=uniform_fan_in(channels),
            dtype=policy,
            name="reduce",
        )
        self.reduce_norm = block._batch_norm(name="reduce_norm")
        self.row_norm = block._batch_norm(axis=1, name="row_norm")
        self.expand = keras.layers.Dense(
            outputs,
            kernel_initializer=he_fan_out(),
            bias_initializer=uniform_fan_in(rows * multiplier),
            dtype=policy,
            name="expand",
        )
        self.reduce.build(input_shape)
        self.reduce_norm.build(tuple(input_shape[:-1]) + (reduced_dim,))
        self.row_norm.build((None, rows, rows))
        # the authors' grouped convolution, He-normal over its fan-out (rows * rows * multiplier);
        # its bias uniform over its fan-in (one row)
        self.row_kernel = self.add_weight(
            shape=(rows, rows, multiplier),
            initializer=keras.initializers.RandomNormal(stddev=(2.0 / (rows * rows * multiplier)) ** 0.5),
            name="row_kernel",
        )
        self.row_bias = self.add_weight(shape=(rows, multiplier), initializer=uniform_fan_in(rows), name="row_bias")
        self.expand.build((None, rows * multiplier))
        self.built = True


def adaptive_pool_matrix(in_size, out_size):
    """`(out_size, in_size)` averaging matrix of PyTorch's adaptive average pooling.

    Output `i` averages inputs `floor(i * n / m)` to `ceil((i + 1) * n / m) - 1`;
    with `out_size > in_size` it resizes up (the official code's "unpooling").
    """
    matrix = np.zeros((out_size, in_size), dtype="float32")
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix
