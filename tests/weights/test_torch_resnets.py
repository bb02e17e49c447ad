"""The authors' PyTorch state_dicts -> Keras weights: names, layouts, refusals, and equal logits."""

import numpy as np
import pytest

from gmsop_keras import build_model
from gmsop_keras.models.imagenet_resnets import build_imagenet_model, list_imagenet_models
from gmsop_keras.ops import triu_vectorize
from gmsop_keras.weights.torch_checkpoint import CheckpointMismatchError, unwrap_state_dict
from gmsop_keras.weights.torch_resnets import convert_state_dict, torch_prefix, triangle_permutation, weight_plan

TORCH_REASON = "torch is not installed (pip install torch==2.13.0): the PyTorch reference networks need it"
SIZE = 64  # fast variant; the 224x224 comparison is torchvision's ResNet-50 below


def relative_error(got, want, bias):
    """max |got - want| over the largest logit less its bias (3G-Net's logits are mostly bias)."""
    return np.abs(got - want).max() / np.abs(want - bias).max()


def test_triangle_permutation_maps_the_column_major_order_to_ours():
    a = np.random.default_rng(0).standard_normal((5, 5))
    a = a + a.T
    rows, cols = np.tril_indices(5)  # the authors' `triu().t()` mask: x[r, c], c <= r, row by row
    column_major = a[rows, cols]
    ours = np.asarray(triu_vectorize(a[None].astype("float32")))[0]
    np.testing.assert_allclose(column_major[triangle_permutation(5)], ours, rtol=1e-6)
    assert sorted(triangle_permutation(5)) == list(range(15))


def test_layer_names_map_to_the_authors_module_names():
    table = {
        "conv1_conv": "conv1",
        "conv1_bn": "bn1",
        "conv2_block1_0_conv": "layer1.0.downsample.0",
        "conv2_block1_0_bn": "layer1.0.downsample.1",
        "conv4_block6_3_bn": "layer3.5.bn3",
        "conv5_block3_2_conv": "layer4.2.conv2",
        "conv2_block3_gsop": "layer1.2",
        "conv3_block1_gauss": "layer2.0.pooling",
        "conv1_gauss": "pool1",
        "pool1_gauss": "pool",
        "reduce_conv": "layer_reduce",
        "reduce_bn": "layer_reduce_bn",
        "predictions": "fc",
    }
    assert {name: torch_prefix(name) for name in table} == table


@pytest.mark.parametrize("name", list_imagenet_models())
def test_every_weight_reads_one_tensor(name):
    model = build_imagenet_model(name, num_classes=3, input_shape=(32, 32, 3))
    plan = weight_plan(model, name)
    assert len(plan) == len(model.weights)
    assert len({id(variable) for variable, *_ in plan}) == len(model.weights)
    assert len({torch_name for _, torch_name, *_ in plan}) == len(plan)


def test_build_models_nested_trunk_reads_the_same_tensors():
    """`build_model` nests the trunk and applies the head beside it: the plan opens the trunk."""
    flat = build_imagenet_model("resnet50-3g", num_classes=3, input_shape=(32, 32, 3))
    nested = build_model("resnet50-3g", num_classes=3, input_shape=(32, 32, 3))
    names = [torch_name for _, torch_name, *_ in weight_plan(nested, "resnet50-3g")]
    assert names == [torch_name for _, torch_name, *_ in weight_plan(flat, "resnet50-3g")]
    assert len(names) == len(nested.weights) and names[-2:] == ["fc.weight", "fc.bias"]


def synthetic_state_dict(name, head=None):
    """A state_dict of the authors' names and shapes for `name`, as the plan expects it."""
    model = build_imagenet_model(name, num_classes=3, input_shape=(32, 32, 3), head=head)
    return {torch_name: np.zeros(shape, "float32") for _, torch_name, shape, _ in weight_plan(model, name, head)}


def test_a_wrong_checkpoint_is_refused_with_what_is_missing_extra_or_misshaped():
    state = synthetic_state_dict("resnet50-imagenet")
    del state["layer2.1.bn2.running_var"]
    state["layer2.1.se.fc.weight"] = np.zeros((4, 4), "float32")
    state["layer3.0.conv2.weight"] = np.zeros((256, 256, 1, 1), "float32")
    with pytest.raises(CheckpointMismatchError) as error:
        convert_state_dict(state, "resnet50-imagenet", input_shape=(32, 32, 3))
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing: layer2.1.bn2.running_var" in message
    assert "1 unexpected: layer2.1.se.fc.weight" in message
    assert "1 mis-shaped: layer3.0.conv2.weight (256, 256, 1, 1) != (256, 256, 3, 3)" in message


def test_another_models_checkpoint_is_refused():
    state = synthetic_state_dict("gsop2-resnet50")
    with pytest.raises(CheckpointMismatchError, match=r"unexpected: .*conv_for_DR") as error:
        convert_state_dict(state, "resnet50-imagenet", head="isqrt-256", input_shape=(32, 32, 3))
    assert "layer1.2.row_conv_group.weight" in str(error.value)


