"""NoisyTopKGate: the sparsity-constrained gating module of GM-SOP (paper Eq. 2-4)."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import centred_normal
from gmsop_keras.ops.replicas import cross_replica_sum, replicas_in_sync

NOISE_MODES = ("per_sample", "per_component", "none")
GATE_INITS = ("random", "constant")


def balance_loss(gate_weights, balance_loss_weight):
    """The balance loss of paper Eq. 4, scaled for a mean cross-entropy.

    `importance = sum over the batch of the gate weights` (an N-vector);
    `loss = alpha * (std(importance) / mean(importance))^2 / batch`, with the
    standard deviation over N - 1 as in the official code. The official
    objective sums the cross-entropy over the batch and divides every gradient
    by the batch size; Keras averages the cross-entropy instead, so dividing
    by the batch size here keeps `alpha = 100` meaning what it meant in the paper.

    Under a synchronous distribution strategy the importance and the batch
    size are the global batch's (`gmsop_keras.ops.replicas.cross_replica_sum`), so
    that one and several replicas give the same update on the same global
    batch; per replica the term would be the mean of the replicas' small-batch
    CV^2, which grows with the number of replicas.
    """
    weights = ops.cast(gate_weights, "float32")
    importance = cross_replica_sum(ops.sum(weights, axis=0))
    num_components = ops.cast(ops.shape(importance)[0], "float32")
    mean = ops.mean(importance)
    variance = ops.sum(ops.square(importance - mean)) / (num_components - 1.0)
    batch = cross_replica_sum(ops.cast(ops.shape(weights)[0], "float32"))
    return balance_loss_weight * variance / (ops.square(mean) + 1e-10) / batch


def top_k_softmax(logits, top_k, seed=None):
    """Softmax over the `top_k` largest logits of each row; the others get exactly 0 (Eq. 3).

    `ops.top_k` keeps the lowest indices among tied logits. With a `seed` (an
    int or a `keras.random.SeedGenerator`) exactly tied logits are chosen
    uniformly at random instead: each row's components are visited in a fresh
    random order (the argsort of uniform draws), the top K taken in that order,
    and the indices mapped back. Only the selection is permuted; the weights,
    and so the gradients, are the softmax of the unpermuted logits.
    """
    if seed is None:
        _, indices = ops.top_k(logits, top_k, sorted=False)
    else:
        order = ops.argsort(keras.random.uniform(ops.shape(logits), seed=seed), axis=-1)  # (B, N)
        _, slots = ops.top_k(ops.take_along_axis(logits, order, axis=-1), top_k, sorted=False)
        indices = ops.take_along_axis(order, slots, axis=-1)
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

    Initialisation (`gate_init`): `"random"` (default) draws both kernels
    normal with standard deviation `1/sqrt(d)` and centres each column over
    the `d` input features, so that a feature shared by all samples (the mean
    of ReLU or covariance features) does not decide the routing: a fresh gate
    already spreads a batch over all components. `"constant"` is the official
    code's `W_g = W_n = 1/d` (`H_x.m`, `initParams`), under which every logit
    of a sample ties; while training, the top K are then picked uniformly at
    random among exactly tied logits (`top_k_softmax` with a seed), as the
    official `gating.m` does, so a fresh gate still spreads a batch over the
    components. At inference ties go to the lowest indices, so predictions
    and exported models are deterministic.

    Args:
        num_components: `N`, the number of components to choose from.
        top_k: `K`, how many each sample uses; `1 <= K <= N`.
        balance_loss_weight: `alpha` of Eq. 4 (100 in the paper); 0 disables it.
        noise: `"per_sample"`, `"per_component"` or `"none"`.
        gate_init: `"random"` or `"constant"` (the official code's `1/d`).
        seed: seed of the gate noise (and of the tie-break).

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
        gate_init="random",
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
        if gate_init not in GATE_INITS:
            raise ValueError(f"`gate_init` must be one of {GATE_INITS}. Received: gate_init={gate_init!r}")
        self.num_components = num_components
        self.top_k = top_k
        self.balance_loss_weight = float(balance_loss_weight)
        self.noise = noise
        self.gate_init = gate_init
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"The number of gate features must be known. Received: input_shape={input_shape}")
        shape = (features, self.num_components)
        self.gate_kernel = self.add_weight(shape=shape, initializer=self._initializer(features), name="gate_kernel")
        self.noise_kernel = None
        if self.noise != "none":
            self.noise_kernel = self.add_weight(
                shape=shape, initializer=self._initializer(features), name="noise_kernel"
            )

    def call(self, inputs, training=None):
        logits = ops.matmul(inputs, self.gate_kernel)
        if training and self.noise_kernel is not None:
            batch = ops.shape(inputs)[0]
            shape = (batch, 1) if self.noise == "per_sample" else (batch, self.num_components)
            gamma = keras.random.normal(shape, dtype=logits.dtype, seed=self.seed_generator)
            logits = logits + gamma * ops.softplus(ops.matmul(inputs, self.noise_kernel))
        tie_break = self.seed_generator if training and self.gate_init == "constant" else None
        weights = top_k_softmax(logits, self.top_k, seed=tie_break)
        if training and self.balance_loss_weight > 0:
            loss = balance_loss(weights, self.balance_loss_weight)
            if replicas_in_sync() > 1:
                # MirroredStrategy runs the replicas in turns that switch at every cross-replica
                # sum, and they share this layer's list of added losses: by now the previous
                # replica has collected its loss, and its entry would be counted again here.
                self._losses.clear()
            self.add_loss(loss)
        return weights

    def _initializer(self, features):
        if self.gate_init == "constant":
            return keras.initializers.Constant(1.0 / features)
        return centred_normal(features**-0.5)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_components)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_components": self.num_components,
            "top_k": self.top_k,
            "balance_loss_weight": self.balance_loss_weight,
            "noise": self.noise,
            "gate_init": self.gate_init,
            "seed": self.seed,
        }
        return {**base_config, **config}

