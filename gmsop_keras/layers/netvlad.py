"""NetVLAD: soft-assignment aggregation of local features into residuals to learned centroids."""

import keras
from keras import ops

# As `torch.nn.functional.normalize`: a vector of norm below this is divided by it instead.
NORM_EPSILON = 1e-12


def _l2_normalize(x, axis):
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared, NORM_EPSILON**2))


@keras.saving.register_keras_serializable(package="gmsop_keras")
class NetVLAD(keras.layers.Layer):
    """NetVLAD pooling (the paper's Table 3 row "NetVLAD", dictionary size 64).

    For local features `x_i` (the `L = H W` positions of a `C`-channel map) and
    `K` learned centroids `c_k`, a 1x1 convolution with bias and a softmax over
    the clusters give the soft assignments
    `a_k(x_i) = softmax_k(w_k . x_i + b_k)`, and

        V[k] = sum_i a_k(x_i) (x_i - c_k),    k = 1..K.

    Each `V[k]` is L2-normalised (intra-normalisation), then the flattened
    `K x C` vector (cluster-major) is L2-normalised as a whole. Output:
    `K C` values (64 x 128 = 8192 on the paper's ResNet-18).

    The assignment convolution and the centroids are independent parameters,
    as in the public code; they start random (no k-means initialisation).
    The layer computes in float32 by default, also under a mixed-precision
    policy (pass `dtype` to override).

    Args:
        num_clusters: `K`, the dictionary size (64 in the paper).
        kernel_initializer: initializer of the assignment convolution.
        centroid_initializer: initializer of the centroids `(K, C)`; the default
            uniform in [0, 1) suits the non-negative (ReLU) features of a ResNet.

    Call arguments:
        inputs: feature maps `(batch, height, width, channels)`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, num_clusters * channels)`.

    Example:

    >>> NetVLAD(64)(keras.ops.ones((2, 8, 8, 128))).shape
    (2, 8192)

    Reference:
        Arandjelovic et al., NetVLAD: CNN architecture for weakly supervised
        place recognition, CVPR 2016.
    """

    def __init__(
        self,
        num_clusters=64,
        kernel_initializer="glorot_uniform",
        centroid_initializer="random_uniform",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
            raise ValueError(f"`num_clusters` must be a positive integer. Received: num_clusters={num_clusters}")
        self.num_clusters = num_clusters
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if centroid_initializer == "random_uniform":
            centroid_initializer = keras.initializers.RandomUniform(0.0, 1.0)
        self.centroid_initializer = keras.initializers.get(centroid_initializer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`NetVLAD` expects feature maps (batch, height, width, channels) with a known number "
                f"of channels. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        self.assignment_kernel = self.add_weight(
            shape=(channels, self.num_clusters), initializer=self.kernel_initializer, name="assignment_kernel"
        )
        self.assignment_bias = self.add_weight(
            shape=(self.num_clusters,), initializer="zeros", name="assignment_bias"
        )
        self.centroids = self.add_weight(
            shape=(self.num_clusters, channels), initializer=self.centroid_initializer, name="centroids"
        )

    def call(self, inputs):
        batch, height, width, channels = ops.shape(inputs)
        x = ops.cast(ops.reshape(inputs, (batch, height * width, channels)), self.compute_dtype)  # (B, L, C)
        assignment = ops.softmax(ops.matmul(x, self.assignment_kernel) + self.assignment_bias, axis=-1)  # (B, L, K)
        # sum_i a_k(x_i) (x_i - c_k) = (A^T X)_k - (sum_i a_k(x_i)) c_k, without the (B, L, K, C) residuals.
        weighted = ops.matmul(ops.transpose(assignment, (0, 2, 1)), x)  # (B, K, C)
        vlad = weighted - ops.sum(assignment, axis=1)[:, :, None] * self.centroids[None]
        vlad = _l2_normalize(vlad, axis=-1)  # intra-normalisation
        vlad = ops.reshape(vlad, (batch, self.num_clusters * channels))
        return _l2_normalize(vlad, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (input_shape[0], None if channels is None else self.num_clusters * channels)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_clusters": self.num_clusters,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "centroid_initializer": keras.initializers.serialize(self.centroid_initializer),
        }
        return {**base_config, **config}
