"""Pure `keras.ops` functions of second-order pooling: covariance, matrix square root, vectorisation,
and the mixture's dispatch of the selected components."""

from gmsop_keras.ops.covariance import covariance
from gmsop_keras.ops.dispatch import component_output_dim, grouped_components, stacked_components
from gmsop_keras.ops.matrix_sqrt import newton_schulz_sqrt
from gmsop_keras.ops.pooling import square_root_sop
from gmsop_keras.ops.vectorize import triu_output_dim, triu_vectorize

__all__ = [
    "component_output_dim", "covariance", "grouped_components", "newton_schulz_sqrt", "square_root_sop",
    "stacked_components", "triu_output_dim", "triu_vectorize",
]
