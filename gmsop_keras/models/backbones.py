"""Backbones for small images: the paper's modified ResNets and WRN-36-2.

Each backbone is a functional `keras.Model` from normalised images
`(B, H, W, 3)` to the last feature map `(B, H', W', C)`, built from the small
block functions below; the variants are rows of `BACKBONES`.

- `resnet18`, `resnet50`: the modified ResNets of the GM-SOP paper (Table 1).
  A 3x3 stem with 16 channels at stride 1 and no max-pool, then four stages
  ("conv2" .. "conv5") of post-activation basic blocks with 16/32/64/128
  channels; the paper's "ResNet-50" has 6 basic blocks per stage (not
  bottlenecks). About 0.70M / 2.27M parameters.
- `wrn-36-2`: the wide ResNet of Chrabaszcz et al. (2017) for ImageNet64x64. A
  3x3 stem with 16 channels, four groups of 4 pre-activation wide basic
  blocks with widths 16k * (1, 2, 4, 8) = 32/64/128/256 for k = 2, and a final
  BatchNorm + ReLU. About 5.93M parameters (6.19M with a 1000-way GAP
  classifier: the 6.2M of the paper's Table 3). The official GM-SOP code
  (`cnn_init_WRN_GM.m`) builds it instead as its post-activation ResNet with
  doubled widths; the parameter count is the same to 0.1%.

Strides are 1, 2, 2 and `last_stride` for the four stages: a 64x64 image gives
a 16x16 map with `last_stride=1` (the official GM-SOP code's choice for the
second-order heads) and an 8x8 map with `last_stride=2` (GAP heads).

Convolutions have no bias (a BatchNorm follows) and `he_normal` kernels; weight
decay is left to the optimizer. Every BatchNorm (the GSoP blocks' and Gaussian
pools' included) has epsilon 1e-5 and momentum `bn_momentum`, Keras'
convention: 0.9 by default. The official GM-SOP code gives the BatchNorm
moments a learning rate of 0.3 (`cnn_init_resnet_GM.m`), which its trainer
applies as `moments = (1 - 0.3) moments + 0.3 batch` (`accumulateGradients`,
`trainMethod "average"`, in `cnn_train_GM_dag.m`): Keras' `momentum=0.7`.

References:
    Wang, Gao, Xie, Zuo, Li. Global Gated Mixture of Second-order Pooling for
    Improving Deep Convolutional Neural Networks. NeurIPS 2018 (Table 1).
    Chrabaszcz, Loshchilov, Hutter. A Downsampled Variant of ImageNet as an
    Alternative to the CIFAR datasets. arXiv:1707.08819, 2017.
"""

import keras
from keras import layers

from gmsop_keras.layers import GaussianPooling2D, GSoPBlock

BACKBONES = {
    "resnet18": dict(block="basic", blocks=(2, 2, 2, 2), widths=(16, 32, 64, 128)),
    "resnet50": dict(block="basic", blocks=(6, 6, 6, 6), widths=(16, 32, 64, 128)),
    "wrn-36-2": dict(block="preact_wide", blocks=(4, 4, 4, 4), widths=(32, 64, 128, 256)),
}
# GSoP blocks reduce to this width (the authors' 128) or to the stage's, when narrower.
GSOP_REDUCED_DIM = 128
STEM_WIDTH = 16
STAGE_STRIDES = (1, 2, 2)  # stages 2..4; the last stage takes `last_stride`
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
# The official GM-SOP code's BatchNorm moments, in Keras' convention (see the module docstring).
OFFICIAL_BN_MOMENTUM = 0.7


def list_backbones():
    """Names accepted by `build_backbone` and `build_model(backbone=...)`."""
    return list(BACKBONES)


def backbone_spec(name):
    """The spec row of a backbone; raises `ValueError` listing the valid names."""
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone: {name!r}. Valid backbones: {', '.join(BACKBONES)}."
        )
    return BACKBONES[name]


