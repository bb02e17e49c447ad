"""Upper-triangular vectorisation of symmetric matrices."""

import numpy as np
from keras import ops


def triu_indices_flat(dim):
    """Flat indices (row * dim + col) of the upper triangle, row-major, diagonal included."""
    rows, cols = np.triu_indices(dim)
    return (rows * dim + cols).astype("int32")


def triu_vectorize(a):
    """Upper triangle of a batch of square matrices as vectors.

    Keeps the `d (d + 1) / 2` entries on and above the diagonal in row-major
    order (8256 values for `d = 128`), without the sqrt(2) scaling of the
    off-diagonal entries, as the paper and the iSQRT-COV code do.

    Args:
        a: matrices, shape `(B, d, d)`.

    Returns:
        Vectors, shape `(B, d (d + 1) / 2)`.
    """
    dim = a.shape[-1]
    if dim is None or a.shape[-2] != dim:
        raise ValueError(
            "`triu_vectorize` expects square matrices with a known size. "
            f"Received: shape={a.shape}"
        )
    flat = ops.reshape(a, (-1, dim * dim))
    return ops.take(flat, triu_indices_flat(dim), axis=1)


def triu_output_dim(dim):
    """Length of the vector `triu_vectorize` makes of a `dim x dim` matrix."""
    return dim * (dim + 1) // 2
