"""build_model: the paper's rows by name, parameter counts, training, saving, mixed precision."""

import keras
import numpy as np
import pytest

from gmsop_keras import build_model, list_backbones, list_heads

# (row in the paper's Tables 2-3 / the official README, backbone, head, millions of parameters).
PAPER_ROWS = [
    ("ResNet-18", "resnet18", "gap", 0.9),
    ("ResNet-18-512d", "resnet18", "gap-512", 1.3),
    ("ResNet-18 + SR-SOP", "resnet18", "sr-sop", 9.0),
    ("GM-GAP-16-8 + ResNet-18", "resnet18", "gm-gap-16-8", 2.3),
    ("GM-SOP-16-8 + ResNet-18", "resnet18", "gm-sop-16-8", 10.3),
    ("NetVLAD + ResNet-18", "resnet18", "netvlad-64", 8.9),
    ("One-layer-SG-MoE + ResNet-18", "resnet18", "sg-moe-16-8", 2.3),
    ("ResNet-50", "resnet50", "gap", 2.4),
    ("ResNet-50-512d", "resnet50", "gap-512", 2.8),
    ("ResNet-50-8256d", "resnet50", "gap-8256", 11.6),
    ("GM-SOP-16-8 + ResNet-50", "resnet50", "gm-sop-16-8", 11.9),
    ("WRN-36-2", "wrn-36-2", "gap", 6.2),
    ("GM-GAP-16-8 + WRN-36-2", "wrn-36-2", "gm-gap-16-8", 8.7),
    ("GM-SOP-16-8 + WRN-36-2", "wrn-36-2", "gm-sop-16-8", 15.7),
]
# The paper's "0.9M" for ResNet-18 is not reproducible: its own official code
# (cnn_init_resnet_baseline.m, 'ResNet18-GAP') has the same 0.83M as this one,
# and the paper's own ResNet-18-512d row (1.3M) is 0.45M more, which puts
# ResNet-18 at 0.85M at most. Every other row is within 2.1%.
TOLERANCE = {"ResNet-18": 0.08}


@pytest.mark.parametrize("row, backbone, head, millions", PAPER_ROWS, ids=[r[0] for r in PAPER_ROWS])
def test_parameter_count_matches_the_paper(row, backbone, head, millions):
    model = build_model(backbone, head, num_classes=1000, input_shape=(64, 64, 3))
    assert model.count_params() / 1e6 == pytest.approx(millions, rel=TOLERANCE.get(row, 0.05))


def _compile(model, run_eagerly=False):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=run_eagerly,
    )
    return model


def _batch(size=16, batch=4, num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype("float32")
    return images, np.arange(batch) % num_classes


@pytest.mark.parametrize("head", list_heads())
@pytest.mark.parametrize("backbone", list_backbones())
def test_trains_one_step_saves_and_reloads(backbone, head, tmp_path):
    # Eager: tracing the train step of 27 models would take minutes on 2 cores; the
    # compiled path is trained by the mixed-precision and graph-mode tests below.
    model = build_model(backbone, head, num_classes=5, input_shape=(16, 16, 3), seed=1)
    _compile(model, run_eagerly=True)
    images, labels = _batch()
    before = {w.path: w.numpy() for w in model.trainable_weights}
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    changed = {w.path for w in model.trainable_weights if not np.array_equal(w.numpy(), before[w.path])}
    assert any(path.startswith("logits/") for path in changed)
    assert any("conv1_conv" in path for path in changed)
    if "mixture" in [layer.name for layer in model.layers]:
        assert any(path.startswith("mixture/component_kernel") for path in changed)

    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert logits.shape == (4, 5) and logits.dtype == np.float32
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(images, training=False)), logits, atol=1e-6)
    assert restored.count_params() == model.count_params()


def test_balance_loss_is_added_only_when_training():
    model = build_model("resnet18", "gm-gap-16-8", num_classes=5, input_shape=(16, 16, 3))
    images, _ = _batch()
    model(images, training=False)
    assert model.losses == []
    model(images, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) >= 0.0
    averaged = build_model("resnet18", "ave-gap-16", num_classes=5, input_shape=(16, 16, 3))
    averaged(images, training=True)
    assert averaged.losses == []


def test_inference_is_deterministic_and_uint8_equals_float():
    model = build_model("resnet18", "gm-sop-16-8", num_classes=5, input_shape=(16, 16, 3))
    images, _ = _batch()
    first = model.predict_on_batch(images)
    np.testing.assert_array_equal(model.predict_on_batch(images), first)
    np.testing.assert_allclose(model.predict_on_batch(images.astype("uint8")), first, atol=1e-6)


def test_normalisation_is_inside_the_model():
    model = build_model("resnet18", "gap", num_classes=5, input_shape=(16, 16, 3))
    assert model.input.name == "image" and model.inputs[0].shape == (None, 16, 16, 3)
    mean = np.array([0.485, 0.456, 0.406]) * 255.0
    std = np.array([0.229, 0.224, 0.225]) * 255.0
    normalised = model.get_layer("normalization")(np.broadcast_to(mean + std, (1, 2, 2, 3)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalised), 1.0, rtol=1e-5)


