"""GatedMixture: equals an independent per-component oracle, both dispatches agree (values and gradients)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmsop_keras.layers import GatedMixture, ParametricGAP, SquareRootSOP
from tests.layer_checks import check_layer

SMALL = dict(gate_dims=(6, 4), num_iterations=3)
DIMS = {"sop": (6, 4), "gap": (5,)}
OUT = {"sop": 10, "gap": 5}


def maps(batch=6, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 5, 5, 8)).astype("float32")


def mixture(component, top_k=2, dispatch="auto", **kwargs):
    options = dict(SMALL, component_dims=DIMS[component], noise="none")
    options.update(kwargs)
    return GatedMixture(5, top_k, component=component, dispatch=dispatch, **options)


def oracle_components(layer, x):
    """Each component as its own SquareRootSOP / ParametricGAP layer with the mixture's kernels: (B, N, D)."""
    outputs = []
    for i in range(layer.num_components):
        kernels = [np.array(k)[i] for k in layer.component_kernels]
        if layer.component == "sop":
            single = SquareRootSOP(hidden_dims=layer.component_dims, num_iterations=layer.num_iterations)
        else:
            single = ParametricGAP(layer.component_dims[0])
        single.build(x.shape)
        single.set_weights(kernels)
        outputs.append(keras.ops.convert_to_numpy(single(x)))
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("component", ["sop", "gap"])
@pytest.mark.parametrize("dispatch", ["dense", "gather", "grouped"])
def test_gated_output_is_the_weighted_sum_of_the_selected_components(component, dispatch):
    layer = mixture(component, dispatch=dispatch)
    x = maps()
    y = keras.ops.convert_to_numpy(layer(x))
    weights = keras.ops.convert_to_numpy(layer.gate(layer._gate_features(x, False)))
    np.testing.assert_array_equal((weights > 0).sum(axis=1), 2)
    expected = np.einsum("bn,bnd->bd", weights, oracle_components(layer, x))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("component", ["sop", "gap"])
def test_average_is_the_mean_of_all_components(component):
    layer = mixture(component, top_k=None)
    x = maps()
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y, oracle_components(layer, x).mean(axis=1), rtol=1e-4, atol=1e-5)
    assert layer.gate is None


@pytest.mark.parametrize("component", ["sop", "gap"])
def test_gather_and_dense_dispatch_agree_in_values_and_gradients(component):
    x = tf.constant(maps(batch=8, seed=1))
    dense, gather = mixture(component, dispatch="dense"), mixture(component, dispatch="gather")
    dense(x)
    gather(x)
    gather.set_weights(dense.get_weights())
    results = []
    for layer in (dense, gather):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(tf.range(y.shape[-1], dtype=y.dtype))) + tf.add_n(layer.losses)
        grads = tape.gradient(loss, layer.trainable_weights)  # gathered kernels give IndexedSlices
        results.append((y.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]))
    (y_dense, g_dense), (y_gather, g_gather) = results
    np.testing.assert_allclose(y_gather, y_dense, rtol=1e-5, atol=1e-6)
    assert len(g_dense) == len(g_gather) == len(dense.trainable_weights)
    for a, b, w in zip(g_dense, g_gather, dense.trainable_weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(a).max()), err_msg=w.path)


@pytest.mark.parametrize("dispatch", ["dense", "gather", "grouped"])
def test_only_the_selected_components_receive_gradient(dispatch):
    layer = mixture("sop", dispatch=dispatch)
    x = tf.constant(maps(batch=1, seed=3))
    layer(x)  # build outside the tape
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    grads = tape.gradient(loss, layer.component_kernels)
    weights = keras.ops.convert_to_numpy(layer.gate(layer._gate_features(x, False)))[0]
    for grad in grads:
        touched = np.abs(tf.convert_to_tensor(grad).numpy()).reshape(5, -1).max(axis=1) > 0
        np.testing.assert_array_equal(touched, weights > 0)


