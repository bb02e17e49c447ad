"""ImageNet bottleneck ResNet-50 and its seed-family variants (GSoP-Net, Gaussian pooling, 3G-Net).

Each model is a row of `IMAGENET_MODELS`: which stages end with a `GSoPBlock`,
whether `GaussianPooling2D` replaces every downsampling, the stride of the last
stage and the default head. Every model is the authors' PyTorch network, so
that their checkpoints convert (`gmsop_keras.weights.torch_resnets`):

- `resnet50-imagenet`: torchvision's ResNet-50 (v1.5: stride in the 3x3
  convolution), GAP head. 25.56M parameters. With `head="isqrt-256"` it is
  iSQRT-COV's ResNet-50 (fast-MPN-COV's `mpncovresnet50`: last stage at
  stride 1, 5 Newton-Schulz iterations).
- `gsop1-resnet50`: a channel `GSoPBlock` on the residual branch of the last
  block of each of the four stages, last stage at stride 1 (a 14x14 map at
  224x224), GAP head. 28.29M.
- `gsop2-resnet50`: the same in stages 1-3, iSQRT-COV head with 3 iterations
  (`isqrt-256`). 58.28M. In stage 1 (64 planes) the GSoP block reduces with
  stride 2, as the authors' code does.
- `gauss-resnet50`: iSP-Gaussian pooling for every downsampling: the stem
  convolution at stride 1 followed by a 2x2 Gaussian pool, a 3x3 Gaussian pool
  with stride 2 and padding 1 in place of the max-pool, and in the first block
  of stages 2-4 stride-1 convolutions followed by a Gaussian pool after the
  residual ReLU. 33.85M.
- `resnet50-3g`: 3G-Net's head (`3g-256`), last stage at stride 1. 57.97M
  (3G-Net's convolutions have no bias).

The authors' conventions, everywhere: BatchNorm epsilon 1e-5 and momentum 0.1
in PyTorch's terms (0.9 in Keras'); convolutions padded symmetrically with
zeros (explicit `ZeroPadding2D` + `"valid"`: Keras' `"same"` pads only the
bottom and right of an even map at stride 2); convolutions initialised
He-normal over their fan-out, the classifier as PyTorch's `nn.Linear`.

This module builds the trunk (`build_imagenet_backbone`); the head is the
library's one head path, `gmsop_keras.models.heads.apply_head`, with the
authors' conventions (`imagenet_head_options`: PyTorch's layer names and
classifier initialisation, the model's Newton-Schulz iterations). Heads, by
name: `gap`; `isqrt-256` (1x1 convolution to 256 + BN + ReLU, covariance,
Newton-Schulz iterations, upper triangle: 32896-d); `3g-256` (the same
reduction, `GeneralizedGaussianReweighting` with 3 stages, 5 iterations);
none of them has a BatchNorm or Dropout before the classifier.

References:
    He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
    Li, Xie, Wang, Gao. Towards Faster Training of Global Covariance Pooling
        Networks by Iterative Matrix Square Root Normalization. CVPR 2018.
    Gao, Xie, Wang, Li. Global Second-order Pooling Convolutional Networks. CVPR 2019.
    Kobayashi. Gaussian-Based Pooling for Convolutional Neural Networks. NeurIPS 2019.
    Wang, Li, Hu, Zhu, Zuo. Deep Global Generalized Gaussian Networks. CVPR 2019.
"""

import keras
from keras import layers

from gmsop_keras.layers.gaussian_pooling_2d import GaussianPooling2D
from gmsop_keras.layers.gsop_block import GSoPBlock
from gmsop_keras.layers.initializers import he_fan_out
from gmsop_keras.models.heads import apply_head, parse_head

# last_stride None: 2 for the GAP head, 1 for a second-order head (iSQRT-COV's choice).
IMAGENET_MODELS = {
    "resnet50-imagenet": dict(gsop_stages=(), gaussian=False, head="gap", last_stride=None, sqrt_iterations=5),
    "gsop1-resnet50": dict(gsop_stages=(1, 2, 3, 4), gaussian=False, head="gap", last_stride=1, sqrt_iterations=3),
    "gsop2-resnet50": dict(gsop_stages=(1, 2, 3), gaussian=False, head="isqrt-256", last_stride=1, sqrt_iterations=3),
    "gauss-resnet50": dict(gsop_stages=(), gaussian=True, head="gap", last_stride=2, sqrt_iterations=5),
    "resnet50-3g": dict(gsop_stages=(), gaussian=False, head="3g-256", last_stride=1, sqrt_iterations=5),
}
IMAGENET_HEADS = ("gap", "isqrt-256", "3g-256")
BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
# PyTorch's BatchNorm: epsilon 1e-5, momentum 0.1 (running = 0.9 running + 0.1 batch).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
# The GSoP block of a stage with 64 planes reduces with stride 2 (the authors' code).
GSOP_STRIDE_2_WIDTH = 64


def list_imagenet_models():
    """Names accepted by `build_imagenet_model`."""
    return list(IMAGENET_MODELS)


