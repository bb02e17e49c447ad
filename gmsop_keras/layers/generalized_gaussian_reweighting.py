"""GeneralizedGaussianReweighting: the unrolled re-weighting module of 3G-Net."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import he_fan_out
from gmsop_keras.ops import covariance, newton_schulz_sqrt, triu_output_dim, triu_vectorize

# Added to the covariance before the square root, as in the official code.
COVARIANCE_EPSILON = 1e-7
# The authors' BatchNorm (PyTorch's defaults): epsilon 1e-5, momentum 0.1 in
# PyTorch's convention = 0.9 in Keras'.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="gmsop_keras")
class GeneralizedGaussianReweighting(keras.layers.Layer):
    """Weights each position of a map, unrolling the iterative re-weighted estimator.

    The covariance of a generalized Gaussian has no closed form; 3G-Net
    approximates its iterative re-weighted estimation by `num_stages` learned
    stages. With `z` the input map and `x_0 = z`, stage `t` computes (all
    products 1x1 convolutions, `*` element-wise)

        U = ReLU(BN(W1 x) * BN(W2 x) + BN(W21 z))
        V = ReLU(BN(W3 U)) * ReLU(BN(W4 U))
        s = W_b ReLU(BN(W_a V)) * (1 + w)           C -> C / reduction -> 1
        x_{t+1} = sigmoid(s) * x_t

    so every position gets one weight in (0, 1) per stage (`w` is a learned
    scalar). The authors' conventions (their PyTorch code): no bias in any
    convolution (`W_b` included), BatchNorm epsilon 1e-5 and momentum 0.1 in
    PyTorch's terms (`momentum=0.9` here), every kernel He-normal over its
    fan-out, so `w` (their 1x1 convolution of one channel) starts as a draw of
    `N(0, 2)`. With `reweighted_sop=True` the layer also pools the
    re-weighted map: covariance `+ 1e-7 I`, `num_iterations` Newton-Schulz
    steps, upper triangle (the 3G-Net head); otherwise that is left to the head.

    Runs in float32 by default, also under mixed precision.

    Args:
        num_stages: unrolled stages (paper: 3).
        reduction: width divisor of `W_a` (paper: 4).
        reweighted_sop: return the square-root covariance vector instead of
            the re-weighted map.
        num_iterations: Newton-Schulz iterations of that pooling (paper: 5).
        epsilon: BatchNorm epsilon (the authors': 1e-5).
        momentum: BatchNorm momentum, Keras' convention (PyTorch's 0.1 = 0.9).

    Call arguments:
        inputs: the reduced map `z` (256 channels in the paper).
        training: BatchNorm mode.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        The input shape, or `(batch, C (C + 1) / 2)` with `reweighted_sop`.

    Example:

    >>> layer = GeneralizedGaussianReweighting(reweighted_sop=True)
    >>> layer(keras.ops.ones((2, 7, 7, 16))).shape
    (2, 136)

    Reference:
        Wang, Li, Hu, Zhu, Zuo. Deep Global Generalized Gaussian Networks.
        CVPR 2019.
    """

    def __init__(
        self,
        num_stages=3,
        reduction=4,
        reweighted_sop=False,
        num_iterations=5,
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for name, value in (("num_stages", num_stages), ("reduction", reduction), ("num_iterations", num_iterations)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value}")
        self.num_stages = num_stages
        self.reduction = reduction
        self.reweighted_sop = bool(reweighted_sop)
        self.num_iterations = num_iterations
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0. Received: epsilon={epsilon}")
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`GeneralizedGaussianReweighting` expects feature maps (batch, height, width, channels) "
                f"with a known number of channels. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        hidden = max(1, channels // self.reduction)
        self.stages = [
            _ReweightingStage(channels, hidden, self.epsilon, self.momentum, dtype=self.dtype_policy, name=f"stage_{i}")
            for i in range(self.num_stages)
        ]
        for stage in self.stages:
            stage.build(input_shape)

    def call(self, inputs, training=None):
        x = self.reweight(inputs, training=training)[0]
        if not self.reweighted_sop:
            return x
        cov = covariance(x)
        cov = cov + COVARIANCE_EPSILON * ops.eye(cov.shape[-1], dtype=cov.dtype)
        return triu_vectorize(newton_schulz_sqrt(cov, self.num_iterations))

    def reweight(self, inputs, training=None):
        """The re-weighted map and the total weight of each position `(batch, height, width)`."""
        z = ops.cast(inputs, self.compute_dtype)
        x, total = z, None
        for stage in self.stages:
            weights = stage(x, z, training=training)
            x = x * weights[..., None]
            total = weights if total is None else total * weights
        return x, total

    def compute_output_shape(self, input_shape):
        if self.reweighted_sop:
            return (input_shape[0], triu_output_dim(input_shape[-1]))
        return tuple(input_shape)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_stages": self.num_stages,
            "reduction": self.reduction,
            "reweighted_sop": self.reweighted_sop,
            "num_iterations": self.num_iterations,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
        }
        return {**base_config, **config}


class _ReweightingStage(keras.layers.Layer):
    """One unrolled stage: `(x_t, z) -> sigmoid(s)`, shape `(batch, height, width)`."""

    def __init__(self, channels, hidden, epsilon, momentum, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.hidden = hidden
        names = ("w1", "w2", "w21", "w3", "w4")
        self.convs = {n: self._conv(channels, n) for n in names}
        self.norms = {n: self._norm(f"{n}_norm", epsilon, momentum) for n in names}
        self.conv_a = self._conv(hidden, "wa")
        self.norm_a = self._norm("wa_norm", epsilon, momentum)
        self.conv_b = self._conv(1, "wb")

    def _conv(self, filters, name):
        return keras.layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer=he_fan_out(), dtype=self.dtype_policy, name=name
        )

    def _norm(self, name, epsilon, momentum):
        return keras.layers.BatchNormalization(
            epsilon=epsilon, momentum=momentum, dtype=self.dtype_policy, name=name
        )

    def build(self, input_shape):
        full = tuple(input_shape[:-1]) + (self.channels,)
        for name, conv in self.convs.items():
            conv.build(full)
            self.norms[name].build(full)
        self.conv_a.build(full)
        self.norm_a.build(tuple(input_shape[:-1]) + (self.hidden,))
        self.conv_b.build(tuple(input_shape[:-1]) + (self.hidden,))
        # the authors' 1x1 convolution of one channel, He-normal over its fan-out of 1
        self.scale = self.add_weight(
            shape=(), initializer=keras.initializers.RandomNormal(stddev=2.0**0.5), name="scale"
        )

    def call(self, x, z, training=None):
        def branch(name, value):
            return self.norms[name](self.convs[name](value), training=training)

        u = ops.relu(branch("w1", x) * branch("w2", x) + branch("w21", z))
        v = ops.relu(branch("w3", u)) * ops.relu(branch("w4", u))
        s = self.conv_b(ops.relu(self.norm_a(self.conv_a(v), training=training)))
        return ops.sigmoid(s[..., 0] * (1.0 + self.scale))
