"""Where the maths makes them equal, a distributed or mixed-precision model is compared with the
plain one-replica float32 model, weight for weight or logit for logit.

MirroredStrategy on 2 logical CPU devices vs the default strategy: the same initial weights,
3 steps of plain SGD on the same global batches. Every BatchNormalization is frozen, which
Keras runs in inference mode, so no per-replica batch statistics enter; dropout is 0 and the
gate's noise off. The gated head keeps its balance loss (alpha = 100): a non-linear function of
the global batch's gate importance, which `gmsop_keras` sums across replicas. Anything left is
float32 round-off of a different summation order.

mixed_float16 vs float32: the same weights, inference mode, logits compared relative to their
largest magnitude.

Only the public API (`gmsop_keras.build_model`, keras, tensorflow).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADS = {  # head -> the build options that make one and two replicas comparable
    "gm-sop-4-2": {"dropout": 0.0, "noise": "none", "seed": 0},
    "gap": {},
}
# Weights after 3 steps of SGD(0.01): float32 round-off of another summation order is about 1e-7
# on weights of magnitude ~1 (measured on a CPU: 3e-8 for gm-sop-4-2, 6e-8 for gap, the largest
# weight 0.76). The steps move the weights by 7e-3 (gm-sop-4-2) and 0.13 (gap); computing the
# balance loss per replica instead of on the global batch makes the weights differ by 3.9e-3.
WEIGHT_TOLERANCE = 1e-5
# Logits of mixed_float16 vs float32, relative to the largest float32 logit: float16 keeps 11
# significant bits (unit round-off u = 2^-11 = 4.9e-4) and the error gathers over the ~20 layers
# of the ResNet-18 in float16. Measured over 5 initialisations: 1.6e-3 to 3.2e-3 (~6.5 u) for
# gm-sop-4-2, 6e-4 to 1.4e-3 for gap; 1e-2 (~20 u) leaves a margin of 3, while another
# initialisation's logits differ by more than 1.0 relative.
LOGIT_TOLERANCE = 1e-2

TWO_REPLICAS = textwrap.dedent(
    """
    import json
    import sys

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    import gmsop_keras

    head, options = sys.argv[1], json.loads(sys.argv[2])
    keras.utils.set_random_seed(0)


    def sublayers(layer, seen):
        for value in vars(layer).values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, keras.layers.Layer) and id(item) not in seen:
                    seen.add(id(item))
                    yield item
                    yield from sublayers(item, seen)


    def frozen_model():
        model = gmsop_keras.build_model("resnet18", head, num_classes=4, input_shape=(16, 16, 3), **options)
        norms = [layer for layer in sublayers(model, set()) if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in norms:
            layer.trainable = False  # Keras runs a frozen BatchNorm in inference mode
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, len(norms)


    single, frozen = frozen_model()
    initial = single.get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored, _ = frozen_model()
    mirrored.set_weights(initial)

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (24, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 4, 24)
    losses = []
    for model in (single, mirrored):  # 3 global batches of 8, in order; 4 images per replica
        batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
        losses.append(model.fit(batches, epochs=1, shuffle=False, verbose=0).history["loss"][0])

    paths = [w.path for w in single.weights]
    trainable = [w.trainable for w in single.weights]
    after, other = single.get_weights(), mirrored.get_weights()
    gaps = [float(np.abs(a - b).max()) for a, b in zip(after, other)]
    worst = int(np.argmax([g if t else -1.0 for g, t in zip(gaps, trainable)]))
    statistics = [i for i, p in enumerate(paths) if p.endswith(("moving_mean", "moving_variance"))]
    single(images[:8], training=True)  # the added losses of one training-mode call: the balance loss
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "frozen": frozen,
        "moving_means": sum(p.endswith("moving_mean") for p in paths),
        "losses": losses,
        "scale": max(float(np.abs(a).max()) for a, t in zip(after, trainable) if t),
        "moved": max(float(np.abs(a - i).max()) for a, i, t in zip(after, initial, trainable) if t),
        "diff": max(g for g, t in zip(gaps, trainable) if t),
        "worst": paths[worst],
        "non_trainable_diff": max([g for g, t in zip(gaps, trainable) if not t] or [0.0]),
        "statistics_moved": max(max(float(np.abs(w[i] - initial[i]).max()) for i in statistics)
                                for w in (after, other)),
        "balance_loss": sum(float(loss) for loss in single.losses),
        "gate_kernel_moved": max([float(np.abs(a - i).max()) for a, i, p in zip(after, initial, paths)
                                  if p.endswith("gate/gate_kernel")] or [0.0]),
    }))
    """
)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_two_replicas_train_as_one_on_the_same_global_batches(head):
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS, head, json.dumps(HEADS[head])], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["replicas"] == 2
    # Every BatchNormalization was found and frozen, and ran in inference mode in both models.
    assert measured["frozen"] == measured["moving_means"] > 0
    assert measured["statistics_moved"] == 0.0
    # The steps did something: the weights moved far beyond the tolerance.
    assert measured["moved"] > 1e2 * WEIGHT_TOLERANCE, measured
    if head.startswith("gm-"):  # the balance loss is on, large, and reached the gate
        assert measured["balance_loss"] > 1.0, measured
        assert measured["gate_kernel_moved"] > 1e2 * WEIGHT_TOLERANCE, measured
    else:
        assert measured["balance_loss"] == 0.0
    # The comparison: the same loss and the same weights (routing counts included).
    assert measured["losses"][1] == pytest.approx(measured["losses"][0], rel=1e-5)
    assert measured["diff"] <= WEIGHT_TOLERANCE * max(1.0, measured["scale"]), measured
    assert measured["non_trainable_diff"] <= WEIGHT_TOLERANCE, measured


@pytest.fixture
def policy_restored():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _compute_dtypes(model):
    dtypes, stack, seen = set(), [model], set()
    while stack:
        for value in vars(stack.pop()).values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, keras.layers.Layer) and id(item) not in seen:
                    seen.add(id(item))
                    dtypes.add(item.compute_dtype)
                    stack.append(item)
    return dtypes


@pytest.mark.parametrize("head", sorted(HEADS))
def test_mixed_precision_logits_match_float32_on_the_same_weights(head, policy_restored):
    import gmsop_keras

    def build(policy):
        keras.mixed_precision.set_global_policy(policy)
        return gmsop_keras.build_model("resnet18", head, num_classes=4, input_shape=(16, 16, 3), **HEADS[head])

    reference, mixed = build("float32"), build("mixed_float16")
    keras.mixed_precision.set_global_policy("float32")
    assert "float16" in _compute_dtypes(mixed) and "float16" not in _compute_dtypes(reference)
    own = mixed.get_weights()
    mixed.set_weights(reference.get_weights())

    images = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(images, training=False))
    logits = mixed(images, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    scale = float(np.abs(expected).max())
    relative = float(np.abs(keras.ops.convert_to_numpy(logits) - expected).max()) / scale
    assert 0.0 < relative <= LOGIT_TOLERANCE, relative  # > 0: float16 did compute
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(logits).argmax(axis=1), expected.argmax(axis=1))

    # The tolerance tells weights apart: the mixed model's own initial weights miss by far.
    mixed.set_weights(own)
    other = keras.ops.convert_to_numpy(mixed(images, training=False))
    assert float(np.abs(other - expected).max()) / scale > 10 * LOGIT_TOLERANCE
