"""Initializer helpers for layers that own several kernels."""

import keras
from keras import ops


def fresh_initializer(initializer):
    """A new instance of `initializer`, so that unseeded ones draw new values.

    An unseeded Keras initializer draws its seed once, when constructed, and
    then returns the same values for the same shape on every call: a layer
    that creates several kernels from one instance would get copies.
    """
    initializer = keras.initializers.get(initializer)
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


def stacked_initializer(initializer, num):
    """Initializes a `(num, fan_in, fan_out)` stack as `num` independent kernels.

    Keras would compute the fans of a rank-3 shape as if it were a convolution
    kernel (fan_in = num * fan_in), which would shrink a He initialisation.
    """

    def init(shape, dtype=None):
        return ops.stack([fresh_initializer(initializer)(shape[1:], dtype=dtype) for _ in range(num)])

    return init


def centred_normal(stddev):
    """Normal kernel whose columns have zero mean over the input features."""

    def init(shape, dtype=None):
        kernel = keras.initializers.RandomNormal(stddev=stddev)(shape, dtype=dtype)
        return kernel - ops.mean(kernel, axis=0, keepdims=True)

    return init


def he_fan_out():
    """He normal initialisation over the fan-out, untruncated (PyTorch's
    `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, the convolution
    initialisation of the ResNets of the GSoP, 3G and Gaussian-pooling papers)."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def uniform_fan_in(fan_in):
    """Uniform in `(-1/sqrt(fan_in), 1/sqrt(fan_in))`: PyTorch's default for the
    bias of a convolution or linear layer, and for a linear layer's weight."""
    limit = float(fan_in) ** -0.5
    return keras.initializers.RandomUniform(-limit, limit)
