"""Backbones: the paper's modified ResNets (Table 1) and WRN-36-2."""

import keras
import numpy as np
import pytest

from gmsop_keras import build_model, list_backbones
from gmsop_keras.models import BACKBONES, build_backbone

# Exact parameter counts (BatchNorm moving statistics included, as MatConvNet
# counts its BN moments). Backbone only: no classifier.
BACKBONE_PARAMS = {"resnet18": 702_576, "resnet50": 2_276_976, "wrn-36-2": 5_934_576}


def test_list_backbones_is_the_spec_table():
    assert list_backbones() == ["resnet18", "resnet50", "wrn-36-2"] == list(BACKBONES)


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_parameter_count(name):
    assert build_backbone(name).count_params() == BACKBONE_PARAMS[name]


def _convs(model, kernel_size):
    return [
        layer for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (kernel_size, kernel_size)
    ]


@pytest.mark.parametrize("name, num_3x3, num_1x1", [("resnet18", 17, 3), ("resnet50", 49, 3), ("wrn-36-2", 33, 4)])
def test_depth(name, num_3x3, num_1x1):
    """ResNet-18: 17 convs + the classifier; ResNet-50: 49 + 1 (6 basic blocks per stage)."""
    model = build_backbone(name)
    assert len(_convs(model, 3)) == num_3x3
    assert len(_convs(model, 1)) == num_1x1
    for layer in _convs(model, 3) + _convs(model, 1):
        assert not layer.use_bias


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_stage_widths_follow_table_1(name):
    model = build_backbone(name, input_shape=(64, 64, 3), last_stride=2)
    assert model.get_layer("conv1_conv").filters == 16
    assert model.get_layer("conv1_conv").strides == (1, 1)
    blocks = BACKBONES[name]["blocks"][0]
    expected = {2: (64, 16), 3: (32, 32), 4: (16, 64), 5: (8, 128)}
    for stage, (size, width) in expected.items():
        shape = model.get_layer(f"conv{stage}_block{blocks}_out").output.shape
        assert shape == (None, size, size, width)


def test_wrn_groups_are_preactivation_wide_blocks():
    model = build_backbone("wrn-36-2", input_shape=(64, 64, 3), last_stride=2)
    for stage, (size, width) in {2: (64, 32), 3: (32, 64), 4: (16, 128), 5: (8, 256)}.items():
        assert model.get_layer(f"conv{stage}_block4_add").output.shape == (None, size, size, width)
    # Pre-activation: each block starts with BN + ReLU; the network ends with BN + ReLU.
    assert model.get_layer("conv3_block1_0_bn").input.shape == (None, 64, 64, 32)
    assert model.layers[-1].name == "post_relu"


@pytest.mark.parametrize(
    "input_size, last_stride, output_size",
    [(64, 1, 16), (64, 2, 8), (96, 1, 24), (96, 2, 12), (100, 1, 25), (100, 2, 13), (32, 2, 4)],
)
@pytest.mark.parametrize("name", list_backbones())
def test_feature_map_size(name, input_size, last_stride, output_size):
    model = build_backbone(name, input_shape=(input_size, input_size, 3), last_stride=last_stride)
    assert model.output.shape[1:3] == (output_size, output_size)


@pytest.mark.parametrize(
    "head, size", [("gm-sop-16-8", 16), ("sr-sop", 16), ("psr-sop", 16), ("ave-sop-16", 16),
                   ("gap", 8), ("gap-512", 8), ("gap-8256", 8), ("gm-gap-16-8", 8), ("ave-gap-16", 8)]
)
def test_second_order_heads_keep_16x16_maps(head, size):
    model = build_model("resnet18", head, num_classes=10)
    assert model.get_layer("resnet18").output.shape == (None, size, size, 128)


def test_last_stride_overrides_the_default():
    model = build_model("resnet18", "gm-sop-16-8", num_classes=10, last_stride=2)
    assert model.get_layer("resnet18").output.shape == (None, 8, 8, 128)
    model = build_model("wrn-36-2", "gap", num_classes=10, input_shape=(100, 100, 3), last_stride=1)
    assert model.get_layer("wrn-36-2").output.shape == (None, 25, 25, 256)


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ValueError, match="Valid backbones: resnet18, resnet50, wrn-36-2"):
        build_model("resnet34", "gap")
    with pytest.raises(ValueError, match="last_stride"):
        build_backbone("resnet18", last_stride=3)


@pytest.mark.parametrize("name", list_backbones())
def test_seed_family_options_keep_the_map_and_add_only_their_layers(name):
    plain = build_backbone(name, input_shape=(32, 32, 3), last_stride=2)
    gsop = build_backbone(name, input_shape=(32, 32, 3), last_stride=2, gsop_stages=(1, 2, 3, 4))
    gauss = build_backbone(name, input_shape=(32, 32, 3), last_stride=2, gaussian_pooling=True)
    assert plain.output.shape == gsop.output.shape == gauss.output.shape == (None, 4, 4, plain.output.shape[-1])

    blocks = [layer for layer in gsop.layers if layer.name.endswith("_gsop")]
    assert [b.name.split("_")[0] for b in blocks] == ["conv2", "conv3", "conv4", "conv5"]
    assert all(b.name.startswith(f"{b.name.split('_')[0]}_block{BACKBONES[name]['blocks'][0]}") for b in blocks)
    added = sum(int(np.prod(w.shape)) for b in blocks for w in b.weights)
    assert gsop.count_params() - plain.count_params() == added

    pools = [layer for layer in gauss.layers if layer.name.endswith("_gauss")]
    assert len(pools) == 3  # the three strided blocks (last_stride 2)
    strides = [layer.strides for layer in gauss.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(s == (1, 1) for s in strides), "Gaussian pooling replaces every strided convolution"


def test_seed_family_options_train_through_build_model():
    from gmsop_keras import build_model

    model = build_model("resnet18", "gap", num_classes=3, input_shape=(16, 16, 3),
                        gsop_stages=(1, 2, 3), gaussian_pooling=True)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("float32")
    assert np.isfinite(model.train_on_batch(images, np.arange(4) % 3))
    with pytest.raises(ValueError, match="gsop_stages"):
        build_backbone("resnet18", gsop_stages=(5,))


def test_symmetric_padding_and_conv1_bias_are_matconvnets_and_off_by_default():
    plain = build_backbone("resnet18", input_shape=(16, 16, 3))
    assert not plain.get_layer("conv1_conv").use_bias
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in plain.layers)
    trunk = build_backbone("resnet18", input_shape=(16, 16, 3), conv1_bias=True, symmetric_padding=True)
    assert trunk.get_layer("conv1_conv").use_bias
    assert trunk.count_params() == BACKBONE_PARAMS["resnet18"] + 16  # the stem's bias, nothing else
    # Only the strided 3x3 convolutions are padded apart: [pad, stride] of vl_nnconv, 1 on every side.
    assert sorted(layer.name for layer in trunk.layers if isinstance(layer, keras.layers.ZeroPadding2D)) == [
        f"conv{stage}_block1_1_conv_pad" for stage in (3, 4, 5)]
    layer = trunk.get_layer("conv3_block1_1_conv")
    sub = keras.Model(trunk.get_layer("conv2_block2_out").output, layer.output)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16))
    kernel = np.asarray(layer.kernel, dtype=np.float64)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # windows start at -1, 1, 3, ... (Keras "same": 0, 2, ...)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2]
    expected = np.einsum("bhwcij,ijck->bhwk", windows, kernel)
    np.testing.assert_allclose(np.asarray(sub(x.astype("float32"))), expected, rtol=1e-4, atol=1e-4)
