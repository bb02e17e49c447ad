"""Each preset, end to end: the configuration `fit` resolves (and writes to config.yaml) builds a
model and an optimizer with the preset's structure and initial values."""

import keras
import numpy as np
import pytest

from gmsop_keras.cli.arguments import resolve_config
from gmsop_keras.training.saved_config import read_saved_config, write_config
from gmsop_keras.training.optimizers import CoupledWeightDecaySGD
from gmsop_keras.training.compile import build_and_compile

SMALL = dict(input_shape=(16, 16, 3), num_classes=5, steps_per_epoch=3)


def _model(tmp_path, preset, head):
    config = resolve_config(["--preset", preset, "--head", head, "--model-dir", str(tmp_path / preset)])
    write_config(config)
    saved = read_saved_config(config["model_dir"])  # the model is built from what config.yaml holds
    assert saved["preset"] == preset
    return saved, build_and_compile(saved, **SMALL)


def _batch_norm_momenta(model):
    return {layer.momentum for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)}


# preset -> (gate input norm, constant gate, representation gamma of a 512-d GM-GAP,
#            BatchNorm momentum, Newton-Schulz iterations, coupled L2, norms and biases decayed)
EXPECTED = {
    "default": (True, False, (128 / 512) ** 0.5, 0.9, 5, None, False),
    "paper": (False, True, 1.0, 0.7, 5, 5e-4, True),
    "official": (False, True, 1.0, 0.7, 3, 1e-4, True),
}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_a_gated_mixture_built_from_the_preset(tmp_path, preset):
    gate_norm, constant, gamma, momentum, _, l2, decay_norms = EXPECTED[preset]
    config, model = _model(tmp_path, preset, "gm-gap-4-2")
    mixture = model.get_layer("mixture")
    assert (mixture.gate_input_norm is not None) == gate_norm
    kernel = np.array(mixture.gate.gate_kernel)
    if constant:
        np.testing.assert_array_equal(kernel, np.full_like(kernel, 1.0 / kernel.shape[0]))
    else:
        assert np.std(kernel) > 0 and abs(np.mean(kernel)) < 3 * np.std(kernel) / np.sqrt(kernel.size) + 1e-3
    np.testing.assert_allclose(np.array(model.get_layer("representation_bn").gamma), gamma, rtol=1e-6)
    assert _batch_norm_momenta(model) == {momentum}
    optimizer = model.optimizer
    if l2 is None:
        assert not isinstance(optimizer, CoupledWeightDecaySGD)
        np.testing.assert_allclose(optimizer.weight_decay, 5e-4 / (1 - 0.9), rtol=1e-6)
    else:
        assert isinstance(optimizer, CoupledWeightDecaySGD) and optimizer.weight_decay is None
        assert optimizer.l2 == pytest.approx(l2)
        gamma_variable = model.get_layer("representation_bn").gamma
        assert optimizer.decays(gamma_variable) == decay_norms
        assert optimizer.decays(model.get_layer("logits").kernel)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_the_sr_sop_baseline_built_from_the_preset(tmp_path, preset):
    _, _, _, momentum, iterations, _, _ = EXPECTED[preset]
    config, model = _model(tmp_path, preset, "sr-sop")
    names = {layer.name for layer in model.layers}
    # The official baseline (and the paper, silent here, follows it) goes straight to the classifier.
    assert ("representation_bn" in names) == (preset == "default")
    assert model.get_layer("sr_sop").num_iterations == iterations
    assert _batch_norm_momenta(model) == {momentum}


def _resolved_model(tmp_path, preset, backbone, head, dataset="imagenet64"):
    config = resolve_config(["--preset", preset, "--backbone", backbone, "--head", head, "--dataset", dataset,
                             "--model-dir", str(tmp_path / preset)])
    return config, build_and_compile(config, **SMALL)


def _dropout_rates(model):
    return [layer.rate for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout)]


@pytest.mark.parametrize("preset, rate", [("paper", 0.2), ("official", 0.4), ("default", 0.4)])
def test_wrn_gm_sop_dropout_follows_the_presets_source(tmp_path, preset, rate):
    # paper Sec. 2.3: "with drop rate of 0.2 after final representation", WRN-36-2 included;
    # official cnn_init_WRN_GM.m:325 "drop_rate = 0.4;" for the second-order mixture.
    config, model = _resolved_model(tmp_path, preset, "wrn-36-2", "gm-sop-4-2")
    assert config["dropout"] == (None if preset == "default" else rate)
    assert _dropout_rates(model) == [pytest.approx(rate)]


def test_official_wrn_sr_sop_baseline_has_no_dropout(tmp_path):
    # cnn_init_WRN_baseline.m:8 "opts.dropout = false;": nothing between SR-SOP and the classifier.
    config, model = _resolved_model(tmp_path, "official", "wrn-36-2", "sr-sop")
    assert config["dropout"] is None and config["batch_size"] == 150 and config["stages"] == [10, 10, 10]
    assert _dropout_rates(model) == []
    assert "representation_bn" not in {layer.name for layer in model.layers}


def test_official_gate_noise_is_one_gamma_per_image_shared_by_the_components():
    # H_x.m:31 "gamma_ = random('Normal',0,1,1,bs);%normal distribution for each img", broadcast
    # over the components (line 39). With the official constant kernels every component's logit is
    # the same before the noise; one gamma per image keeps them equal, so each image's K selected
    # components share its weight evenly (one gamma per component would not).
    config = resolve_config(["--preset", "official", "--head", "gm-gap-4-2"])
    assert config["noise"] == "per_sample"
    model = build_and_compile(config, **SMALL)
    gate = model.get_layer("mixture").gate
    features = np.random.default_rng(0).uniform(0.5, 2.0, size=(16, gate.gate_kernel.shape[0])).astype("float32")
    weights = np.array(gate(features, training=True))
    np.testing.assert_allclose(np.sort(weights, axis=1)[:, -2:], 0.5, rtol=1e-6)
    assert np.all(np.sum(weights > 0, axis=1) == 2)
    per_component = np.array(type(gate).from_config({**gate.get_config(), "noise": "per_component"})(
        features, training=True))
    assert not np.allclose(np.sort(per_component, axis=1)[:, -2:], 0.5)


def test_official_square_roots_run_three_iterations():
    # iterNum 3 in every Cov_Sqrtm of the official scripts (cnn_init_resnet_GM.m:178 the gate's,
    # :255 the components', cnn_init_resnet_baseline.m:147, cnn_init_WRN_GM.m:182 and :259).
    config = resolve_config(["--preset", "official", "--head", "gm-sop-4-2"])
    mixture = build_and_compile(config, **SMALL).get_layer("mixture")
    assert config["num_iterations"] == 3 and mixture.num_iterations == 3
