"""GatedMixture: GM-SOP / GM-GAP, and their ungated averages Ave-SOP / Ave-GAP."""

import keras
from keras import ops

from gmsop_keras.layers.initializers import stacked_initializer
from gmsop_keras.layers.noisy_top_k_gate import GATE_INITS, NOISE_MODES, NoisyTopKGate
from gmsop_keras.ops import component_output_dim, grouped_components, square_root_sop, stacked_components
from gmsop_keras.ops.matrix_sqrt import SQRT_DTYPES

# How the top-K components are computed (`dispatch`); `gmsop_keras.models.names.DISPATCHES` names the
# same values for the command line, which checks them before Keras loads (a test keeps the two equal).
DISPATCHES = ("auto", "dense", "gather", "grouped")

COMPONENTS = ("sop", "gap")
DEFAULT_COMPONENT_DIMS = {"sop": (256, 128), "gap": (512,)}
# As the backbones: moving statistics that settle within a short run (Keras' default is 0.99).
# The official code's 0.7 (see `gmsop_keras.models.build_model`'s `bn_momentum`) is an argument.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="gmsop_keras")
class GatedMixture(keras.layers.Layer):
    """Global gated mixture of (second-order) pooling components (paper Eq. 1).

    `y = sum over the K selected components of w_i(X) M_i(X)`, where the
    components `M_i` are parametric SR-SOPs (`component="sop"`: 1x1 convs
    `component_dims=(256, 128)` with ReLU, no bias, no BatchNorm, then
    covariance, square root, upper triangle: 8256-d) or parametric GAPs
    (`component="gap"`: a 1x1 conv to `component_dims=(512,)` with ReLU, then
    the mean: 512-d). The weights `w` come from a `NoisyTopKGate` fed by
    prediction layers of the component's architecture with BatchNorm (1x1 conv
    256 + BN + ReLU, 1x1 conv 128 + BN + ReLU, then SR-SOP or GAP), as in the
    official code.

    One departure from the official code, a switch (`gate_input_norm`, on by
    default): the gate's input features are standardised by a BatchNorm
    without learned scale or offset, and divided by sqrt(D) so that their
    squared norm is about 1 whatever D is. A fresh network's pooled features
    barely differ between samples, so without it the shared part decides the
    routing and a fresh GM-SOP gate with random kernels sends a batch to a
    few components (load coefficient of variation 0.65-0.86 over 16
    components, 3-4 of them unused); with it the load is even from the first
    step (0.1, none unused). `gate_input_norm=False` feeds the gate the raw
    pooled prediction features, as the official code does; its even start
    came from constant gate kernels with random tie-breaking
    (`gate_init="constant"`).

    With `top_k=None` there is no gate: the output is the plain mean of all N
    components (the paper's Ave-SOP-N / Ave-GAP-N).

    Dispatch: every sample uses exactly K components, so there are always
    `B * K` (sample, component) pairs. `"gather"` gathers each pair's kernels
    and runs only those pairs through one batched convolution, covariance and
    square root; `"grouped"` lays the pairs out component by component in
    tiles that share one copy of a kernel (static shapes, some padding rows),
    copying each pair's input map instead of its kernels; `"dense"` computes
    all N components for every sample and multiplies by the (mostly zero)
    weights (the maths: `gmsop_keras.ops.dispatch`). All give the same numbers
    (components have no BatchNorm). `"auto"` gathers when `K < N`: measured
    on a CPU and an H200 (benchmarks/BENCHMARKS.md), grouping runs at the
    speed and memory of gathering when a map is as large as a kernel (`L C`
    vs `C h`), as in the paper's networks; it can pay only where maps are smaller.

    While training, `routing_counts` (a non-trainable N-vector) accumulates
    how many samples each component received; the training callback reads
    and resets it every epoch. The whole layer computes in float32 by default,
    also under a mixed-precision policy (pass `dtype` to override).

    Args:
        num_components: `N`.
        top_k: `K` (`1 <= K <= N`), or `None` for the ungated average.
        component: `"sop"` or `"gap"`.
        component_dims: widths of a component's 1x1 convolutions.
        gate_dims: widths of the gate's prediction convolutions.
        balance_loss_weight: `alpha` of the balance loss (Eq. 4).
        noise: gate noise, `"per_sample"`, `"per_component"` or `"none"`.
        num_iterations: Newton-Schulz iterations of every square root.
        dispatch: `"auto"`, `"dense"`, `"gather"` or `"grouped"`.
        gate_input_norm: standardise the gate's input (see above); `False`
            is the official code.
        gate_init: the gate kernels' start, `"random"` or `"constant"` (the
            official code's `1/d`, ties broken at random while training; see
            `NoisyTopKGate`).
        bn_momentum: momentum of the prediction layers' BatchNorms (and of
            the gate input's standardisation), Keras' convention.
        seed: seed of the gate noise.
        sqrt_dtype: operand dtype of every square root's matrix products,
            `"float32"` (default), `"bfloat16"` or `"float16"`; the trace
            normalisation and the result stay float32 (`newton_schulz_sqrt`).

    Call arguments:
        inputs: feature maps `(batch, height, width, channels)`.
        training: gate noise and balance loss only when `True`.

    Output shape:
        `(batch, output_dim)`: `d (d + 1) / 2` with `d = component_dims[-1]`
        for `"sop"`, `component_dims[-1]` for `"gap"`.

    Example:

    >>> layer = GatedMixture(num_components=4, top_k=2, component="gap", component_dims=(32,))
    >>> layer(keras.ops.ones((2, 8, 8, 16))).shape
    (2, 32)

    Reference:
        Wang et al., Global Gated Mixture of Second-order Pooling for
        Improving Deep Convolutional Neural Networks, NeurIPS 2018.
    """

    def __init__(
        self,
        num_components=16,
        top_k=8,
        component="sop",
        component_dims=None,
        gate_dims=(256, 128),
        balance_loss_weight=100.0,
        noise="per_sample",
        num_iterations=5,
        dispatch="auto",
        kernel_initializer="he_normal",
        gate_input_norm=True,
        gate_init="random",
        bn_momentum=BN_MOMENTUM,
        seed=None,
        sqrt_dtype="float32",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for name, value, allowed in (("component", component, COMPONENTS), ("dispatch", dispatch, DISPATCHES),
                                     ("noise", noise, NOISE_MODES), ("gate_init", gate_init, GATE_INITS),
                                     ("sqrt_dtype", sqrt_dtype, SQRT_DTYPES)):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}. Received: {name}={value!r}")
        if not isinstance(gate_input_norm, bool):
            raise ValueError(
                f"`gate_input_norm` must be True or False. Received: gate_input_norm={gate_input_norm!r}"
            )
        if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 <= bn_momentum < 1:
            raise ValueError(
                f"`bn_momentum` must be in [0, 1) (Keras' convention). Received: bn_momentum={bn_momentum!r}"
            )
        if not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"`num_components` must be a positive integer. Received: num_components={num_components}")
        if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= num_components):
            raise ValueError(
                "`top_k` must be None (plain average) or an integer with 1 <= top_k <= num_components. "
                f"Received: top_k={top_k}, num_components={num_components}"
            )
        component_dims = tuple(int(d) for d in (component_dims or DEFAULT_COMPONENT_DIMS[component]))
        if component == "gap" and len(component_dims) != 1:
            raise ValueError(
                f"A GAP component has one 1x1 convolution. Received: component_dims={component_dims}"
            )
        self.num_components = num_components
        self.top_k = top_k
        self.component = component
        self.component_dims = component_dims
        self.gate_dims = tuple(int(d) for d in gate_dims)
        self.balance_loss_weight = float(balance_loss_weight)
        self.noise = noise
        self.num_iterations = num_iterations
        self.dispatch = dispatch
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.standardize_gate_input = gate_input_norm
        self.gate_init = gate_init
        self.bn_momentum = float(bn_momentum)
        self.seed = seed
        self.sqrt_dtype = sqrt_dtype
        self.output_dim = component_output_dim(component, component_dims[-1])

        self.gate_convs, self.gate_norms, self.gate, self.gate_input_norm = [], [], None, None
        if top_k is not None:
            for i, width in enumerate(self.gate_dims):
                self.gate_convs.append(
                    keras.layers.Conv2D(
                        width, 1, use_bias=False, kernel_initializer="he_normal",
                        dtype=self.dtype_policy, name=f"gate_conv_{i}",
                    )
                )
                self.gate_norms.append(
                    keras.layers.BatchNormalization(
                        momentum=self.bn_momentum, epsilon=BN_EPSILON, dtype=self.dtype_policy,
                        name=f"gate_bn_{i}",
                    )
                )
            if gate_input_norm:
                # Departure from the official code (see the class docstring): the gate's
                # input is standardised, without learned scale or offset.
                self.gate_input_norm = keras.layers.BatchNormalization(
                    momentum=self.bn_momentum, epsilon=BN_EPSILON, center=False, scale=False,
                    dtype=self.dtype_policy, name="gate_input_bn",
                )
            self.gate = NoisyTopKGate(
                num_components, top_k, balance_loss_weight=balance_loss_weight, noise=noise,
                gate_init=gate_init, seed=seed, dtype=self.dtype_policy, name="gate",
            )

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`GatedMixture` expects feature maps (batch, height, width, channels) with a known "
                f"number of channels. Received: input_shape={input_shape}"
            )
        channels = input_shape[-1]
        self.component_kernels = []
        for i, width in enumerate(self.component_dims):
            self.component_kernels.append(
                self.add_weight(
                    shape=(self.num_components, channels, width),
                    initializer=stacked_initializer(self.kernel_initializer, self.num_components),
                    name=f"component_kernel_{i}",
                )
            )
            channels = width
        if self.gate is not None:
            # Samples routed to each component while training (paper Fig. 2 left).
            # Synchronised on read, like a metric: each replica counts its own
            # share and a read sums them. An on-write sum would communicate
            # across replicas inside the forward pass, and under MirroredStrategy
            # that loses the balance loss' gradient on all replicas but one.
            self.routing_counts = keras.Variable(
                initializer="zeros", shape=(self.num_components,), dtype="float32",
                trainable=False, aggregation="sum", synchronization="on_read", name="routing_counts",
            )
            shape = tuple(input_shape)
            for conv, norm in zip(self.gate_convs, self.gate_norms):
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
                norm.build(shape)
            gate_features = component_output_dim(self.component, shape[-1])
            if self.gate_input_norm is not None:
                self.gate_input_norm.build((input_shape[0], gate_features))
            self.gate.build((input_shape[0], gate_features))

    def call(self, inputs, training=None):
        # ops.shape gives static sizes where known (L stays static for a fixed map size
        # when the batch is unknown, as in model.fit) and tensors where not.
        batch, height, width, channels = ops.shape(inputs)
        positions = ops.reshape(inputs, (batch, height * width, channels))  # (B, L, C)
        options = dict(component=self.component, num_iterations=self.num_iterations, sqrt_dtype=self.sqrt_dtype)
        if self.gate is None:
            return ops.mean(stacked_components(positions[:, None], self.component_kernels, **options), axis=1)

        weights = self.gate(self._gate_features(inputs, training), training=training)  # (B, N)
        if training:
            self.routing_counts.assign_add(ops.sum(ops.cast(weights > 0, "float32"), axis=0))
        if self.dispatch == "dense" or (self.dispatch == "auto" and self.top_k == self.num_components):
            outputs = stacked_components(positions[:, None], self.component_kernels, **options)  # (B, N, D)
            return ops.einsum("bn,bnd->bd", weights, outputs)
        top_weights, indices = ops.top_k(weights, self.top_k, sorted=False)  # (B, K)
        if self.dispatch == "gather":
            kernels = [ops.take(kernel, indices, axis=0) for kernel in self.component_kernels]  # (B, K, ., .)
            outputs = stacked_components(positions[:, None], kernels, **options)  # (B, K, D)
        else:
            outputs = grouped_components(positions, indices, self.component_kernels, **options)  # (B, K, D)
        return ops.einsum("bk,bkd->bd", top_weights, outputs)

    def _gate_features(self, inputs, training):
        x = inputs
        for conv, norm in zip(self.gate_convs, self.gate_norms):
            x = ops.relu(norm(conv(x), training=training))
        if self.component == "sop":
            features = square_root_sop(x, self.num_iterations, self.sqrt_dtype)
        else:
            features = ops.mean(x, axis=(1, 2))
        if self.gate_input_norm is None:
            return features
        # Standardised, then scaled to unit mean square norm: with unit variance per
        # feature an SGD step would move the logits by lr * D times their gradient
        # (D = 8256 for GM-SOP), and the gate's softmax collapses within an epoch.
        standardised = self.gate_input_norm(features, training=training)
        return standardised * (features.shape[-1] ** -0.5)
    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        base_config = super().get_config()
        config = {
            "num_components": self.num_components,
            "top_k": self.top_k,
            "component": self.component,
            "component_dims": list(self.component_dims),
            "gate_dims": list(self.gate_dims),
            "balance_loss_weight": self.balance_loss_weight,
            "noise": self.noise,
            "num_iterations": self.num_iterations,
            "dispatch": self.dispatch,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "gate_input_norm": self.standardize_gate_input,
            "gate_init": self.gate_init,
            "bn_momentum": self.bn_momentum,
            "seed": self.seed,
            "sqrt_dtype": self.sqrt_dtype,
        }
        return {**base_config, **config}