@pytest.mark.parametrize("component", ["sop", "gap"])
def test_fresh_mixture_spreads_a_random_batch_over_all_components(component):
    layer = GatedMixture(16, 8, component=component)
    x = np.maximum(np.random.default_rng(2).standard_normal((32, 8, 8, 32)) + 0.5, 0).astype("float32")
    layer(x[:2])
    weights = keras.ops.convert_to_numpy(layer.gate(layer._gate_features(x, True), training=True))
    load = (weights > 0).sum(axis=0)
    assert (load > 0).all(), load
    assert load.std() / load.mean() < 0.5, load


@pytest.mark.parametrize(
    "make_layer, dim",
    [
        (lambda: mixture("sop", seed=0, noise="per_sample"), OUT["sop"]),
        (lambda: mixture("gap", seed=0, dispatch="dense"), OUT["gap"]),
        (lambda: mixture("sop", top_k=None), OUT["sop"]),
    ],
)
def test_mixture_contract(make_layer, dim, tmp_path):
    check_layer(make_layer, maps(), (6, dim), tmp_path, atol=1e-5)


def test_mixture_runs_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((5, 5, 8))
        hidden = keras.layers.Conv2D(8, 3, padding="same")(inputs)
        outputs = keras.layers.Dense(3, dtype="float32")(mixture("sop", name="m")(hidden))
        model = keras.Model(inputs, outputs)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = model.train_on_batch(maps(), np.arange(6) % 3)
        assert np.isfinite(loss)
        assert model.get_layer("m").compute_dtype == "float32"
        assert model.layers[1].compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"top_k.*Received: top_k=9"):
        GatedMixture(num_components=8, top_k=9)
    with pytest.raises(ValueError, match="component"):
        GatedMixture(component="vlad")
    with pytest.raises(ValueError, match="dispatch"):
        GatedMixture(dispatch="capacity")
    with pytest.raises(ValueError, match="component_dims"):
        GatedMixture(component="gap", component_dims=(8, 8))


def test_routing_counts_accumulate_only_in_training():
    layer = mixture("gap")
    x = maps(batch=6)
    layer(x)
    np.testing.assert_array_equal(np.array(layer.routing_counts), 0)
    w1 = keras.ops.convert_to_numpy(layer.gate(layer._gate_features(x, True), training=True))
    layer.routing_counts.assign(np.zeros(5, "float32"))
    layer(x, training=True)
    layer(x, training=True)
    counts = np.array(layer.routing_counts)
    assert counts.sum() == 2 * 6 * 2  # two calls, six samples, K = 2
    np.testing.assert_array_equal(counts, 2 * (w1 > 0).sum(axis=0))  # noise="none": same routing each call
    layer(x)
    assert np.array(layer.routing_counts).sum() == 24


