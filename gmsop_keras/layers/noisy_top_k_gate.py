"""NoisyTopKGate: the sparsity-constrained gating module of GM-SOP (paper Eq. 2-4)."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import centred_normal

NOISE_MODES = ("per_sample", "per_component", "none")


def balance_loss(gate_weights, balance_loss_weight):
    """The balance loss of paper Eq. 4, scaled for a mean cross-entropy.

    `importance = sum over the batch of the gate weights` (an N-vector);
    `loss = alpha * (std(importance) / mean(importance))^2 / batch`, with the
    standard deviation over N - 1 as in the official code. The official
    objective sums the cross-entropy over the batch and divides every gradient
    by the batch size; Keras averages the cross-entropy instead, so dividing
    by the batch size here keeps `alpha = 100` meaning what it meant in the paper.
    """
    weights = ops.cast(gate_weights, "float32")
    importance = ops.sum(weights, axis=0)
    num_components = ops.cast(ops.shape(importance)[0], "float32")
    mean = ops.mean(importance)
    variance = ops.sum(ops.square(importance - mean)) / (num_components - 1.0)
    batch = ops.cast(ops.shape(weights)[0], "float32")
    return balance_loss_weight * variance / (ops.square(mean) + 1e-10) / batch


def top_k_softmax(logits, top_k):
    """Softmax over the `top_k` largest logits of each row; the others get exactly 0 (Eq. 3)."""
    _, indices = ops.top_k(logits, top_k, sorted=False)
    selected = ops.sum(ops.one_hot(indices, ops.shape(logits)[-1], dtype=logits.dtype), axis=-2)
    masked = ops.where(selected > 0, logits, ops.full_like(logits, float("-inf")))
    return ops.softmax(masked, axis=-1)


@keras.saving.register_keras_serializable(package="gmsop_keras")
class NoisyTopKGate(keras.layers.Layer):
    """Noisy top-K gate: which `top_k` of `num_components` components a sample uses.

    Logits `H = f W_g + gamma * softplus(f W_n)` (Eq. 2), no biases; only the
    `top_k` largest are kept and normalised by a softmax (Eq. 3), so each row
    of the output has exactly `top_k` non-zeros summing to 1. The noise
    `gamma ~ N(0, 1)` is drawn only when training: one scalar per sample shared
    by all components (`noise="per_sample"`, the paper's single gamma and the
    official code) or one per sample and component (`"per_component"`).
    When training, the balance loss (Eq. 4, see `balance_loss`) is added with
    `add_loss`.

    Initialisation: the official code sets `W_g = W_n = 1/d` and relies on
    random tie-breaking; `ops.top_k` breaks ties by index, which would send
    every sample to the same first components. Here both kernels are random
    and each column has zero mean over the input features, so that a feature
    shared by all samples (the mean of ReLU or covariance features) does not
    decide the routing: a fresh gate already spreads a batch over all
    components.

    Args:
        num_components: `N`, the number of components to choose from.
        top_k: `K`, how many each sample uses; `1 <= K <= N`.
        balance_loss_weight: `alpha` of Eq. 4 (100 in the paper); 0 disables it.
        noise: `"per_sample"`, `"per_component"` or `"none"`.
        seed: seed of the gate noise.

    Call arguments:
        inputs: prediction features `f`, shape `(batch, features)`.
        training: noise and balance loss only when `True`.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, num_components)`.
    """

    def __init__(
        self,
        num_components,
        top_k,
        balance_loss_weight=100.0,
        noise="per_sample",
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(num_components, int) or num_components < 2:
            raise ValueError(
                f"`num_components` must be an integer >= 2. Received: num_components={num_components}"
            )
        if not isinstance(top_k, int) or not 1 <= top_k <= num_components:
            raise ValueError(
                "`top_k` must be an integer with 1 <= top_k <= num_components. "
                f"Received: top_k={top_k}, num_components={num_components}"
            )
        if balance_loss_weight < 0:
            raise ValueError(
                f"`balance_loss_weight` must be >= 0. Received: balance_loss_weight={balance_loss_weight}"
            )
        if noise not in NOISE_MODES:
            raise ValueError(f"`noise` must be one of {NOISE_MODES}. Received: noise={noise!r}")
        self.num_components = num_components
        self.top_k = top_k
        self.balance_loss_weight = float(balance_loss_weight)
        self.noise = noise
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"The number of gate features must be known. Received: input_shape={input_shape}")
        shape = (features, self.num_components)
        stddev = features**-0.5
        self.gate_kernel = self.add_weight(shape=shape, initializer=centred_normal(stddev), name="gate_kernel")
        self.noise_kernel = None
        if self.noise != "none":
            self.noise_kernel = self.add_weight(
                shape=shape, initializer=centred_normal(stddev), name="noise_kernel"
            )

    def call(self, inputs, training=None):
        logits = ops.matmul(inputs, self.gate_kernel)
        if training and self.noise_kernel is not None:
            batch = ops.shape(inputs)[0]
            shape = (batch, 1) if self.noise == "per_sample" else (batch, self.num_components)
            gamma = keras.random.normal(shape, dtype=logits.dtype, seed=self.seed_generator)
            logits = logits + gamma * ops.softplus(ops.matmul(inputs, self.noise_kernel))
        weights = top_k_softmax(logits, self.top_k)
        if training and self.balance_loss_weight > 0:
            self.add_loss(balance_loss(weights, self.balance_loss_weight))
        return weights

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_components)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_components": self.num_components,
            "top_k": self.top_k,
            "balance_loss_weight": self.balance_loss_weight,
            "noise": self.noise,
            "seed": self.seed,
        }
        return {**base_config, **config}