def test_dense_and_gather_dispatch_give_the_same_model():
    options = dict(num_classes=5, input_shape=(16, 16, 3))
    dense = build_model("resnet18", "gm-sop-8-2", dispatch="dense", **options)
    gather = build_model("resnet18", "gm-sop-8-2", dispatch="gather", **options)
    gather.set_weights(dense.get_weights())
    images, _ = _batch()
    np.testing.assert_allclose(gather.predict_on_batch(images), dense.predict_on_batch(images), atol=1e-4)


def test_options_pass_through():
    model = build_model(
        "resnet18", "gm-sop-8-4", num_classes=5, input_shape=(16, 16, 3), balance_loss_weight=10.0,
        num_iterations=3, noise="per_component", dispatch="dense", seed=7, dropout=0.3, name="custom",
    )
    config = model.get_layer("mixture").get_config()
    assert (config["num_components"], config["top_k"], config["component"]) == (8, 4, "sop")
    assert config["balance_loss_weight"] == 10.0 and config["num_iterations"] == 3
    assert (config["noise"], config["dispatch"], config["seed"]) == ("per_component", "dense", 7)
    assert model.get_layer("dropout").rate == 0.3 and model.name == "custom"
    model = build_model("resnet18", "psr-sop", num_classes=5, input_shape=(16, 16, 3), num_iterations=2)
    assert model.get_layer("sr_sop").get_config()["num_iterations"] == 2
    with pytest.raises(TypeError):
        build_model("resnet18", "gap", width=2)


@pytest.mark.parametrize("head", ["gm-sop-16-8", "gm-gap-16-8"])
def test_mixed_precision_trains_with_float32_second_order_parts(head):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _compile(build_model("resnet18", head, num_classes=5, input_shape=(16, 16, 3)))
        assert model.get_layer("resnet18").get_layer("conv5_block2_2_conv").compute_dtype == "float16"
        for name in ["mixture", "representation_bn", "logits"]:
            assert model.get_layer(name).compute_dtype == "float32"
            assert model.get_layer(name).variable_dtype == "float32"
        assert model.output.dtype == "float32"
        images, labels = _batch()
        loss = model.train_on_batch(images, labels)
        assert np.isfinite(loss)
        assert np.all(np.isfinite(model.predict_on_batch(images)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_places_input_size():
    model = build_model("resnet18", "gm-sop-16-8", num_classes=365, input_shape=(100, 100, 3))
    assert model.get_layer("resnet18").output.shape == (None, 25, 25, 128)
    images, _ = _batch(size=100, batch=2)
    assert model.predict_on_batch(images).shape == (2, 365)


def _fit_fixed_batch(head, steps=10, batch=64, **options):
    """Losses of `steps` compiled steps at the paper's SGD settings (lr 0.1, momentum 0.9)."""
    model = build_model("resnet18", head, num_classes=10, input_shape=(16, 16, 3), seed=0, **options)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images, _ = _batch(batch=batch)
    labels = np.random.default_rng(0).integers(0, 10, batch)
    return [float(model.train_on_batch(images, labels)) for _ in range(steps)]


@pytest.mark.parametrize("head", ["ave-sop-4", "gm-gap-16-8"])
def test_compiled_training_fits_a_fixed_batch(head):
    """Measured: ave-sop-4 2.98 -> 1.02, gm-gap-16-8 3.5 -> 0.1 in 10 steps."""
    losses = _fit_fixed_batch(head)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_gm_sop_training_does_not_diverge():
    """GM-SOP-4-2 at B=64, lr 0.1, momentum 0.9 on one batch, next to Ave-SOP-4.

    Regression test of the representation BatchNorm's initial scale sqrt(128 / D):
    with gamma = 1 the 8256-d head diverged at the paper's learning rate (measured
    3.20 -> 19.4 in 10 steps; Ave-SOP-4 oscillated, 3.34 -> 0.45 -> 5.2); with it,
    2.33 -> 0.29 (Ave-SOP-4: 2.32 -> 0.05).
    """
    losses = _fit_fixed_batch("gm-sop-4-2", noise="none")
    assert all(np.isfinite(losses))
    assert max(losses[-3:]) < 0.5 * losses[0]
    assert max(losses) < 1.5 * losses[0]


SEED_FAMILY = [
    # name, its own head, the authors' trainable parameters (millions, 1000 classes)
    ("resnet50-imagenet", "gap", 25.56),
    ("gsop1-resnet50", "gap", 28.29),
    ("gsop2-resnet50", "isqrt-256", 58.28),
    ("gauss-resnet50", "gap", 33.85),
    ("resnet50-3g", "3g-256", 57.97),
]


@pytest.mark.parametrize("backbone, head, millions", SEED_FAMILY, ids=[r[0] for r in SEED_FAMILY])
def test_seed_family_models_by_name(backbone, head, millions):
    """build_model takes the seed family's names like any other: raw-image input, logits out."""
    model = build_model(backbone, head, num_classes=1000, input_shape=(32, 32, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable / 1e6 == pytest.approx(millions, rel=0.01)
    assert model.input.name == "image" and model.output_shape == (None, 1000)
    images, _ = _batch(size=32, batch=2)
    logits = model.predict_on_batch(images)
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()


def test_seed_family_models_reject_other_heads():
    with pytest.raises(ValueError, match="isqrt-256"):
        build_model("gsop1-resnet50", "gm-sop-16-8")
