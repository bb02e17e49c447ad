"""Heads: global pooling + classifier, chosen by the names of the paper's rows.

A head name parses into a `HeadSpec` (`parse_head`); `apply_head` builds the
layers on a backbone's feature map. The names (paper Sec. 3.1, Tables 2-4):

| name          | representation                                              | dim  |
| ------------- | ----------------------------------------------------------- | ---- |
| `gap`         | global average pooling (ResNet-18 / ResNet-50 / WRN rows)   | C    |
| `gap-D`       | 1x1 conv to D + ReLU, then GAP (ResNet-18-512d, -8256d)     | D    |
| `sr-sop`      | SR-SOP: covariance, matrix square root, upper triangle      | 8256 |
| `psr-sop`     | parametric SR-SOP: 1x1 convs 256, 128 (ReLU), then SR-SOP   | 8256 |
| `ave-gap-N`   | mean of N parametric GAPs (512-d each)                      | 512  |
| `gm-gap-N-K`  | gated mixture of N parametric GAPs, top K                   | 512  |
| `ave-sop-N`   | mean of N parametric SR-SOPs                                | 8256 |
| `gm-sop-N-K`  | gated mixture of N parametric SR-SOPs, top K (GM-SOP)       | 8256 |
| `isqrt-256`   | iSQRT-COV: 1x1 conv 256 + BN + ReLU, SR-SOP (3 it.; 5 on resnet50-imagenet, as mpncovresnet50) | 32896 |
| `3g-256`      | 3G-Net: the same reduction, re-weighted SR-SOP (5 iter.)    | 32896 |
| `netvlad-N`   | NetVLAD, N clusters on the map (Table 3: `netvlad-64`)      | N C  |
| `sg-moe-N-K`  | GAP, then a sparsely gated mixture of N experts (C x 512 FC, ReLU), top K (Table 3: One-layer-SG-MoE) | 512 |

`isqrt-256` and `3g-256` are the heads of the seed family's ImageNet models
(GSoP-Net2, ResNet50-3G), on any backbone: the authors' 1x1 convolution to 256
channels + BatchNorm (PyTorch's: epsilon 1e-5, momentum 0.1) + ReLU, then the
square root; as there, the classifier follows the representation directly.

One head path: `apply_head` is the head of every model, the small-image
backbones' and the seed family's ImageNet ResNet-50s' (`imagenet_resnets`).
Those pass `convention="torch"`: the layers are named as their weight
converter expects (`avg_pool`, `predictions`) and the classifier starts as
PyTorch's `nn.Linear`; they also pass their own `num_iterations`.

Every head but `gap`, `isqrt-256` and `3g-256` ends with BatchNorm, Dropout
and the classifier (paper Sec. 2.3; the official code has them after the
mixture); `gap` is the plain ResNet classifier. The official code has nothing between its plain SR-SOP
baseline and the classifier: `sop_baseline_bn=False` gives `sr-sop` and
`psr-sop` that form (representation straight to the classifier).

The BatchNorm before the classifier starts with the scale
`representation_gamma`; by default (`None`) `sqrt(128 / D)` capped at 1 for
a `D`-dimensional representation, where the paper and the official code
start at 1 (`representation_gamma=1.0`). The reason: the classifier's SGD
step on a sample's own logits grows with the squared norm of its input, `D`
for unit-variance features, so an 8256-d representation would start with 64
times the step of the 128-d GAP baseline at the same learning rate; measured
on the synthetic set, its logits then random-walk to hundreds within an
epoch. `sqrt(128 / D)` matches the GAP baseline's start; gamma stays
learnable. It applies to every head with that BatchNorm, the baselines
`gap-512`, `gap-8256`, `sr-sop` and `psr-sop` included.

The paper's second-order heads on a backbone wider than `sop_channels`
(WRN-36-2: 256 channels) first reduce it with a 1x1 conv + BN + ReLU, so the
representation stays 8256-d; this reproduces the paper's 15.7M parameters of
GM-SOP-16-8 + WRN-36-2 (15.65M; the official code's 512-128 gate and
components on the 256 channels would give 17.8M).

The classifier, the BatchNorm before it and every second-order layer compute
in float32 also under a `mixed_float16` policy.
"""

import keras
from keras import layers

