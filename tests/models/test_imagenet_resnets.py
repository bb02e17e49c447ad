"""ImageNet ResNet-50 variants: parameter counts pinned to the authors', forward shapes, names."""

import keras
import numpy as np
import pytest

from gmsop_keras import build_model
from gmsop_keras.layers import GaussianPooling2D, GSoPBlock
from gmsop_keras.models.imagenet_resnets import build_imagenet_model, list_imagenet_models

# Trainable parameters of the authors' PyTorch models (millions). 3G-Net's count has no bias in
# the last 1x1 convolution of its three stages (`atmap2`, bias=False in the authors' code).
PUBLISHED_PARAMETERS = {
    "resnet50-imagenet": 25.56,
    "gsop1-resnet50": 28.29,
    "gsop2-resnet50": 58.28,
    "gauss-resnet50": 33.85,
    "resnet50-3g": 57.97,
}


def trainable_parameters(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_every_model_has_a_published_count():
    assert sorted(list_imagenet_models()) == sorted(PUBLISHED_PARAMETERS)


@pytest.mark.parametrize("name", list_imagenet_models())
def test_parameter_count_within_one_percent(name):
    model = build_imagenet_model(name, input_shape=(64, 64, 3))  # counts do not depend on the size
    assert trainable_parameters(model) / 1e6 == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.01)


