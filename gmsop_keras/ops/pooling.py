"""Second-order pooling as one function: covariance, matrix square root, vectorisation."""

from gmsop_keras.ops.covariance import covariance
from gmsop_keras.ops.matrix_sqrt import newton_schulz_sqrt
from gmsop_keras.ops.vectorize import triu_vectorize


def square_root_sop(x, num_iterations=5, sqrt_dtype=None):
    """SR-SOP (paper Eq. 5 with Eq. 9): `triu(sqrt(Sigma(x)))`.

    Args:
        x: feature maps `(B, H, W, C)` or position sets `(B, L, C)`.
        num_iterations: Newton-Schulz iterations.
        sqrt_dtype: dtype of the square root's matrix products (`newton_schulz_sqrt`'s
            `compute_dtype`; default float32).

    Returns:
        `(B, C (C + 1) / 2)` float32 (float64 for float64 input).
    """
    return triu_vectorize(newton_schulz_sqrt(covariance(x), num_iterations, compute_dtype=sqrt_dtype))
