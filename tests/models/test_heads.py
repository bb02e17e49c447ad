"""Head names: parsing, validation, and the representation each one builds."""

import keras
import numpy as np
import pytest

from gmsop_keras import build_model, list_heads
from gmsop_keras.models import HeadSpec, parse_head
from gmsop_keras.models.heads import SEED_FAMILY_HEADS, SEED_HEADS, apply_head


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gap", HeadSpec("gap", "gap")),
        ("gap-512", HeadSpec("gap-512", "gap", parametric=True, units=512)),
        ("gap-8256", HeadSpec("gap-8256", "gap", parametric=True, units=8256)),
        ("sr-sop", HeadSpec("sr-sop", "sop")),
        ("psr-sop", HeadSpec("psr-sop", "sop", parametric=True)),
        ("ave-gap-16", HeadSpec("ave-gap-16", "gap", parametric=True, num_components=16)),
        ("ave-sop-16", HeadSpec("ave-sop-16", "sop", parametric=True, num_components=16)),
        ("gm-gap-16-8", HeadSpec("gm-gap-16-8", "gap", True, num_components=16, top_k=8)),
        ("gm-sop-16-8", HeadSpec("gm-sop-16-8", "sop", True, num_components=16, top_k=8)),
        ("gm-sop-32-4", HeadSpec("gm-sop-32-4", "sop", True, num_components=32, top_k=4)),
        ("gm-gap-128-32", HeadSpec("gm-gap-128-32", "gap", True, num_components=128, top_k=32)),
        ("ave-sop-4", HeadSpec("ave-sop-4", "sop", True, num_components=4)),
        ("gm-sop-16-16", HeadSpec("gm-sop-16-16", "sop", True, num_components=16, top_k=16)),
        ("netvlad-64", HeadSpec("netvlad-64", "netvlad", clusters=64)),
        ("netvlad-8", HeadSpec("netvlad-8", "netvlad", clusters=8)),
        ("sg-moe-16-8", HeadSpec("sg-moe-16-8", "moe", True, num_components=16, top_k=8)),
        ("sg-moe-4-1", HeadSpec("sg-moe-4-1", "moe", True, num_components=4, top_k=1)),
    ],
)
def test_parse_head(name, expected):
    assert parse_head(name) == expected


def test_parse_head_properties():
    assert parse_head("gm-sop-16-8").second_order and parse_head("gm-sop-16-8").is_mixture
    assert parse_head("sr-sop").second_order and not parse_head("sr-sop").is_mixture
    assert not parse_head("gap-512").second_order and not parse_head("gap-512").is_mixture
    assert parse_head("ave-gap-16").is_mixture and parse_head("ave-gap-16").top_k is None


def test_list_heads_are_the_papers_rows_and_all_parse():
    assert list_heads() == [
        "gap", "gap-512", "gap-8256", "ave-gap-16", "gm-gap-16-8",
        "sr-sop", "psr-sop", "ave-sop-16", "gm-sop-16-8",
        "isqrt-256", "3g-256",  # the seed family's heads (GSoP-Net2, ResNet50-3G)
        "netvlad-64", "sg-moe-16-8",  # Table 3's other counterparts
    ]
    assert [parse_head(name).name for name in list_heads()] == list_heads()


@pytest.mark.parametrize(
    "name, message",
    [
        ("gm-sop-4-8", r"K must be <= N.*N=4, K=8"),
        ("gm-gap-0-0", r"N must be a positive integer"),
        ("gm-sop-16-0", r"K must be a positive integer"),
        ("gap-0", r"D must be a positive integer"),
        ("gm-sop-16", r"gm-sop-N-K"),
        ("ave-sop-16-8", r"ave-sop-N"),
        ("netvlad-0", r"N must be a positive integer"),
        ("sg-moe-8-9", r"K must be <= N.*N=8, K=9"),
        ("sg-moe-16", r"sg-moe-N-K"),
    ],
)
def test_parse_head_rejects_impossible_numbers(name, message):
    with pytest.raises(ValueError, match=message):
        parse_head(name)


@pytest.mark.parametrize(
    "name", ["gmsop", "GM-SOP-16-8", "gm-sop-16-8-2", "sop", "gap-", "gm_sop_16_8", 3, "sg-gap-16-8", "gm-moe-16-8",
             "ave-moe-16", "netvlad"],
)
def test_unknown_head_lists_the_valid_names(name):
    with pytest.raises(ValueError) as error:
        parse_head(name)
    for valid in list_heads() + ["gm-sop-N-K", "ave-gap-N", "netvlad-N", "sg-moe-N-K"]:
        assert valid in str(error.value)


def test_build_model_rejects_an_unknown_head():
    with pytest.raises(ValueError, match="Valid heads: gap, gap-512"):
        build_model("resnet18", "gm-sop", num_classes=4, input_shape=(16, 16, 3))


# The representation's width (the classifier's input) for each head, per backbone
# (ResNets end with 128 channels, WRN-36-2 with 256).
REPRESENTATION_DIMS = {
    "gap": {"resnet18": 128, "wrn-36-2": 256},
    "gap-512": 512,
    "gap-8256": 8256,
    "ave-gap-16": 512,
    "gm-gap-16-8": 512,
    "sr-sop": 8256,
    "psr-sop": 8256,
    "ave-sop-16": 8256,
    "gm-sop-16-8": 8256,
    "netvlad-64": {"resnet18": 64 * 128, "wrn-36-2": 64 * 256},
    "sg-moe-16-8": 512,
}


