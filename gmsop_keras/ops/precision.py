"""Dtype helpers: the second-order statistics are computed in float32 or wider."""

from keras import backend, ops


def to_float32_or_wider(x):
    """Casts half-precision (or integer) tensors to float32; keeps float32/float64."""
    x = ops.convert_to_tensor(x)
    if backend.standardize_dtype(x.dtype) in ("float32", "float64"):
        return x
    return ops.cast(x, "float32")
