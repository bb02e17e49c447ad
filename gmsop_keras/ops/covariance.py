"""Covariance pooling of a feature map (the input of SR-SOP)."""

from keras import ops

from gmsop_keras.ops.precision import to_float32_or_wider


def covariance(x):
    """Biased covariance of the spatial positions of a feature map.

    For a map with `L = H * W` positions of `C` channels, `X` in `R^{L x C}`,
    returns `Sigma = X^T J X` with `J = (1/L)(I - (1/L) 1 1^T)` (paper Eq. 5),
    computed as the product of the centred features divided by `L`; the
    `L x L` centring matrix is never built.

    The result is float32 (float64 stays float64): under a mixed-precision
    policy the half-precision activations are upcast before the product, since
    the matrix square root that follows diverges in float16.

    Args:
        x: feature maps, shape `(B, H, W, C)` (or `(B, L, C)`).

    Returns:
        Covariance matrices, shape `(B, C, C)`.
    """
    x = to_float32_or_wider(x)
    if len(x.shape) == 4:
        batch, height, width, channels = ops.shape(x)  # static where known
        x = ops.reshape(x, (batch, height * width, channels))
    elif len(x.shape) != 3:
        raise ValueError(
            "`covariance` expects feature maps of shape (B, H, W, C) or "
            f"(B, L, C). Received: shape={x.shape}"
        )
    num_positions = ops.cast(ops.shape(x)[1], x.dtype)
    centred = x - ops.mean(x, axis=1, keepdims=True)
    return ops.einsum("blc,bld->bcd", centred, centred) / num_positions
