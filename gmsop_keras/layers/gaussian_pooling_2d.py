"""GaussianPooling2D: inverse-softplus Gaussian local pooling (iSP-Gaussian)."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import he_fan_out, uniform_fan_in

NOISE_MODES = ("per_channel", "per_position")
VARIANCE_EPSILON = 1e-6
# The authors' BatchNorm (PyTorch's defaults): epsilon 1e-5, momentum 0.1 in
# PyTorch's convention = 0.9 in Keras'.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="gmsop_keras")
class GaussianPooling2D(keras.layers.Layer):
    """Local pooling by the mean plus a learned multiple of the standard deviation.

    Each pooling window is summarised as `mean + W * std`, with
    `std = sqrt(max(var, 1e-6))` of the window. The multiplier `W` is drawn
    from the inverse-softplus Gaussian: `W = softplus(MU + SIGMA * eps)`,
    `eps ~ N(0, 1)`, when training, and `W = softplus(MU)` at inference.
    `MU` and `SIGMA` (in (0, 1) by a sigmoid) are predicted per sample and
    channel from the whole map (global feature guided pooling): global average
    pooling, a 1x1 convolution to `C / 2` + BatchNorm + ReLU shared by both,
    then a 1x1 convolution to `C` + BatchNorm for each (a 1x1 convolution of
    a 1x1 map is a `Dense` layer; the biases are kept, as in the official code).

    `noise="per_channel"` draws one `eps` per sample and channel (the
    authors' partially stochastic `'CN'`); `"per_position"` one per output
    position as well (fully stochastic `'HWCN'`).

    The window moments are computed in float32: `E[x^2] - E[x]^2` cancels
    badly in float16.

    The authors' conventions (their PyTorch code): an integer `padding` pads
    both sides symmetrically with zeros, as PyTorch's pooling does (Keras'
    `"same"` pads only the bottom and right of an even map); padded positions
    are left out of a window's moments (their CUDA layer,
    `count_include_pad=False`) unless `count_include_pad=True` (their
    pure-PyTorch layer). BatchNorm epsilon 1e-5 and momentum 0.1 in PyTorch's
    terms (`momentum=0.9` here); kernels He-normal over their fan-out, biases
    uniform in `+-1/sqrt(fan_in)`.

    Args:
        pool_size: window size, an int or a pair (default 2).
        strides: stride, an int or a pair; default `pool_size`.
        padding: `"valid"`, `"same"` (padded positions are left out of
            the window's moments), or an integer: zeros on every side.
        count_include_pad: with an integer `padding`, count the padded
            zeros in the window's moments.
        noise: `"per_channel"` or `"per_position"`.
        seed: seed of the training noise.
        epsilon: BatchNorm epsilon (the authors': 1e-5).
        momentum: BatchNorm momentum, Keras' convention (PyTorch's 0.1 = 0.9).

    Call arguments:
        inputs: feature maps.
        training: draw `W` at random only when `True`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, pooled_height, pooled_width, channels)`, as `AveragePooling2D`.

    Example:

    >>> layer = GaussianPooling2D()
    >>> layer(keras.ops.ones((2, 8, 8, 16))).shape
    (2, 4, 4, 16)

    Reference:
        Kobayashi. Gaussian-Based Pooling for Convolutional Neural Networks.
        NeurIPS 2019.
    """

    def __init__(
        self,
        pool_size=2,
        strides=None,
        padding="valid",
        noise="per_channel",
        seed=None,
        count_include_pad=False,
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        **kwargs,
    ):
        super().__init__(**kwargs)
        pool_size = _pair(pool_size, "pool_size")
        strides = pool_size if strides is None else _pair(strides, "strides")
        explicit = isinstance(padding, int) and not isinstance(padding, bool)
        if not (padding in ("valid", "same") or (explicit and 0 <= padding < min(pool_size))):
            raise ValueError(
                "`padding` must be 'valid', 'same' or an integer in [0, pool_size). "
                f"Received: padding={padding!r}"
            )
        if noise not in NOISE_MODES:
            raise ValueError(f"`noise` must be one of {NOISE_MODES}. Received: noise={noise!r}")
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0. Received: epsilon={epsilon}")
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        self.pool_size = pool_size
        self.strides = strides
        self.padding = padding
        self.noise = noise
        self.seed = seed
        self.count_include_pad = bool(count_include_pad)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._pooling = keras.layers.AveragePooling2D(
            pool_size, strides, padding="valid" if explicit else padding, dtype="float32"
        )

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`GaussianPooling2D` expects feature maps (batch, height, width, channels) with a "
                f"known number of channels. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        hidden = max(1, channels // 2)
        self.hidden_dense = self._dense(hidden, channels, "hidden_dense")
        self.hidden_norm = self._norm("hidden_norm")
        self.mean_dense = self._dense(channels, hidden, "mean_dense")
        self.mean_norm = self._norm("mean_norm")
        self.sigma_dense = self._dense(channels, hidden, "sigma_dense")
        self.sigma_norm = self._norm("sigma_norm")
        self.hidden_dense.build((None, channels))
        self.hidden_norm.build((None, hidden))
        for dense, norm in ((self.mean_dense, self.mean_norm), (self.sigma_dense, self.sigma_norm)):
            dense.build((None, hidden))
            norm.build((None, channels))

    def _dense(self, units, fan_in, name):
        # the authors' 1x1 convolutions of a 1x1 map
        return keras.layers.Dense(
            units,
            kernel_initializer=he_fan_out(),
            bias_initializer=uniform_fan_in(fan_in),
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name):
        return keras.layers.BatchNormalization(
            epsilon=self.epsilon, momentum=self.momentum, dtype=self.dtype_policy, name=name
        )

    def call(self, inputs, training=None):
        mean, std = self.window_moments(inputs)
        hidden = ops.mean(inputs, axis=(1, 2))
        hidden = ops.relu(self.hidden_norm(self.hidden_dense(hidden), training=training))
        mu = self.mean_norm(self.mean_dense(hidden), training=training)
        if training:
            sigma = ops.sigmoid(self.sigma_norm(self.sigma_dense(hidden), training=training))
            batch, channels = ops.shape(mu)[0], ops.shape(mu)[1]
            if self.noise == "per_channel":
                shape = (batch, 1, 1, channels)
            else:
                shape = (batch, ops.shape(mean)[1], ops.shape(mean)[2], channels)
            eps = keras.random.normal(shape, dtype=mu.dtype, seed=self.seed_generator)
            weight = ops.softplus(mu[:, None, None, :] + sigma[:, None, None, :] * eps)
        else:
            weight = ops.softplus(mu)[:, None, None, :]
        outputs = mean + ops.cast(weight, mean.dtype) * std
        return ops.cast(outputs, self.compute_dtype)

    def window_moments(self, inputs):
        """Mean and standard deviation of every pooling window, float32."""
        x = ops.cast(inputs, "float32")
        if isinstance(self.padding, str) or self.padding == 0:
            mean, mean_square = self._pooling(x), self._pooling(ops.square(x))
        else:
            p = self.padding
            pads = ((0, 0), (p, p), (p, p), (0, 0))
            mean = self._pooling(ops.pad(x, pads))
            mean_square = self._pooling(ops.pad(ops.square(x), pads))
            if not self.count_include_pad:
                # fraction of each window inside the map
                inside = self._pooling(ops.pad(ops.ones_like(x[:1, :, :, :1]), pads))
                mean, mean_square = mean / inside, mean_square / inside
        variance = mean_square - ops.square(mean)
        return mean, ops.sqrt(ops.maximum(variance, VARIANCE_EPSILON))

    def compute_output_shape(self, input_shape):
        if isinstance(self.padding, str):
            return self._pooling.compute_output_shape(input_shape)
        sizes = [
            None if n is None else (n + 2 * self.padding - k) // s + 1
            for n, k, s in zip(input_shape[1:3], self.pool_size, self.strides)
        ]
        return (input_shape[0], *sizes, input_shape[3])

    def get_config(self):
        base_config = super().get_config()
        config = {
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "noise": self.noise,
            "seed": self.seed,
            "count_include_pad": self.count_include_pad,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
        }
        return {**base_config, **config}


def _pair(value, name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or a pair of them. Received: {name}={value}")
    return pair
