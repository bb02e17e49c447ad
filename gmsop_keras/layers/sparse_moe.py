"""SparseMoE: a sparsely gated mixture of fully connected experts on a pooled feature."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import stacked_initializer
from gmsop_keras.layers.noisy_top_k_gate import NOISE_MODES, NoisyTopKGate

# As GatedMixture's gate input standardisation.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="gmsop_keras")
class SparseMoE(keras.layers.Layer):
    """One-layer sparsely gated mixture of experts (the paper's Table 3 row "One-layer-SG-MoE").

    `y = sum over the K selected experts of w_i(x) relu(x E_i)`, where `x` is a
    pooled feature vector (the 128-d GAP of ResNet-18 in the paper), each expert
    `E_i` a `features x units` fully connected layer (128 x 512, without bias,
    as a GM-GAP component) and `w` the output of the same `NoisyTopKGate` as
    GM-SOP (noise, top-K softmax, balance loss) fed directly by `x`. Where
    GM-GAP pools after its components, the experts here act on the pooled
    feature, as in Shazeer et al.'s layer.

    As in `GatedMixture`, the gate's input is by default standardised by a
    BatchNorm without learned scale or offset and divided by sqrt(features)
    (`gate_input_norm=False` feeds the raw feature, as the official code).
    All N experts are computed and weighted (the non-selected ones by zero):
    an expert is one small matrix product, cheaper than gathering kernels.

    Args:
        num_experts: `N` (16 in the paper).
        top_k: `K`, `1 <= K <= N` (8 in the paper).
        units: output width of every expert (512 in the paper).
        balance_loss_weight: `alpha` of the balance loss (paper Eq. 4; 100).
        noise: gate noise, `"per_sample"`, `"per_component"` or `"none"`.
        gate_input_norm: standardise the gate's input (see above).
        gate_init: the gate kernels' start, `"random"` or `"constant"` (see
            `NoisyTopKGate`).
        kernel_initializer: initializer of each expert kernel.
        seed: seed of the gate noise.

    Call arguments:
        inputs: pooled features `(batch, features)`.
        training: gate noise and balance loss only when `True`.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, units)`.

    Example:

    >>> SparseMoE(16, 8, units=512)(keras.ops.ones((2, 128))).shape
    (2, 512)

    Reference:
        Shazeer et al., Outrageously Large Neural Networks: The Sparsely-Gated
        Mixture-of-Experts Layer, ICLR 2017.
    """

    def __init__(
        self,
        num_experts=16,
        top_k=8,
        units=512,
        balance_loss_weight=100.0,
        noise="per_sample",
        gate_input_norm=True,
        gate_init="random",
        kernel_initializer="he_normal",
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive integer. Received: units={units}")
        if noise not in NOISE_MODES:
            raise ValueError(f"`noise` must be one of {NOISE_MODES}. Received: noise={noise!r}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.units = units
        self.balance_loss_weight = float(balance_loss_weight)
        self.noise = noise
        self.gate_input_norm = bool(gate_input_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        # Validates num_experts, top_k and balance_loss_weight.
        self.gate = NoisyTopKGate(
            num_experts, top_k, balance_loss_weight=balance_loss_weight, noise=noise,
            gate_init=gate_init, seed=seed, dtype=self.dtype_policy, name="gate",
        )
        self.gate_norm = None
        if self.gate_input_norm:
            self.gate_norm = keras.layers.BatchNormalization(
                momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=False, scale=False,
                dtype=self.dtype_policy, name="gate_input_bn",
            )

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "`SparseMoE` expects pooled features (batch, features) with a known number of "
                f"features. Received: input_shape={input_shape}"
            )
        features = input_shape[-1]
        self.expert_kernel = self.add_weight(
            shape=(self.num_experts, features, self.units),
            initializer=stacked_initializer(self.kernel_initializer, self.num_experts),
            name="expert_kernel",
        )
        if self.gate_norm is not None:
            self.gate_norm.build(tuple(input_shape))
        self.gate.build(tuple(input_shape))

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        gate_input = x
        if self.gate_norm is not None:
            gate_input = self.gate_norm(x, training=training) * (x.shape[-1] ** -0.5)
        weights = self.gate(gate_input, training=training)  # (B, N), K non-zeros per row
        experts = ops.relu(ops.einsum("bc,ncu->bnu", x, self.expert_kernel))  # (B, N, units)
        return ops.einsum("bn,bnu->bu", weights, experts)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "units": self.units,
            "balance_loss_weight": self.balance_loss_weight,
            "noise": self.noise,
            "gate_input_norm": self.gate_input_norm,
            "gate_init": self.gate.gate_init,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "seed": self.seed,
        }
        return {**base_config, **config}
