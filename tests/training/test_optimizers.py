"""Weight decay: the coupled L2 step against numpy, the decoupled step's formula, exemptions, presets."""

import numpy as np
import pytest

import keras

from gmsop_keras.training.optimizers import CoupledWeightDecaySGD
from gmsop_keras.training.compile import make_optimizer


def _tiny_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, outputs)


def _steps(optimizer, steps, model=None):
    """Applies `steps` fixed gradients; returns {path: (initial, final, gradients)} in float64."""
    model = model or _tiny_model()
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    grads = [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(steps)]
    initial = [np.array(v.numpy(), dtype="float64") for v in variables]
    for step in grads:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in step], variables))
    return {v.path: (w0, np.array(v.numpy(), dtype="float64"), [np.float64(step[i]) for step in grads])
            for i, (v, w0) in enumerate(zip(variables, initial))}


def _momentum_l2(w, grads, lr, momentum, l2):
    """Momentum SGD with the L2 term in the gradient: v = m v - lr (g + l2 w); w += v."""
    v = np.zeros_like(w)
    for g in grads:
        v = momentum * v - lr * (g + l2 * w)
        w = w + v
    return w


@pytest.mark.parametrize("steps", [1, 2])
def test_coupled_steps_equal_momentum_sgd_with_l2_in_the_gradient(steps):
    lr, momentum, l2 = 0.1, 0.9, 0.05
    optimizer = CoupledWeightDecaySGD(learning_rate=lr, momentum=momentum, l2=l2, l2_exempt=("gamma", "beta", "bias"))
    for path, (w0, w, grads) in _steps(optimizer, steps).items():
        decayed = not path.endswith(("gamma", "beta", "bias"))
        expected = _momentum_l2(w0, grads, lr, momentum, l2 if decayed else 0.0)
        np.testing.assert_allclose(w, expected, atol=1e-6, rtol=0, err_msg=path)
        if decayed:  # the L2 term moved it: not merely plain momentum SGD
            assert np.abs(_momentum_l2(w0, grads, lr, momentum, 0.0) - expected).max() > 1e-4


def test_coupled_without_exemptions_decays_every_variable():
    lr, momentum, l2 = 0.1, 0.9, 0.05
    optimizer = CoupledWeightDecaySGD(learning_rate=lr, momentum=momentum, l2=l2)
    for path, (w0, w, grads) in _steps(optimizer, 2).items():
        np.testing.assert_allclose(w, _momentum_l2(w0, grads, lr, momentum, l2), atol=1e-6, rtol=0, err_msg=path)


def test_decoupled_step_is_keras_decay_outside_the_momentum():
    lr, momentum, wd = 0.1, 0.9, 5e-2
    config = dict(momentum=momentum, weight_decay=wd, weight_decay_mode="decoupled", decay_norms_and_biases=False)
    optimizer = make_optimizer(config, lr)
    decay = wd / (1 - momentum)
    for path, (w0, w, grads) in _steps(optimizer, 2).items():
        exempt = path.endswith(("gamma", "beta", "bias"))
        expected, v = w0, np.zeros_like(w0)
        for g in grads:  # Keras: w <- w - lr * decay * w, then the momentum step on g alone
            if not exempt:
                expected = expected - lr * decay * expected
            v = momentum * v - lr * g
            expected = expected + v
        np.testing.assert_allclose(w, expected, atol=1e-6, rtol=0, err_msg=path)


def test_coupled_optimizer_round_trips_through_its_config():
    optimizer = CoupledWeightDecaySGD(learning_rate=0.1, momentum=0.9, l2=1e-4, l2_exempt=("gamma",))
    config = keras.optimizers.serialize(optimizer)
    again = keras.optimizers.deserialize(config)
    assert isinstance(again, CoupledWeightDecaySGD) and again.l2 == 1e-4 and again.l2_exempt == ("gamma",)
    assert again.get_config() == optimizer.get_config()


def test_coupled_refuses_decoupled_decay_and_negative_l2():
    with pytest.raises(ValueError, match="`weight_decay` \\(decoupled\\) cannot be combined"):
        CoupledWeightDecaySGD(l2=1e-4, weight_decay=1e-4)
    with pytest.raises(ValueError, match="`l2` must be >= 0"):
        CoupledWeightDecaySGD(l2=-1.0)


@pytest.mark.parametrize(
    "preset, kind, decay, exempt",
    [
        ("default", keras.optimizers.SGD, 5e-4 / (1 - 0.9), True),
        ("paper", CoupledWeightDecaySGD, 5e-4, False),
        ("official", CoupledWeightDecaySGD, 1e-4, False),
    ],
)
def test_each_presets_optimizer(preset, kind, decay, exempt):
    from gmsop_keras.cli.arguments import resolve_config

    config = resolve_config(["--preset", preset, "--dataset", "imagenet64", "--head", "gm-sop-16-8"])
    optimizer = make_optimizer(config, 0.1)
    assert type(optimizer) is kind and optimizer.momentum == 0.9
    model = _tiny_model()
    optimizer.build(model.trainable_variables)
    if kind is CoupledWeightDecaySGD:
        assert optimizer.weight_decay is None and optimizer.l2 == pytest.approx(decay)
        decayed = {v.path for v in model.trainable_variables if optimizer.decays(v)}
    else:
        assert optimizer.weight_decay == pytest.approx(decay)
        decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    expected = {"dense/kernel", "logits/kernel"} if exempt else {v.path for v in model.trainable_variables}
    assert decayed == expected