@pytest.mark.parametrize(
    "name, head, representation",
    [("gsop1-resnet50", None, 2048), ("gauss-resnet50", None, 2048), ("resnet50-imagenet", "isqrt-256", 32896)],
)
def test_forward_gives_logits(name, head, representation):
    model = build_imagenet_model(name, num_classes=5, input_shape=(32, 32, 3), head=head)
    assert model.get_layer("predictions").kernel.shape == (representation, 5)
    logits = np.asarray(model(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")))
    assert logits.shape == (2, 5) and np.isfinite(logits).all()


def test_unknown_names_are_listed():
    with pytest.raises(ValueError, match="resnet50-imagenet"):
        build_imagenet_model("resnet51")
    with pytest.raises(ValueError, match="head"):
        build_imagenet_model("resnet50-imagenet", head="gm-sop-16-8")


def all_layers(model):
    return list(model._flatten_layers(include_self=False))


@pytest.fixture(scope="module")
def models_64():
    """The five models at 64x64 (maps are 1/16 of a 224x224 image's at every stage)."""
    return {name: build_imagenet_model(name, num_classes=3, input_shape=(64, 64, 3)) for name in list_imagenet_models()}


@pytest.mark.parametrize("name", list_imagenet_models())
def test_batch_norm_is_pytorchs_everywhere(name, models_64):
    """eps 1e-5, momentum 0.1 in PyTorch's convention (0.9 in Keras'), also inside the seed layers."""
    norms = [layer for layer in all_layers(models_64[name]) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)


@pytest.mark.parametrize("name", list_imagenet_models())
def test_every_convolution_pads_symmetrically(name, models_64):
    """PyTorch pads both sides; Keras' 'same' pads only the bottom/right of an even map at stride 2
    (a whole ResNet-50 differs by 5% because of it). Every k x k convolution follows a
    ZeroPadding2D of k // 2 on every side and is 'valid'."""
    model = models_64[name]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) >= 53 and all(conv.padding == "valid" for conv in convs)
    for conv in convs:
        k = conv.kernel_size[0]
        if k > 1:
            pad = model.get_layer(f"{conv.name}_pad")
            assert pad.padding == ((k // 2, k // 2), (k // 2, k // 2))


def test_stem_and_strided_convolution_match_symmetric_padding():
    """The 7x7/2 stem on an even image equals a float64 convolution of the image padded by 3 on
    every side (with 'same' it would be shifted by one pixel)."""
    model = build_imagenet_model("resnet50-imagenet", num_classes=3, input_shape=(16, 16, 3))
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype("float32")
    stem = keras.Model(model.input, model.get_layer("conv1_conv").output)
    got = np.asarray(stem(x))
    kernel = np.asarray(model.get_layer("conv1_conv").kernel, dtype="float64")
    padded = np.pad(x[0].astype("float64"), ((3, 3), (3, 3), (0, 0)))
    windows = [[padded[2 * i : 2 * i + 7, 2 * j : 2 * j + 7] for j in range(8)] for i in range(8)]
    want = np.einsum("ijhwc,hwco->ijo", np.array(windows), kernel)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name, last_map",
    [("resnet50-imagenet", 2), ("gsop1-resnet50", 4), ("gsop2-resnet50", 4), ("gauss-resnet50", 2), ("resnet50-3g", 4)],
)
def test_last_stage_strides_are_the_authors(name, last_map, models_64):
    """At 224x224: 7x7 for torchvision and Gaussian pooling, 14x14 for GSoP-Net1 (the authors'
    layer4 has stride 1 and an average pool of 14), GSoP-Net2 and 3G-Net. Here 64x64: 2 and 4."""
    assert models_64[name].get_layer("conv5_block3_out").output.shape[1:3] == (last_map, last_map)


def test_gsop_blocks_reduce_with_stride_2_only_in_the_64_plane_stage(models_64):
    for name, stages in (("gsop1-resnet50", (2, 3, 4, 5)), ("gsop2-resnet50", (2, 3, 4))):
        blocks = [layer for layer in models_64[name].layers if isinstance(layer, GSoPBlock)]
        assert [int(b.name[4]) for b in blocks] == list(stages)  # the last block of each stage
        assert [b.reduce_stride for b in blocks] == [2] + [1] * (len(stages) - 1)


def test_gaussian_stem_pools_2x2_then_3x3_stride_2_padding_1(models_64):
    model = models_64["gauss-resnet50"]
    first, second = model.get_layer("conv1_gauss"), model.get_layer("pool1_gauss")
    assert (first.pool_size, first.strides, first.padding) == ((2, 2), (2, 2), "valid")
    assert (second.pool_size, second.strides, second.padding) == ((3, 3), (2, 2), 1)
    assert second.output.shape[1:3] == (16, 16)  # 64 -> 64 (stride-1 stem) -> 32 -> 16
    pools = [layer.name for layer in model.layers if isinstance(layer, GaussianPooling2D)]
    assert pools == ["conv1_gauss", "pool1_gauss", "conv3_block1_gauss", "conv4_block1_gauss", "conv5_block1_gauss"]


def test_convolutions_are_initialised_as_the_authors():
    """kaiming_normal_(mode='fan_out', nonlinearity='relu'): std sqrt(2 / (k * k * out))."""
    model = build_imagenet_model("resnet50-imagenet", num_classes=3, input_shape=(32, 32, 3))
    kernel = np.asarray(model.get_layer("conv5_block2_2_conv").kernel)  # 3x3, 512 -> 512
    assert kernel.std() == pytest.approx((2.0 / (9 * 512)) ** 0.5, rel=0.02)
    classifier = np.asarray(model.get_layer("predictions").kernel)  # nn.Linear: U(+-1/sqrt(2048))
    assert np.abs(classifier).max() <= 2048**-0.5 and classifier.std() == pytest.approx((3 * 2048) ** -0.5, rel=0.1)


def test_the_head_is_the_one_head_path():
    """build_model puts `apply_head`'s layers on the nested trunk; build_imagenet_model puts the same
    layers, by name and initial value, on the same trunk flat (the weight converter reads both)."""
    keras.utils.set_random_seed(0)
    flat = build_imagenet_model("gsop2-resnet50", num_classes=3, input_shape=(32, 32, 3))
    keras.utils.set_random_seed(0)
    model = build_model("gsop2-resnet50", num_classes=3, input_shape=(32, 32, 3))
    head = ["reduce_conv", "reduce_bn", "reduce_relu", "isqrt_cov", "predictions"]
    assert [layer.name for layer in model.layers] == ["image", "normalization", "gsop2-resnet50", *head]
    assert [layer.name for layer in flat.layers[-len(head):]] == head
    assert model.get_layer("isqrt_cov").num_iterations == 3  # GSoP-Net2's, not the paper's 5
    assert len(flat.weights) == len(model.weights)
    for ours, theirs in zip(flat.weights, model.weights):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
