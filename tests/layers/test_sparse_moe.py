"""SparseMoE: equals the weighted sum of the selected experts (numpy), gate and contract."""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import NoisyTopKGate, SparseMoE
from tests.layer_checks import check_layer


def features(batch=6, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 8)).astype("float32")


def test_equals_the_weighted_sum_of_the_selected_experts():
    layer = SparseMoE(5, 2, units=3, noise="none", gate_input_norm=False)
    x = features()
    y = keras.ops.convert_to_numpy(layer(x))
    x64 = x.astype(np.float64)
    kernels = layer.expert_kernel.numpy().astype(np.float64)  # (N, C, units)
    logits = x64 @ layer.gate.gate_kernel.numpy().astype(np.float64)
    expected = np.zeros((len(x), 3))
    for b in range(len(x)):
        top = np.argsort(-logits[b])[:2]
        weights = np.exp(logits[b, top] - logits[b, top].max())
        weights /= weights.sum()
        for w, i in zip(weights, top):
            expected[b] += w * np.maximum(x64[b] @ kernels[i], 0.0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_gate_input_is_standardised_by_default():
    # While training, the gate sees the batch-standardised feature / sqrt(features); the experts the raw one.
    layer = SparseMoE(4, 2, units=3, noise="none")
    x = features(batch=16) * 7.0 + 3.0
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    standardised = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) / np.sqrt(8.0)
    weights = keras.ops.convert_to_numpy(layer.gate(standardised.astype("float32")))
    experts = np.maximum(np.einsum("bc,ncu->bnu", x, layer.expert_kernel.numpy()), 0.0)
    np.testing.assert_allclose(y, np.einsum("bn,bnu->bu", weights, experts), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal((weights > 0).sum(axis=1), 2)


def test_balance_loss_only_when_training():
    layer = SparseMoE(4, 2, units=3)
    x = features()
    layer(x, training=False)
    assert layer.losses == []
    layer(x, training=True)
    assert len(layer.losses) == 1 and float(layer.losses[0]) >= 0.0


def test_layer_contract(tmp_path):
    check_layer(lambda: SparseMoE(4, 2, units=3, noise="none"), features(), (6, 3), tmp_path, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_experts=4, top_k=5), "top_k"),
        (dict(num_experts=4, top_k=2, units=0), "`units` must be a positive integer"),
        (dict(num_experts=4, top_k=2, noise="loud"), "`noise` must be one of"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseMoE(**kwargs)
