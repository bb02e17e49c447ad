"""SparseMoE's balance loss against a float64 numpy transcription of paper Eq. 4.

With `noise="none"` the gate is deterministic: its input is the feature standardised by a
BatchNorm without scale or offset (the batch's statistics when training, epsilon 1e-5) and divided
by sqrt(features), the logits are `input @ gate_kernel`, and the weights a softmax over each row's
`top_k` largest logits (0 elsewhere). Then

    importance = sum over the batch of the weights                  (one value per expert)
    loss = alpha * (std(importance) / mean(importance))^2 / batch    (std over N - 1)

the division by the batch keeping alpha's meaning under Keras' mean cross-entropy.
"""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import SparseMoE

BN_EPSILON = 1e-5
NUM_EXPERTS, TOP_K, FEATURES, UNITS, BATCH = 6, 2, 5, 3, 16


def numpy_gate_weights(layer, x, gate_input_norm):
    x = x.astype("float64")
    if gate_input_norm:  # training: the batch's (biased) statistics
        x = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + BN_EPSILON) / np.sqrt(x.shape[1])
    logits = x @ np.float64(keras.ops.convert_to_numpy(layer.gate.gate_kernel))
    kept = np.argsort(-logits, axis=1)[:, :TOP_K]
    weights = np.zeros_like(logits)
    rows = np.arange(len(logits))[:, None]
    top = np.exp(logits[rows, kept] - logits[rows, kept].max(axis=1, keepdims=True))
    weights[rows, kept] = top / top.sum(axis=1, keepdims=True)
    return weights


def numpy_balance_loss(weights, alpha):
    importance = weights.sum(axis=0)
    cv = importance.std(ddof=1) / importance.mean()
    return alpha * cv**2 / len(weights)


def skewed_features(seed):
    """Features whose first one is large and shared: the gate sends most samples to a few experts."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, FEATURES))
    x[:, 0] = 3.0 + 0.5 * x[:, 0]
    return x.astype("float32")


@pytest.mark.parametrize("gate_input_norm", [True, False])
@pytest.mark.parametrize("alpha", [100.0, 0.5])
def test_training_adds_alpha_times_cv_squared_of_the_importance_over_the_batch(gate_input_norm, alpha):
    """The one added loss equals the numpy formula to 1e-5 relative, and is clearly non-zero."""
    x = skewed_features(int(alpha))
    layer = SparseMoE(NUM_EXPERTS, TOP_K, units=UNITS, balance_loss_weight=alpha, noise="none",
                      gate_input_norm=gate_input_norm, seed=1)
    layer.build(x.shape)
    if not gate_input_norm:  # a raw feature: bias the gate kernel towards two experts
        kernel = keras.ops.convert_to_numpy(layer.gate.gate_kernel)
        kernel[0, :2] += 1.0
        layer.gate.gate_kernel.assign(kernel)
    layer(x, training=True)
    weights = numpy_gate_weights(layer, x, gate_input_norm)
    want = numpy_balance_loss(weights, alpha)
    importance = weights.sum(axis=0)
    assert importance.std(ddof=1) / importance.mean() > 0.3  # an uneven load: the loss is not ~0
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(want, rel=1e-5)
    assert want > 1e-3 * alpha  # far above float32 round-off


def test_the_gate_weights_in_the_output_are_the_numpy_ones():
    """y = sum_i w_i relu(x E_i): the weights behind the loss are those of the output too."""
    x = skewed_features(7)
    layer = SparseMoE(NUM_EXPERTS, TOP_K, units=UNITS, noise="none", seed=1)
    got = keras.ops.convert_to_numpy(layer(x, training=True))
    weights = numpy_gate_weights(layer, x, gate_input_norm=True)
    experts = np.maximum(np.einsum("bc,ncu->bnu", x.astype("float64"),
                                   np.float64(keras.ops.convert_to_numpy(layer.expert_kernel))), 0)
    np.testing.assert_allclose(got, np.einsum("bn,bnu->bu", weights, experts), rtol=1e-4, atol=1e-6)


def test_no_loss_at_inference():
    layer = SparseMoE(NUM_EXPERTS, TOP_K, units=UNITS, noise="none", seed=1)
    layer(skewed_features(8), training=False)
    assert layer.losses == []