@pytest.mark.parametrize("backbone", ["resnet18", "wrn-36-2"])
@pytest.mark.parametrize("head", list(REPRESENTATION_DIMS))
def test_representation_dim(backbone, head):
    model = build_model(backbone, head, num_classes=7, input_shape=(16, 16, 3))
    expected = REPRESENTATION_DIMS[head]
    expected = expected[backbone] if isinstance(expected, dict) else expected
    assert model.get_layer("logits").input.shape[-1] == expected
    assert model.output.shape == (None, 7)


def test_second_order_heads_reduce_a_wide_map_to_128_channels():
    model = build_model("wrn-36-2", "sr-sop", num_classes=3, input_shape=(16, 16, 3))
    assert model.get_layer("head_reduce_conv").output.shape[-1] == 128
    # First-order heads and the 128-channel ResNets have no reduction.
    for backbone, head in [("wrn-36-2", "gm-gap-16-8"), ("resnet18", "gm-sop-16-8")]:
        model = build_model(backbone, head, num_classes=3, input_shape=(16, 16, 3))
        assert "head_reduce_conv" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "backbone, head, dropout",
    [
        ("resnet18", "gm-sop-16-8", 0.2),
        ("resnet18", "gm-gap-16-8", 0.2),
        ("resnet50", "sr-sop", 0.2),
        ("wrn-36-2", "gm-gap-16-8", 0.2),
        ("wrn-36-2", "gm-sop-16-8", 0.4),
    ],
)
def test_default_dropout(backbone, head, dropout):
    model = build_model(backbone, head, num_classes=3, input_shape=(16, 16, 3))
    assert model.get_layer("dropout").rate == dropout


def test_gap_head_is_the_plain_resnet_classifier():
    model = build_model("resnet18", "gap", num_classes=3, input_shape=(16, 16, 3))
    names = [layer.name for layer in model.layers]
    assert names[-2:] == ["gap", "logits"]
    assert "dropout" not in names and "representation_bn" not in names


@pytest.mark.parametrize("head, layer", [("netvlad-64", "netvlad"), ("sg-moe-16-8", "experts")])
def test_table3_heads_train_on_a_fixed_batch(head, layer):
    import tensorflow as tf

    # No noise and no dropout: the training-mode loss on the batch is then a deterministic function of the weights.
    gate = dict(noise="none") if head.startswith("sg-moe") else {}  # NetVLAD has no gate (a noise option is refused)
    model = build_model("resnet18", head, num_classes=3, input_shape=(16, 16, 3), seed=0, dropout=0.0, **gate)
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3)).astype("float32")
    labels = np.arange(6) % 3
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = loss_fn(labels, logits) + sum(model.losses)
    gradients = tape.gradient(loss, model.trainable_weights)
    head_weights = [w.path for w in model.get_layer(layer).trainable_weights]
    assert head_weights, "the head has trainable weights"
    for weight, gradient in zip(model.trainable_weights, gradients):
        assert gradient is not None, weight.path
        assert np.isfinite(gradient.numpy()).all(), weight.path
        if weight.path in head_weights and not weight.path.endswith("noise_kernel"):
            assert np.abs(gradient.numpy()).max() > 0, weight.path
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=loss_fn)
    losses = [float(model.train_on_batch(images, labels)) for _ in range(10)]
    print(head, "training losses:", [round(v, 3) for v in losses])
    assert np.mean(losses[-3:]) < 0.6 * losses[0]


@pytest.mark.parametrize("head, layer", [("netvlad-64", "netvlad"), ("sg-moe-16-8", "experts")])
def test_table3_heads_stay_float32_under_mixed_precision(head, layer):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("resnet18", head, num_classes=3, input_shape=(16, 16, 3))
        assert model.get_layer("resnet18").compute_dtype == "float16" or any(
            sub.compute_dtype == "float16" for sub in model.get_layer("resnet18").layers)
        for name in [layer, "representation_bn", "logits"]:
            assert model.get_layer(name).compute_dtype == "float32"
            assert model.get_layer(name).variable_dtype == "float32"
        logits = model.predict_on_batch(np.full((2, 16, 16, 3), 128.0, "float32"))
        assert logits.dtype == np.float32 and np.isfinite(logits).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_seed_heads_are_apply_heads_on_every_backbone():
    """isqrt-256 / 3g-256: the authors' reduction to 256 (PyTorch's BatchNorm), no BatchNorm or
    Dropout before the classifier, and their own iteration counts; Keras' names on a small backbone."""
    assert set(SEED_HEADS) == set(SEED_FAMILY_HEADS)
    model = build_model("resnet18", "isqrt-256", num_classes=3, input_shape=(16, 16, 3), bn_momentum=0.7)
    names = [layer.name for layer in model.layers]
    assert names[-5:] == ["reduce_conv", "reduce_bn", "reduce_relu", "isqrt_cov", "logits"]
    assert model.get_layer("reduce_bn").momentum == 0.9 and model.get_layer("reduce_bn").epsilon == 1e-5
    assert model.get_layer("isqrt_cov").num_iterations == 3
    assert model.get_layer("logits").input.shape[-1] == 256 * 257 // 2


def test_the_torch_convention_names_and_initialises_as_pytorch():
    features = keras.Input((4, 4, 64))
    logits = apply_head(features, parse_head("gap"), 10, convention="torch")
    model = keras.Model(features, logits)
    assert [layer.name for layer in model.layers[1:]] == ["avg_pool", "predictions"]
    kernel, bias = (np.asarray(w) for w in model.get_layer("predictions").weights)
    assert np.abs(kernel).max() <= 64**-0.5 and np.abs(bias).max() <= 64**-0.5 and np.abs(bias).max() > 0
    with pytest.raises(ValueError, match="`convention` must be one of keras, torch. Received: convention='tf'"):
        apply_head(features, parse_head("gap"), 10, convention="tf")