def test_wrapped_and_data_parallel_checkpoints_unwrap():
    wrapped = {"epoch": 3, "state_dict": {"module.conv1.weight": 1, "module.fc.bias": 2}, "optimizer": {}}
    assert unwrap_state_dict(wrapped) == {"conv1.weight": 1, "fc.bias": 2}
    with pytest.raises(CheckpointMismatchError, match="state_dict"):
        unwrap_state_dict([1, 2])


def test_num_batches_tracked_is_read_and_dropped():
    state = synthetic_state_dict("resnet50-imagenet")
    state["bn1.num_batches_tracked"] = np.array(7)
    model = convert_state_dict(state, "resnet50-imagenet", input_shape=(32, 32, 3))
    assert model.get_layer("predictions").kernel.shape == (2048, 3)


def compare_with_reference(name, head, size, batch=2, num_classes=10):
    """Converts the reference network's state_dict and runs both on the same images.

    Returns the relative error of the (float32) Keras logits against the
    float64 reference, that of the reference itself in float32 (its own
    round-off), the torch names the conversion read, and the state_dict.
    """
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    from tests.weights.torch_reference import reference_model

    reference = reference_model(name, head, num_classes=num_classes, size=size).double()
    state = {key: value.float().numpy() for key, value in reference.state_dict().items()}
    images = np.random.default_rng(1).standard_normal((batch, 3, size, size))
    with torch.no_grad():
        want = reference(torch.from_numpy(images)).numpy()
        torch32 = reference.float()(torch.from_numpy(images).float()).double().numpy()
    model = convert_state_dict(state, name, head=head, input_shape=(size, size, 3))
    got = np.asarray(model(images.transpose(0, 2, 3, 1).astype("float32"), training=False))
    names = [torch_name for _, torch_name, *_ in weight_plan(model, name, head)]
    bias = state["fc.bias"]
    return relative_error(got, want, bias), relative_error(torch32, want, bias), names, state


@pytest.mark.parametrize(
    "name, head",
    [
        ("resnet50-imagenet", "gap"),
        ("resnet50-imagenet", "isqrt-256"),
        ("gsop1-resnet50", "gap"),
        ("gsop2-resnet50", "isqrt-256"),
        ("gauss-resnet50", "gap"),
        ("resnet50-3g", "3g-256"),
    ],
)
def test_the_authors_networks_give_the_same_logits(name, head):
    """Every tensor of the authors' state_dict is read exactly once, and the logits agree."""
    error, torch32_error, names, state = compare_with_reference(name, head, SIZE)
    kept = sorted(key for key in state if not key.endswith("num_batches_tracked"))
    assert sorted(names) == kept and len(set(names)) == len(names)
    # Float32 Keras against a float64 reference. The square root of a rank-deficient covariance
    # (16 positions for 256 channels at 64x64) turns float32 round-off of its zero eigenvalues
    # into errors of order sqrt(1e-7): the authors' network itself, run in float32, differs from
    # float64 by up to 4e-3 here (3G-Net); Gaussian pooling's E[x^2] - E[x]^2 cancels in float32
    # too. Keras must agree about as well as that; in float64 it agrees to 1e-11 (measured), so
    # the mapping itself is exact, and a wrong mapping gives errors of order one.
    assert error < max(5e-4, 3 * torch32_error), (error, torch32_error)


def test_torchvision_resnet50_at_224_gives_the_same_logits():
    """torchvision's ResNet-50 architecture (v1.5), random weights, eval mode, 224x224, 1000 classes."""
    error, _, _, _ = compare_with_reference("resnet50-imagenet", "gap", 224, num_classes=1000)
    assert error < 1e-4, error


def test_real_torchvision_resnet50_when_it_imports():
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    try:
        import torchvision
    except Exception as error:  # a torchvision wheel built for another torch fails at import
        pytest.skip(f"torchvision does not import beside this torch ({type(error).__name__}: {error})")
    from tests.weights.torch_reference import calibrate, randomise

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(num_classes=10)
    randomise(reference)
    reference = calibrate(reference, torch.randn(4, 3, 224, 224)).double()
    state = {key: value.float().numpy() for key, value in reference.state_dict().items()}
    images = np.random.default_rng(2).standard_normal((2, 3, 224, 224))
    with torch.no_grad():
        want = reference(torch.from_numpy(images)).numpy()
    model = convert_state_dict(state, "resnet50-imagenet")
    got = np.asarray(model(images.transpose(0, 2, 3, 1).astype("float32"), training=False))
    assert relative_error(got, want, state["fc.bias"]) < 1e-4


@pytest.mark.parametrize(
    "name, head",
    [("resnet50-imagenet", "gap"), ("resnet50-imagenet", "isqrt-256"), ("gsop1-resnet50", "gap"),
     ("gsop2-resnet50", "isqrt-256"), ("gauss-resnet50", "gap"), ("resnet50-3g", "3g-256")],
)
def test_trainable_parameters_equal_the_authors_to_the_parameter(name, head):
    pytest.importorskip("torch", reason=TORCH_REASON)
    from tests.weights.torch_reference import ResNet50, REFERENCES

    reference = ResNet50(**REFERENCES[(name, head)], num_classes=1000)
    model = build_imagenet_model(name, input_shape=(32, 32, 3), head=head)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == sum(p.numel() for p in reference.parameters())
