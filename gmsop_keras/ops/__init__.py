"""Pure `keras.ops` functions of second-order pooling: covariance, matrix square root, vectorisation."""

from gmsop_keras.ops.covariance import covariance
from gmsop_keras.ops.matrix_sqrt import newton_schulz_sqrt
from gmsop_keras.ops.pooling import square_root_sop
from gmsop_keras.ops.vectorize import triu_output_dim, triu_vectorize

__all__ = ["covariance", "newton_schulz_sqrt", "square_root_sop", "triu_output_dim", "triu_vectorize"]