from gmsop_keras.layers import (
    GatedMixture,
    GeneralizedGaussianReweighting,
    NetVLAD,
    ParametricGAP,
    SparseMoE,
    SquareRootSOP,
)
from gmsop_keras.layers.initializers import he_fan_out, uniform_fan_in
from gmsop_keras.models.names import (  # noqa: F401  (re-exported)
    CANONICAL_HEADS,
    HEAD_PATTERNS,
    SEED_FAMILY_HEADS,
    HeadSpec,
    list_heads,
    parse_head,
)

GAP_COMPONENT_DIMS = (512,)
SOP_COMPONENT_DIMS = (256, 128)
MOE_EXPERT_UNITS = 512  # One-layer-SG-MoE: each expert a 128 x 512 fully connected layer (paper Sec. 3.2)
DEFAULT_DROPOUT = 0.2
DEFAULT_ITERATIONS = 5  # Newton-Schulz iterations of the paper's heads (the official code: 3)
REFERENCE_WIDTH = 128  # the plain GAP representation of ResNet-18
# The seed family's heads (`SEED_FAMILY_HEADS`): the authors' 1x1 reduction to `width` channels
# (convolution without bias, BatchNorm, ReLU), then iSQRT-COV's square root or 3G-Net's re-weighted
# one, with the authors' Newton-Schulz iterations (GSoP-Net2: 3; 3G-Net: 5).
SEED_HEADS = {
    "isqrt-256": dict(width=256, reweighted=False, num_iterations=3),
    "3g-256": dict(width=256, reweighted=True, num_iterations=5),
}
# PyTorch's BatchNorm (momentum 0.1, Keras' 0.9), the seed heads' reduction on every backbone.
TORCH_BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# Layer names and classifier initialisation: this library's, or the authors' PyTorch networks'
# (their checkpoints convert by layer name: `gmsop_keras.weights.torch_resnets`).
CONVENTIONS = {
    "keras": dict(gap="gap", classifier="logits"),
    "torch": dict(gap="avg_pool", classifier="predictions"),
}


