"""`build_model`: any row of the paper's Tables 2-4 by name, and the seed family's ImageNet ResNet-50s.

Every model is the same three parts: the input normalisation, a backbone (a model from normalised
images to a feature map: `build_backbone` or `build_imagenet_backbone`) and the one head path,
`apply_head` (with the authors' conventions for the ImageNet family: `imagenet_head_options`).
"""

import math

import keras
from keras import layers

from gmsop_keras.models.options import DEFAULT_HEAD, MODEL_OPTIONS, check_model_options, default_dropout
from gmsop_keras.models.backbones import BN_MOMENTUM, backbone_spec, build_backbone
from gmsop_keras.models.heads import apply_head, parse_head
from gmsop_keras.models.imagenet_resnets import (
    IMAGENET_MODELS,
    build_imagenet_backbone,
    imagenet_head_options,
    imagenet_model_spec,
)

# ImageNet per-channel RGB statistics in [0, 255] units; the input images are raw.
IMAGENET_MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))
INPUT_NAME = "image"


def build_model(
    backbone="resnet18",
    head=None,
    num_classes=1000,
    input_shape=(64, 64, 3),
    *,
    last_stride=None,
    dropout=None,
    balance_loss_weight=None,
    num_iterations=None,
    noise=None,
    dispatch=None,
    seed=None,
    sop_channels=None,
    sqrt_dtype=None,
    gsop_stages=None,
    gaussian_pooling=None,
    conv1_bias=None,
    symmetric_padding=None,
    gate_input_norm=None,
    gate_init=None,
    representation_gamma=None,
    sop_baseline_bn=None,
    bn_momentum=None,
    mean=None,
    std=None,
    name=None,
):
    """Builds a classifier: normalisation, backbone, pooling head, logits.

    The model takes raw images (uint8 or float in [0, 255], RGB) as its input
    named `image`, normalises them per channel inside the graph, and returns
    float32 logits (also under `mixed_float16`; train with `from_logits=True`).
    Mixture heads add the gate's balance loss to `model.losses` while training.

    Every option defaults to `None`, "not given": the model's own value, written
    below. An option given to a model that does not use it is refused with a
    `ValueError` naming it, as is a value out of range; which option applies to
    which model is declared in `gmsop_keras.models.options.MODEL_OPTIONS`.

    Args:
        backbone: one of `list_backbones()`: `"resnet18"`, `"resnet50"` (the
            paper's modified ResNets, Table 1) or `"wrn-36-2"`; or one of the seed
            family's ImageNet models, `list_imagenet_models()`
            (`"resnet50-imagenet"`, `"gsop1-resnet50"`, `"gsop2-resnet50"`,
            `"gauss-resnet50"`, `"resnet50-3g"`), whose heads are `"gap"`,
            `"isqrt-256"` or `"3g-256"` and which take none of the options below
            (they are the authors' networks).
        head: one of `list_heads()`, or any `gap-D`, `ave-gap-N`, `gm-gap-N-K`,
            `ave-sop-N`, `gm-sop-N-K` (see `gmsop_keras.models.heads`). `None`:
            the model's own head, `"gm-sop-16-8"` on the small-image backbones
            (the paper's GM-SOP) and its own on the ImageNet models.
        num_classes: classifier width (1000 for ImageNet, 365 for Places365).
        input_shape: `(H, W, 3)`; 64x64 for ImageNet-64, 96x96 or 100x100
            for Places365.
        last_stride: stride of the last stage. Default: 1 for second-order
            heads (16x16 maps from 64x64 images, as the official code), 2 for
            first-order heads (8x8).
        dropout: drop rate before the classifier. Default 0.2; 0.4 for
            second-order heads on WRN-36-2 (official code). Not for `gap`.
        balance_loss_weight: `alpha` of the balance loss (paper: 100, the default).
        num_iterations: Newton-Schulz iterations (default and paper: 5,
            official code: 3).
        noise: gate noise, `"per_sample"` (default), `"per_component"` or `"none"`.
        dispatch: mixture dispatch, `"auto"` (default), `"dense"`, `"gather"`
            or `"grouped"`.
        seed: seed of the gate noise (no effect on a model without a gate).
        sop_channels: second-order heads reduce wider maps (WRN-36-2's 256
            channels) to this many (default 128) with a 1x1 conv + BN + ReLU.
        sqrt_dtype: operand dtype of the square roots' matrix products in a
            second-order head: `"float32"` (default), `"bfloat16"` or
            `"float16"`; their trace normalisation and result stay float32.
        gsop_stages, gaussian_pooling: the seed family's options for the
            small-image backbones: GSoP blocks in the last block of these
            stages (1-4), and Gaussian pooling in place of strided blocks
            (see `build_backbone`). Default: none.
        conv1_bias, symmetric_padding: the official MatConvNet models' stem
            convolution with a bias, and their strided 3x3 convolutions
            padded by 1 on every side (Keras' `"same"` pads 0 before and 1
            after); for converted weights (`gmsop_keras.convert_matconvnet`).
            Default: `False`.
        gate_input_norm: standardise the gate's input (default `True`;
            `False`: the official code). See `GatedMixture`.
        gate_init: `"random"` (default) or `"constant"` (the official code's
            `1/d`, ties broken at random while training). See `NoisyTopKGate`.
        representation_gamma: initial scale of the BatchNorm before the
            classifier; default `sqrt(128 / D)` capped at 1, the paper and the
            official code 1.0 (see `gmsop_keras.models.heads`).
        sop_baseline_bn: whether `sr-sop` / `psr-sop` have the BatchNorm and
            Dropout before the classifier (default `True`; `False`: the
            official baseline, straight to the classifier).
        bn_momentum: momentum of every BatchNorm of a small-image model
            (backbone, head, mixture prediction layers), Keras' convention:
            default 0.9; the official code's is 0.7 (its moments' learning
            rate 0.3; see `gmsop_keras.models.backbones`).
        mean, std: per-channel (RGB) mean and standard deviation of the
            training images in [0, 255] units, which the model's first layer
            subtracts and divides by (a converted dataset's manifest records
            them as `pixel_mean` / `pixel_std`). Default (None): ImageNet's.
        name: model name; default `"<backbone>_<head>"`.

    Returns:
        An uncompiled `keras.Model`.

    Example:

    >>> model = build_model("resnet18", "gm-sop-16-8")
    >>> round(model.count_params() / 1e6, 1)  # the paper: 10.3M
    10.4
    """
    normalization = _normalization(mean, std)
    if backbone in IMAGENET_MODELS:
        _, head = imagenet_model_spec(backbone, head)  # refuses a head the authors' network does not take
    else:
        backbone_spec(backbone)
        head = DEFAULT_HEAD if head is None else head
    head_spec = parse_head(head)
    given = locals()  # the keywords as called (no option is reassigned above), checked as MODEL_OPTIONS declares
    options = {option.name: given[option.name] for option in MODEL_OPTIONS}
    check_model_options(backbone, head, options)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (H, W, 3). Received: input_shape={input_shape}")

    # Every backbone is a model from normalised images to a feature map; every head is `apply_head`.
    images, x = _normalized_input(input_shape, *normalization)
    if backbone in IMAGENET_MODELS:
        trunk = build_imagenet_backbone(backbone, input_shape, head)
        head_options = imagenet_head_options(backbone)
    else:
        trunk, head_options = _small_image_parts(backbone, head_spec, input_shape, options)
    logits = apply_head(trunk(x), head_spec, num_classes, seed=seed, **head_options)
    name = name or f"{backbone}_{head}".replace("-", "_")
    return keras.Model(images, logits, name=name)