def imagenet_model_spec(name, head=None):
    """`(row of IMAGENET_MODELS, head name)`; refuses an unknown model or a head it does not take."""
    if name not in IMAGENET_MODELS:
        raise ValueError(f"Unknown model: {name!r}. Valid models: {', '.join(IMAGENET_MODELS)}.")
    spec = IMAGENET_MODELS[name]
    head = spec["head"] if head is None else head
    if head not in IMAGENET_HEADS:
        raise ValueError(
            f"Backbone {name!r} takes the heads {', '.join(IMAGENET_HEADS)} (its own: {spec['head']}). "
            f"Received: head={head!r}"
        )
    return spec, head


def imagenet_head_options(name):
    """`apply_head`'s options for the authors' heads: PyTorch's names and classifier, their iterations."""
    return dict(convention="torch", num_iterations=IMAGENET_MODELS[name]["sqrt_iterations"], bn_momentum=BN_MOMENTUM)


def build_imagenet_model(name, num_classes=1000, input_shape=(224, 224, 3), head=None):
    """Builds a named ImageNet model, from normalised images to logits: the trunk and `apply_head`.

    The model is flat (the trunk's layers and the head's side by side), with
    the layer names `gmsop_keras.weights.torch_resnets` maps to the authors'.

    Args:
        name: one of `list_imagenet_models()`.
        num_classes: width of the classifier.
        input_shape: `(H, W, 3)` of the normalised images.
        head: one of `IMAGENET_HEADS`; default the model's own.

    Returns:
        A functional `keras.Model` named `name`.
    """
    _, head = imagenet_model_spec(name, head)
    trunk = build_imagenet_backbone(name, input_shape, head)
    logits = apply_head(trunk.output, parse_head(head), num_classes, **imagenet_head_options(name))
    return keras.Model(trunk.input, logits, name=name)


def build_imagenet_backbone(name, input_shape=(224, 224, 3), head=None):
    """The trunk of a named ImageNet model: normalised images to the last stage's map `(B, H', W', 2048)`.

    `head` (default the model's own) sets the last stage's stride where the
    model has none of its own: 2 for `gap`, 1 for a second-order head.
    """
    spec, head = imagenet_model_spec(name, head)
    gaussian = spec["gaussian"]
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(inputs, 64, 7, 1 if gaussian else 2, name="conv1_conv")
    x = layers.ReLU(name="conv1_relu")(_bn(x, "conv1_bn"))
    if gaussian:
        x = GaussianPooling2D(2, name="conv1_gauss")(x)
        x = GaussianPooling2D(3, 2, padding=1, name="pool1_gauss")(x)
    else:
        # zeros are safe after the ReLU: PyTorch pads a max-pool with -inf
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, 2, name="pool1_pool")(x)
    last_stride = spec["last_stride"] or (2 if head == "gap" else 1)
    for stage, (num_blocks, width) in enumerate(zip(BLOCKS, WIDTHS), start=1):
        stride = 1 if stage == 1 else (last_stride if stage == 4 else 2)
        for index in range(num_blocks):
            x = bottleneck(
                x,
                width,
                stride if index == 0 else 1,
                gsop=stage in spec["gsop_stages"] and index == num_blocks - 1,
                gaussian=gaussian,
                name=f"conv{stage + 1}_block{index + 1}",
            )
    return keras.Model(inputs, x, name=name)


def bottleneck(x, width, stride, gsop, gaussian, name):
    """Bottleneck 1x1-3x3-1x1 (stride in the 3x3), optional GSoP before the addition.

    With `gaussian`, a strided block runs at stride 1 and pools the block's
    output with `GaussianPooling2D` after the residual ReLU.
    """
    filters = width * EXPANSION
    conv_stride = 1 if gaussian else stride
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(_conv(x, filters, 1, conv_stride, name=f"{name}_0_conv"), f"{name}_0_bn")
    y = layers.ReLU(name=f"{name}_1_relu")(_bn(_conv(x, width, 1, 1, name=f"{name}_1_conv"), f"{name}_1_bn"))
    y = _bn(_conv(y, width, 3, conv_stride, name=f"{name}_2_conv"), f"{name}_2_bn")
    y = layers.ReLU(name=f"{name}_2_relu")(y)
    y = _bn(_conv(y, filters, 1, 1, name=f"{name}_3_conv"), f"{name}_3_bn")
    if gsop:
        reduce_stride = 2 if width == GSOP_STRIDE_2_WIDTH else 1
        y = GSoPBlock("channel", reduce_stride=reduce_stride, name=f"{name}_gsop")(y)
    y = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))
    if gaussian and stride != 1:
        y = GaussianPooling2D(stride, name=f"{name}_gauss")(y)
    return y


def _conv(x, filters, kernel_size, stride, name):
    """Convolution without bias, zero-padded by `kernel_size // 2` on every side (PyTorch's `padding`)."""
    if kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    conv = layers.Conv2D(
        filters, kernel_size, strides=stride, padding="valid", use_bias=False, kernel_initializer=he_fan_out(), name=name
    )
    return conv(x)


def _bn(x, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)