def apply_head(
    features,
    spec,
    num_classes,
    *,
    dropout=DEFAULT_DROPOUT,
    balance_loss_weight=100.0,
    num_iterations=None,
    noise="per_sample",
    dispatch="auto",
    seed=None,
    sop_channels=128,
    representation_gamma=None,
    sop_baseline_bn=True,
    bn_momentum=0.9,
    gate_input_norm=True,
    gate_init="random",
    sqrt_dtype="float32",
    convention="keras",
):
    """Pooling, (BatchNorm, Dropout) and classifier on a feature map: every model's head.

    Args:
        features: symbolic feature map `(B, H, W, C)`.
        spec: a `HeadSpec` (from `parse_head`).
        num_classes: width of the classifier.
        dropout: drop rate before the classifier (heads with the BatchNorm
            before the classifier only).
        balance_loss_weight, noise, dispatch, seed, gate_input_norm,
            gate_init: passed to `GatedMixture` / `SparseMoE`.
        num_iterations: Newton-Schulz iterations of every square root of the
            head; `None`: the head's own (5; `isqrt-256` 3, `3g-256` 5).
        sop_channels: second-order heads first reduce wider maps to this many
            channels (1x1 conv + BN + ReLU); `None` never reduces. The seed
            heads always reduce to their own width (256).
        representation_gamma: initial scale of the BatchNorm before the
            classifier; `None`: `sqrt(128 / D)` capped at 1 (see above).
        sop_baseline_bn: whether `sr-sop` and `psr-sop` have that BatchNorm
            and the Dropout (`False`: the official baseline).
        sqrt_dtype: operand dtype of the matrix products of every square root
            of a `gm-sop`, `ave-sop`, `sr-sop` or `psr-sop` head (`SquareRootSOP`).
        bn_momentum: momentum of the head's BatchNorms (Keras' convention),
            but for the seed heads' reduction, PyTorch's (`TORCH_BN_MOMENTUM`).
        convention: `"keras"` (layers `gap` and `logits`, Keras' default
            initialisation) or `"torch"` (the authors' PyTorch networks:
            `avg_pool` and `predictions`, initialised as `nn.Linear`).

    Returns:
        Symbolic logits `(B, num_classes)`, float32.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"`convention` must be one of {', '.join(CONVENTIONS)}. Received: convention={convention!r}")
    names = CONVENTIONS[convention]
    x = features
    if spec.name in SEED_HEADS:
        seed_head = SEED_HEADS[spec.name]
        iterations = seed_head["num_iterations"] if num_iterations is None else num_iterations
        x = _seed_head(x, seed_head["width"], seed_head["reweighted"], iterations)
        return _classifier(x, num_classes, convention)
    num_iterations = DEFAULT_ITERATIONS if num_iterations is None else num_iterations
    if spec.second_order and sop_channels and x.shape[-1] > sop_channels:
        x = layers.Conv2D(
            sop_channels, 1, use_bias=False, kernel_initializer="he_normal", name="head_reduce_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name="head_reduce_bn")(x)
        x = layers.ReLU(name="head_reduce_relu")(x)

    if spec.pooling == "netvlad":
        x = NetVLAD(spec.clusters, name="netvlad")(x)
    elif spec.pooling == "moe":
        x = layers.GlobalAveragePooling2D(name=names["gap"])(x)
        x = SparseMoE(
            spec.num_components, spec.top_k, units=MOE_EXPERT_UNITS, balance_loss_weight=balance_loss_weight,
            noise=noise, gate_input_norm=gate_input_norm, gate_init=gate_init, seed=seed, name="experts",
        )(x)
    elif spec.is_mixture:
        component_dims = SOP_COMPONENT_DIMS if spec.second_order else GAP_COMPONENT_DIMS
        x = GatedMixture(
            spec.num_components,
            spec.top_k,
            component=spec.pooling,
            component_dims=component_dims,
            balance_loss_weight=balance_loss_weight,
            noise=noise,
            num_iterations=num_iterations,
            dispatch=dispatch,
            gate_input_norm=gate_input_norm,
            gate_init=gate_init,
            bn_momentum=bn_momentum,
            seed=seed,
            sqrt_dtype=sqrt_dtype,
            name="mixture",
        )(x)
    elif spec.second_order:
        hidden_dims = SOP_COMPONENT_DIMS if spec.parametric else ()
        x = SquareRootSOP(hidden_dims, num_iterations=num_iterations, sqrt_dtype=sqrt_dtype, name="sr_sop")(x)
        if not sop_baseline_bn:
            return _classifier(x, num_classes, convention)
    elif spec.parametric:
        x = ParametricGAP(spec.units, name="parametric_gap")(x)
    else:
        x = layers.GlobalAveragePooling2D(name=names["gap"])(x)
        return _classifier(x, num_classes, convention)

    # The initial scale: see the module docstring.
    if representation_gamma is None:
        representation_gamma = min(1.0, (REFERENCE_WIDTH / x.shape[-1]) ** 0.5)
    x = layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=bn_momentum, dtype="float32", name="representation_bn",
        gamma_initializer=keras.initializers.Constant(representation_gamma),
    )(x)
    x = layers.Dropout(dropout, dtype="float32", name="dropout")(x)
    return _classifier(x, num_classes, convention)


def _seed_head(x, width, reweighted, num_iterations):
    """The authors' reduction (He-normal over the fan-out, as their ResNets), then the square root."""
    x = layers.Conv2D(
        width, 1, strides=1, padding="valid", use_bias=False, kernel_initializer=he_fan_out(), name="reduce_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=TORCH_BN_MOMENTUM, name="reduce_bn")(x)
    x = layers.ReLU(name="reduce_relu")(x)
    if reweighted:
        return GeneralizedGaussianReweighting(reweighted_sop=True, num_iterations=num_iterations, name="reweighting")(x)
    return SquareRootSOP(num_iterations=num_iterations, name="isqrt_cov")(x)


def _classifier(x, num_classes, convention):
    """The float32 classifier (also under `mixed_float16`): Keras' Dense, or PyTorch's `nn.Linear`."""
    name = CONVENTIONS[convention]["classifier"]
    if convention == "keras":
        return layers.Dense(num_classes, dtype="float32", name=name)(x)
    # nn.Linear: weight and bias uniform in +-1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5) for the weight)
    return layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
        bias_initializer=uniform_fan_in(x.shape[-1]),
        dtype="float32",
        name=name,
    )(x)