def _small_image_parts(backbone, head_spec, input_shape, options):
    """The paper's backbone (`build_backbone`) and `apply_head`'s options, the defaults resolved."""
    last_stride = options["last_stride"]
    if last_stride is None:
        last_stride = 1 if head_spec.second_order else 2
    dropout = options["dropout"]
    if dropout is None:
        dropout = default_dropout(backbone, head_spec.name)
    bn_momentum = BN_MOMENTUM if options["bn_momentum"] is None else options["bn_momentum"]
    trunk = build_backbone(
        backbone, input_shape=input_shape, last_stride=last_stride, gsop_stages=options["gsop_stages"] or (),
        gaussian_pooling=bool(options["gaussian_pooling"]), bn_momentum=bn_momentum,
        conv1_bias=bool(options["conv1_bias"]), symmetric_padding=bool(options["symmetric_padding"]),
    )
    # The head's options: every model option but the backbone's (resolved above, as is the dropout).
    head_options = {option.name: options[option.name] for option in MODEL_OPTIONS
                    if option.trait != "small_backbone" and option.name != "dropout"
                    and options[option.name] is not None}
    return trunk, dict(head_options, dropout=dropout, bn_momentum=bn_momentum)


def _normalization(mean, std):
    """`(mean, std)` as float tuples of 3: ImageNet's where None; refuses anything else named."""
    checked = []
    for name, value, default in (("mean", mean, IMAGENET_MEAN), ("std", std, IMAGENET_STD)):
        if value is None:
            checked.append(default)
            continue
        try:
            values = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            values = ()
        if len(values) != 3 or not all(math.isfinite(v) for v in values) or (
                name == "std" and min(values) <= 0):
            rule = "three positive numbers" if name == "std" else "three finite numbers"
            raise ValueError(f"`{name}` must be {rule} (per RGB channel, [0, 255] units), or None for "
                             f"ImageNet's. Received: {name}={value!r}")
        checked.append(values)
    return tuple(checked)


def _normalized_input(input_shape, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The model input `image` (raw RGB in [0, 255]) and its per-channel normalisation."""
    images = keras.Input(shape=input_shape, name=INPUT_NAME)
    x = layers.Normalization(
        mean=mean, variance=tuple(s * s for s in std), dtype="float32", name="normalization"
    )(images)
    return images, x
