"""SquareRootSOP: (parametric) matrix square-root normalised second-order pooling."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import fresh_initializer
from gmsop_keras.ops import square_root_sop, triu_output_dim
from gmsop_keras.ops.matrix_sqrt import SQRT_DTYPES


@keras.saving.register_keras_serializable(package="gmsop_keras")
class SquareRootSOP(keras.layers.Layer):
    """Square-root normalised second-order pooling (SR-SOP), optionally parametric.

    Without `hidden_dims` it is the paper's SR-SOP: the covariance of the map's
    positions, its matrix square root by `num_iterations` Newton-Schulz steps
    (iSQRT-COV), and the upper triangle as a vector. With
    `hidden_dims=(256, 128)` it is the paper's parametric SR-SOP (Eq. 6): 1x1
    convolutions `P_j X` first, each followed by ReLU, without BatchNorm or
    bias, as the official code has them.

    Runs in float32 by default, also under a mixed-precision policy: the
    iteration diverges in float16. Pass `dtype` to override; `sqrt_dtype`
    puts only the square root's matrix products in bfloat16 or float16.

    Args:
        hidden_dims: widths of the 1x1 convolutions before pooling; `()` for
            plain SR-SOP.
        num_iterations: Newton-Schulz iterations (paper: 5, official code: 3).
        kernel_initializer: initializer of the 1x1 convolutions.
        sqrt_dtype: operand dtype of the square root's matrix products,
            `"float32"` (default), `"bfloat16"` or `"float16"`; the trace
            normalisation and the result stay float32 (`newton_schulz_sqrt`).

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, d (d + 1) / 2)` with `d = hidden_dims[-1]` or `channels`;
        `output_dim` holds the value once built.

    Example:

    >>> layer = SquareRootSOP(hidden_dims=(256, 128))
    >>> layer(keras.ops.ones((2, 8, 8, 64))).shape
    (2, 8256)

    Reference:
        Wang et al., Global Gated Mixture of Second-order Pooling for
        Improving Deep Convolutional Neural Networks, NeurIPS 2018.
    """

    def __init__(self, hidden_dims=(), num_iterations=5, kernel_initializer="he_normal", sqrt_dtype="float32",
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        hidden_dims = tuple(int(d) for d in hidden_dims)
        if any(d < 1 for d in hidden_dims):
            raise ValueError(f"`hidden_dims` must be positive. Received: hidden_dims={hidden_dims}")
        if not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(
                f"`num_iterations` must be an integer >= 1. Received: num_iterations={num_iterations}"
            )
        if sqrt_dtype not in SQRT_DTYPES:
            raise ValueError(f"`sqrt_dtype` must be one of {SQRT_DTYPES}. Received: sqrt_dtype={sqrt_dtype!r}")
        self.sqrt_dtype = sqrt_dtype
        self.hidden_dims = hidden_dims
        self.num_iterations = num_iterations
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_dim = None

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`SquareRootSOP` expects feature maps (batch, height, width, channels) with a "
                f"known number of channels. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        self.kernels = []
        for i, width in enumerate(self.hidden_dims):
            self.kernels.append(
                self.add_weight(
                    shape=(channels, width),
                    initializer=fresh_initializer(self.kernel_initializer),
                    name=f"kernel_{i}",
                )
            )
            channels = width
        self.output_dim = triu_output_dim(channels)

    def call(self, inputs):
        x = inputs
        for kernel in self.kernels:
            x = ops.relu(ops.matmul(x, kernel))
        return square_root_sop(x, self.num_iterations, self.sqrt_dtype)

    def compute_output_shape(self, input_shape):
        channels = self.hidden_dims[-1] if self.hidden_dims else input_shape[-1]
        return (input_shape[0], triu_output_dim(channels))

    def get_config(self):
        base_config = super().get_config()
        config = {
            "hidden_dims": list(self.hidden_dims),
            "num_iterations": self.num_iterations,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "sqrt_dtype": self.sqrt_dtype,
        }
        return {**base_config, **config}