def build_backbone(
    name, input_shape=(64, 64, 3), last_stride=2, gsop_stages=(), gaussian_pooling=False, bn_momentum=BN_MOMENTUM,
    conv1_bias=False, symmetric_padding=False,
):
    """Builds a backbone as a functional model from images to feature maps.

    Args:
        name: one of `list_backbones()`.
        input_shape: `(H, W, 3)` of the (already normalised) images.
        last_stride: stride of the first block of the last stage, 1 or 2.
        gsop_stages: stages (1-4) whose last block gets a channel-mode
            `GSoPBlock` on its residual branch before the addition (GSoP-Net1:
            `(1, 2, 3, 4)`; GSoP-Net2: `(1, 2, 3)`).
        gaussian_pooling: every strided block runs at stride 1 and pools its
            output with `GaussianPooling2D` after the residual (iSP-Gaussian).
            The small-image stems are stride 1 without max-pooling already.
        bn_momentum: momentum of every BatchNorm, Keras' convention (0.9;
            the official GM-SOP code's is `OFFICIAL_BN_MOMENTUM` = 0.7).
        conv1_bias: the stem convolution has a bias (the official
            MatConvNet models: `cnn_init_resnet_GM.m`'s `conv1` with `'bias', true`).
        symmetric_padding: strided 3x3 convolutions pad 1 on every side, as
            MatConvNet's `'pad', 1` (a `ZeroPadding2D` named `<conv>_pad`, then
            a `"valid"` convolution); Keras' `"same"` pads an even map 0 before
            and 1 after, which samples other positions.

    Returns:
        A `keras.Model` named after the backbone, output `(B, H', W', C)` with
        `C = widths[-1]` (128 for the ResNets, 256 for WRN-36-2).
    """
    spec = backbone_spec(name)
    if last_stride not in (1, 2):
        raise ValueError(f"`last_stride` must be 1 or 2. Received: last_stride={last_stride}")
    gsop_stages = tuple(gsop_stages)
    if any(stage not in (1, 2, 3, 4) for stage in gsop_stages):
        raise ValueError(f"`gsop_stages` must name stages 1-4. Received: gsop_stages={gsop_stages}")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 <= bn_momentum < 1:
        raise ValueError(f"`bn_momentum` must be in [0, 1) (Keras' convention). Received: bn_momentum={bn_momentum!r}")
    strides = (*STAGE_STRIDES, last_stride)
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv(inputs, STEM_WIDTH, 3, 1, name="conv1_conv", use_bias=conv1_bias)
    if spec["block"] == "basic":
        x = _bn_relu(x, name="conv1", momentum=bn_momentum)
        block_fn = basic_block
    else:
        block_fn = preact_wide_block
    for stage, (num_blocks, width, stride) in enumerate(
        zip(spec["blocks"], spec["widths"], strides), start=2
    ):
        for index in range(num_blocks):
            block_stride = stride if index == 0 else 1
            name_ = f"conv{stage}_block{index + 1}"
            gsop = stage - 1 in gsop_stages and index == num_blocks - 1
            x = block_fn(
                x, width, 1 if gaussian_pooling else block_stride, name=name_, gsop=gsop, bn_momentum=bn_momentum,
                symmetric_padding=symmetric_padding,
            )
            if gaussian_pooling and block_stride != 1:
                x = GaussianPooling2D(block_stride, momentum=bn_momentum, name=f"{name_}_gauss")(x)
    if spec["block"] == "preact_wide":
        x = _bn_relu(x, name="post", momentum=bn_momentum)
    return keras.Model(inputs, x, name=name)


def _gsop(x, filters, name, momentum):
    return GSoPBlock(
        "channel", reduced_dim=min(GSOP_REDUCED_DIM, filters), momentum=momentum, name=f"{name}_gsop"
    )(x)


def basic_block(x, filters, stride, name, gsop=False, bn_momentum=BN_MOMENTUM, symmetric_padding=False):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, add, ReLU.

    The shortcut is a 1x1 convolution + BN where the shape changes.
    """
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, name=f"{name}_0_conv", symmetric=symmetric_padding)
        shortcut = _bn(shortcut, name=f"{name}_0_bn", momentum=bn_momentum)
    x = _conv(x, filters, 3, stride, name=f"{name}_1_conv", symmetric=symmetric_padding)
    x = _bn_relu(x, name=f"{name}_1", momentum=bn_momentum)
    x = _conv(x, filters, 3, 1, name=f"{name}_2_conv")
    x = _bn(x, name=f"{name}_2_bn", momentum=bn_momentum)
    if gsop:
        x = _gsop(x, filters, name, bn_momentum)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def preact_wide_block(x, filters, stride, name, gsop=False, bn_momentum=BN_MOMENTUM, symmetric_padding=False):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, add.

    Where the shape changes the shortcut is a 1x1 convolution of the
    pre-activated input, as in Zagoruyko & Komodakis' WRN.
    """
    preact = _bn_relu(x, name=f"{name}_0", momentum=bn_momentum)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(preact, filters, 1, stride, name=f"{name}_0_conv", symmetric=symmetric_padding)
    x = _conv(preact, filters, 3, stride, name=f"{name}_1_conv", symmetric=symmetric_padding)
    x = _bn_relu(x, name=f"{name}_1", momentum=bn_momentum)
    x = _conv(x, filters, 3, 1, name=f"{name}_2_conv")
    if gsop:
        x = _gsop(x, filters, name, bn_momentum)
    return layers.Add(name=f"{name}_add")([shortcut, x])


def _conv(x, filters, kernel_size, stride, name, use_bias=False, symmetric=False):
    """A convolution padded "same"; `symmetric`: a strided one pads (k - 1) / 2 on every side (MatConvNet)."""
    padding = "same"
    if symmetric and stride != 1 and kernel_size > 1:
        x = layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def _bn(x, name, momentum=BN_MOMENTUM):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name)(x)


def _bn_relu(x, name, momentum=BN_MOMENTUM):
    x = _bn(x, name=f"{name}_bn", momentum=momentum)
    return layers.ReLU(name=f"{name}_relu")(x)