@pytest.mark.parametrize("component", ["sop", "gap"])
@pytest.mark.parametrize("dispatch", ["dense", "gather", "grouped"])
def test_traces_with_an_unknown_batch_size(component, dispatch):
    """model.fit on a tf.data input traces with batch None (train_on_batch does not)."""
    layer = mixture(component, dispatch=dispatch)
    x = maps()
    expected = keras.ops.convert_to_numpy(layer(x))
    traced = tf.function(lambda t: layer(t), input_signature=[tf.TensorSpec((None, 5, 5, 8))])
    np.testing.assert_allclose(traced(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    unknown_size = tf.function(lambda t: layer(t), input_signature=[tf.TensorSpec((None, None, None, 8))])
    np.testing.assert_allclose(unknown_size(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


def value_and_gradients(layer, x, jit_compile=False):
    """Output and gradients (input, every trainable weight) of a fixed loss of the output."""

    @tf.function(jit_compile=jit_compile)
    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = layer(t, training=True)
            loss = tf.reduce_sum(y * tf.sin(tf.range(y.shape[-1], dtype=y.dtype)))
            loss += tf.cast(tf.add_n(layer.losses), loss.dtype)
        return y, tape.gradient(loss, [t, *layer.trainable_weights])

    y, grads = step(x)
    return y.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize("component", ["sop", "gap"])
@pytest.mark.parametrize("batch, jit_compile", [(1, False), (40, False), (40, True)])
def test_grouped_dispatch_equals_dense_and_gather_in_float64(component, batch, jit_compile):
    """40 samples, K = 2 of N = 5: 80 pairs in tiles of 2 rows, so the padding is exercised."""
    x = tf.constant(maps(batch=batch, seed=5).astype("float64"))
    layers = {d: mixture(component, dispatch=d, dtype="float64") for d in ("dense", "gather", "grouped")}
    for layer in layers.values():
        layer(x)
        layer.set_weights(layers["dense"].get_weights())
    # The reference compiles alike: the balance loss is float32, and XLA fuses its ops differently.
    y_ref, g_ref = value_and_gradients(layers["dense"], x, jit_compile=jit_compile)
    for dispatch in ("gather", "grouped"):
        y, grads = value_and_gradients(layers[dispatch], x, jit_compile=jit_compile)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12, err_msg=dispatch)
        for a, b in zip(g_ref, grads):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(a).max()), err_msg=dispatch)


def test_gate_input_norm_switch_feeds_the_gate_standardised_or_raw_features():
    x = maps(batch=8)
    on = mixture("sop", gate_input_norm=True)
    off = mixture("sop", gate_input_norm=False)
    on(x)
    off(x)
    assert on.gate_input_norm is not None and off.gate_input_norm is None
    assert "gate_input_bn" in [w.path.split("/")[-2] for w in on.weights]
    assert not any("gate_input_bn" in w.path for w in off.weights)
    raw = keras.ops.convert_to_numpy(off._gate_features(x, training=True))
    # Off: the raw SR-SOP vector of the prediction layers' map (non-negative diagonal entries).
    assert raw.shape == (8, 10) and raw.std(axis=0).mean() > 0
    standardised = keras.ops.convert_to_numpy(on._gate_features(x, training=True))
    # On: batch-standardised (zero mean, unit variance per feature), then / sqrt(D).
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose((standardised**2).sum(axis=1).mean(), 1.0, rtol=1e-2)


def test_switches_are_serialised_and_old_configs_load_with_the_defaults():
    layer = mixture("gap", gate_input_norm=False, gate_init="constant", bn_momentum=0.7)
    config = layer.get_config()
    assert (config["gate_input_norm"], config["gate_init"], config["bn_momentum"]) == (False, "constant", 0.7)
    clone = GatedMixture.from_config(config)
    assert clone.gate_input_norm is None and clone.gate.gate_init == "constant"
    for key in ("gate_input_norm", "gate_init", "bn_momentum"):
        config.pop(key)
    old = GatedMixture.from_config(config)
    assert old.standardize_gate_input is True and old.gate.gate_init == "random" and old.bn_momentum == 0.9


@pytest.mark.parametrize("momentum", [0.9, 0.7])
def test_bn_momentum_reaches_every_batch_norm_of_the_mixture(momentum):
    layer = mixture("sop", bn_momentum=momentum)
    layer(maps())
    norms = layer.gate_norms + [layer.gate_input_norm]
    assert len(norms) == 3 and all(norm.momentum == momentum for norm in norms)


def test_constant_gate_init_spreads_a_fresh_mixture_over_all_components():
    """The official code's start: W_g = W_n = 1/d, raw gate input, ties broken at random."""
    layer = GatedMixture(16, 8, component="gap", gate_input_norm=False, gate_init="constant", seed=0)
    x = np.maximum(np.random.default_rng(2).standard_normal((32, 8, 8, 32)) + 0.5, 0).astype("float32")
    layer(x[:2])
    np.testing.assert_array_equal(np.array(layer.gate.gate_kernel), 1.0 / 128)
    weights = keras.ops.convert_to_numpy(layer.gate(layer._gate_features(x, True), training=True))
    np.testing.assert_allclose(weights[weights > 0], 1.0 / 8, rtol=1e-5)  # every logit ties
    load = (weights > 0).sum(axis=0)  # 256 picks, 16 per component on average
    assert (load > 0).all() and load.std() / load.mean() < 0.5, load


def test_bad_switch_values_name_the_argument():
    with pytest.raises(ValueError, match=r"gate_init.*Received: gate_init='zeros'"):
        GatedMixture(gate_init="zeros")
    with pytest.raises(ValueError, match=r"gate_input_norm.*Received: gate_input_norm='yes'"):
        GatedMixture(gate_input_norm="yes")
    with pytest.raises(ValueError, match=r"bn_momentum.*Received: bn_momentum=1.5"):
        GatedMixture(bn_momentum=1.5)
