"""ParametricGAP: a 1x1 convolution, then global average pooling."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gmsop_keras")
class ParametricGAP(keras.layers.Layer):
    """Parametric global average pooling (the paper's ResNet-18-Xd and GM-GAP component).

    A 1x1 convolution to `units` channels without bias, ReLU, then the mean over
    all positions. With a single one this is the paper's "ResNet-18-512d"
    representation; a bank of them are the components of GM-GAP / Ave-GAP.

    Args:
        units: output dimension `X` (512 in the paper).
        activation: applied after the convolution (ReLU; `None` for linear).
        kernel_initializer: initializer of the convolution.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, units)`.

    Example:

    >>> ParametricGAP(512)(keras.ops.ones((2, 8, 8, 128))).shape
    (2, 512)
    """

    def __init__(self, units, activation="relu", kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive integer. Received: units={units}")
        self.units = units
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`ParametricGAP` expects feature maps (batch, height, width, channels) with a "
                f"known number of channels. Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer=self.kernel_initializer, name="kernel"
        )

    def call(self, inputs):
        return ops.mean(self.activation(ops.matmul(inputs, self.kernel)), axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
        return {**base_config, **config}
