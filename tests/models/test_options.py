"""build_model's switches: structure and initial values on and off, refusals, head=None, float32 logits."""

import inspect

import keras
import numpy as np
import pytest

from gmsop_keras import build_model
from gmsop_keras.models.options import MODEL_OPTIONS, OPTION_TRAITS, TRAIT_MEANINGS, applicable_options, model_traits
from gmsop_keras.models.names import IMAGENET_BACKBONES, SMALL_IMAGE_BACKBONES
from gmsop_keras.models.presets import PRESETS
from gmsop_keras.training.options import BY_NAME

SMALL = dict(num_classes=5, input_shape=(16, 16, 3))


def batch_norms(model):
    """Every BatchNormalization inside the model, nested layers (mixture, GSoP blocks) included."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def test_every_option_has_a_trait_and_a_value_check():
    assert list(OPTION_TRAITS) == [option.name for option in MODEL_OPTIONS]
    assert all(option.trait in TRAIT_MEANINGS and option.wanted() for option in MODEL_OPTIONS)
    # build_model's default passes the option's own check (None: chosen per model).
    assert all(option.default is None or option.problem(option.default) is None for option in MODEL_OPTIONS)
    assert applicable_options("resnet50-imagenet", "gap") == []
    assert applicable_options("resnet18", "gap") == ["last_stride", "gsop_stages", "gaussian_pooling", "conv1_bias",
                                                     "symmetric_padding", "bn_momentum"]
    assert "sop_baseline_bn" in applicable_options("resnet18", "sr-sop")
    assert "dropout" not in applicable_options("resnet18", "sr-sop", sop_baseline_bn=False)
    assert model_traits("wrn-36-2", "gm-gap-16-8") == {"small_backbone", "classifier_bn", "gated", "dispatched"}


def test_build_models_keywords_are_the_declared_options():
    keywords = [name for name, parameter in inspect.signature(build_model).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
    assert set(keywords) - {"seed", "mean", "std", "name"} == set(OPTION_TRAITS)


def test_every_preset_value_is_an_option_value():
    for preset in PRESETS.values():
        for name, value in preset.items():
            assert value is None or BY_NAME[name].problem(value) is None, (name, value)


@pytest.mark.parametrize(
    "head, width, gamma",
    [("gap-512", 512, 0.5), ("gap-64", 64, 1.0), ("gm-gap-4-2", 512, 0.5), ("sr-sop", 8256, (128 / 8256) ** 0.5)],
)
def test_representation_gamma_default_is_sqrt_128_over_d_and_a_number_sets_it(head, width, gamma):
    default = build_model("resnet18", head, **SMALL).get_layer("representation_bn")
    np.testing.assert_allclose(np.array(default.gamma), np.full(width, gamma, "float32"), rtol=1e-6)
    paper = build_model("resnet18", head, representation_gamma=1.0, **SMALL).get_layer("representation_bn")
    np.testing.assert_array_equal(np.array(paper.gamma), np.ones(width, "float32"))


@pytest.mark.parametrize("head", ["sr-sop", "psr-sop"])
def test_sop_baseline_without_batch_norm_goes_straight_to_the_classifier(head):
    with_bn = build_model("resnet18", head, **SMALL)
    plain = build_model("resnet18", head, sop_baseline_bn=False, **SMALL)
    names = [layer.name for layer in plain.layers]
    assert "representation_bn" not in names and "dropout" not in names
    assert names[-2:] == ["sr_sop", "logits"]
    assert {"representation_bn", "dropout"} <= {layer.name for layer in with_bn.layers}
    assert with_bn.count_params() - plain.count_params() == 4 * 8256  # gamma, beta, mean, variance
    assert plain.get_layer("logits").compute_dtype == "float32"


@pytest.mark.parametrize(
    "backbone, head, options",
    [
        ("resnet18", "gm-sop-4-2", {}),
        ("wrn-36-2", "psr-sop", dict(gsop_stages=[3, 4], gaussian_pooling=True)),
    ],
)
@pytest.mark.parametrize("momentum", [None, 0.7])
def test_bn_momentum_reaches_every_batch_norm(backbone, head, options, momentum):
    model = build_model(backbone, head, bn_momentum=momentum, **options, **SMALL)
    norms = batch_norms(model)
    expected = 0.9 if momentum is None else momentum
    assert len(norms) > 10
    assert {norm.momentum for norm in norms} == {expected}, [(n.name, n.momentum) for n in norms]


def test_mixture_switches_reach_the_layer():
    model = build_model("resnet18", "gm-gap-4-2", gate_input_norm=False, gate_init="constant", **SMALL)
    mixture = model.get_layer("mixture")
    assert mixture.gate_input_norm is None and mixture.gate.gate_init == "constant"
    np.testing.assert_array_equal(np.array(mixture.gate.gate_kernel), 1.0 / 128)
    default = build_model("resnet18", "gm-gap-4-2", **SMALL).get_layer("mixture")
    assert default.gate_input_norm is not None and default.gate.gate_init == "random"


@pytest.mark.parametrize(
    "backbone, head, options, message",
    [
        ("resnet50-imagenet", None, dict(num_iterations=3), "`num_iterations` does not apply to backbone='resnet50-imagenet'"),
        ("gsop2-resnet50", None, dict(dropout=0.2), "`dropout` does not apply"),
        ("gauss-resnet50", None, dict(last_stride=1), "`last_stride` does not apply"),
        ("resnet50-3g", None, dict(balance_loss_weight=100.0), "`balance_loss_weight` does not apply"),
        ("resnet50-imagenet", "gap", dict(gsop_stages=[1]), "`gsop_stages` does not apply"),
        ("gsop1-resnet50", None, dict(gaussian_pooling=True), "`gaussian_pooling` does not apply"),
        ("resnet50-imagenet", None, dict(bn_momentum=0.7), "the seed family's ImageNet models are the authors'"),
        ("resnet18", "gap", dict(dropout=0.2), "`dropout` does not apply to backbone='resnet18', head='gap'"),
        ("resnet18", "sr-sop", dict(balance_loss_weight=10.0), "only to gated mixtures"),
        ("resnet18", "ave-sop-4", dict(noise="none"), "`noise` does not apply"),
        ("resnet18", "psr-sop", dict(dispatch="gather"), "`dispatch` does not apply"),
        ("resnet18", "gap-512", dict(gate_init="constant"), "`gate_init` does not apply"),
        ("resnet18", "gm-gap-4-2", dict(gate_input_norm=False, num_iterations=3), "`num_iterations` does not apply"),
        ("resnet18", "gm-sop-4-2", dict(sop_baseline_bn=False), "only to the plain second-order baselines"),
        ("resnet18", "sr-sop", dict(sop_baseline_bn=False, dropout=0.1), "`dropout` does not apply"),
        ("resnet18", "sr-sop", dict(sop_baseline_bn=False, representation_gamma=1.0), "`representation_gamma`"),
        ("resnet18", "gap", dict(representation_gamma=1.0), "`representation_gamma` does not apply"),
        ("resnet18", "gm-sop-4-2", dict(dropout=-0.1), r"`dropout` must be a rate in \[0, 1\). Received: dropout=-0.1"),
        ("resnet18", "gm-sop-4-2", dict(balance_loss_weight=-1), "`balance_loss_weight` must be a number >= 0"),
        ("resnet18", "gm-sop-4-2", dict(num_iterations=0), "`num_iterations` must be an integer >= 1"),
        ("resnet18", "gm-sop-4-2", dict(bn_momentum=1.0), r"`bn_momentum` must be a number in \[0, 1\)"),
        ("resnet18", "gm-sop-4-2", dict(representation_gamma=0.0), "`representation_gamma` must be a positive"),
        ("resnet18", "gm-sop-4-2", dict(gate_init="ones"), "`gate_init` must be random or constant"),
        ("resnet18", "gm-sop-4-2", dict(last_stride=3), "`last_stride` must be 1 or 2"),
        ("resnet50-imagenet", None, dict(num_iterations=-1), "`num_iterations` must be an integer >= 1"),
    ],
)
def test_an_option_that_does_not_apply_or_is_out_of_range_is_refused(backbone, head, options, message):
    with pytest.raises(ValueError, match=message):
        build_model(backbone, head, **options)


def test_head_none_is_the_models_own_head():
    assert build_model("resnet18", None, **SMALL).name == "resnet18_gm_sop_16_8"
    assert build_model("resnet18", **SMALL).get_layer("mixture").num_components == 16
    assert build_model("gsop2-resnet50", input_shape=(32, 32, 3), num_classes=5).name == "gsop2_resnet50_isqrt_256"


@pytest.mark.parametrize("backbone", SMALL_IMAGE_BACKBONES + IMAGENET_BACKBONES)
def test_logits_are_float32_under_mixed_precision_for_every_backbone(backbone):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(backbone, None, num_classes=3, input_shape=(32, 32, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.output.dtype == "float32"
    logits = model(np.zeros((1, 32, 32, 3), "uint8"))
    assert keras.ops.convert_to_numpy(logits).dtype == np.float32
    # the network itself runs in float16: the policy did apply
    assert any(layer.compute_dtype == "float16" for layer in model._flatten_layers())


def test_table_3_heads_take_the_classifier_and_gate_switches_they_have():
    assert model_traits("resnet18", "netvlad-64") == {"small_backbone", "classifier_bn"}
    assert model_traits("resnet18", "sg-moe-16-8") == {"small_backbone", "classifier_bn", "gated"}
    netvlad = build_model("resnet18", "netvlad-8", dropout=0.3, representation_gamma=1.0, **SMALL)
    assert netvlad.get_layer("dropout").rate == 0.3
    np.testing.assert_array_equal(np.array(netvlad.get_layer("representation_bn").gamma), 1.0)
    moe = build_model("resnet18", "sg-moe-4-2", gate_input_norm=False, gate_init="constant", **SMALL)
    experts = moe.get_layer("experts")
    kernel = np.array(experts.gate.gate_kernel)
    assert experts.gate_norm is None and experts.gate.gate_init == "constant"
    np.testing.assert_array_equal(kernel, np.full_like(kernel, 1.0 / kernel.shape[0]))
    with pytest.raises(ValueError, match="`dispatch` does not apply to .*'sg-moe-4-2'"):
        build_model("resnet18", "sg-moe-4-2", dispatch="gather", **SMALL)
    with pytest.raises(ValueError, match="`gate_init` does not apply to .*'netvlad-8'"):
        build_model("resnet18", "netvlad-8", gate_init="constant", **SMALL)
