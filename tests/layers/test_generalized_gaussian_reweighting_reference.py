"""GeneralizedGaussianReweighting against a float64 numpy transcription of the 3G-Net stage.

From the docstring, with `z` the input and `x_0 = z`, stage `t` (1x1 convolutions without bias,
each followed by a BatchNorm with epsilon 1e-5) computes

    U = ReLU(BN(W1 x) * BN(W2 x) + BN(W21 z))
    V = ReLU(BN(W3 U)) * ReLU(BN(W4 U))
    s = W_b ReLU(BN(W_a V)) * (1 + w)
    x_{t+1} = sigmoid(s) * x_t

BatchNorm uses the moving statistics at inference and the batch's (biased) statistics over batch,
height and width when training. The weights are read by their paths (`stage_0/w1/kernel`, ...).
"""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import GeneralizedGaussianReweighting

BN_EPSILON = 1e-5  # the authors' (PyTorch's) BatchNorm epsilon
RTOL = 1e-4  # float32 layer against float64 numpy


def weights_by_path(layer):
    """`{"stage_0/w1/kernel": variable, ...}`, the layer's own name left out."""
    return {w.path.split("/", 1)[1]: w for w in layer.weights}


def randomise(layer, seed, shape):
    """Scales, offsets, `w` and moving statistics away from their defaults, so that each matters.

    `W21` is shrunk 50 times, so that its BatchNorm sees variances of about 1e-3, where the epsilon
    (1e-5 against Keras' default 1e-3) matters. The moving statistics are those of 30 training
    calls on other batches, then moved by up to 30%: realistic (moving statistics far from the
    data's saturate every weight at 0 after two stages) but not the statistics of the test batch.
    """
    rng = np.random.default_rng(seed)
    weights = weights_by_path(layer)
    for path, variable in weights.items():
        size = tuple(variable.shape)[:1] or None
        kind = path.rsplit("/", 1)[1]
        if path.endswith("w21/kernel"):
            variable.assign(keras.ops.convert_to_numpy(variable) / 50.0)
        elif kind == "gamma":
            variable.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
        elif kind == "beta":
            variable.assign(rng.uniform(-0.5, 0.5, size).astype("float32"))
        elif kind == "scale":  # (1 + w) of order one: weights spread over (0, 1), not saturated
            variable.assign(rng.uniform(-0.7, -0.3))
        elif kind in ("moving_mean", "moving_variance"):  # forget the initial 0 and 1
            variable.assign(np.zeros(size, dtype="float32"))
    for _ in range(30):
        layer(rng.standard_normal(shape).astype("float32"), training=True)
    for path, variable in weights.items():
        size = tuple(variable.shape)[:1] or None
        value = keras.ops.convert_to_numpy(variable)
        if path.endswith("moving_variance"):
            variable.assign((value * rng.uniform(0.7, 1.3, size)).astype("float32"))
        elif path.endswith("moving_mean"):
            spread = np.sqrt(keras.ops.convert_to_numpy(weights[path.replace("mean", "variance")]))
            variable.assign((value + 0.3 * spread * rng.uniform(-1, 1, size)).astype("float32"))


def numpy_reweighting(layer, z, training):
    """The re-weighted map of the docstring, float64."""
    weights = {path: np.float64(keras.ops.convert_to_numpy(w)) for path, w in weights_by_path(layer).items()}
    assert not [path for path in weights if path.endswith("/bias")]  # no bias anywhere, W_b included

    def conv(name, value):  # 1x1, no bias
        kernel = weights[f"{name}/kernel"]
        return np.einsum("bhwc,cd->bhwd", value, kernel[0, 0])

    def batch_norm(name, value):
        if training:
            mean, variance = value.mean(axis=(0, 1, 2)), value.var(axis=(0, 1, 2))
        else:
            mean, variance = weights[f"{name}/moving_mean"], weights[f"{name}/moving_variance"]
        gamma, beta = weights[f"{name}/gamma"], weights[f"{name}/beta"]
        return gamma * (value - mean) / np.sqrt(variance + BN_EPSILON) + beta

    def relu(value):
        return np.maximum(value, 0.0)

    z = z.astype("float64")
    x = z
    for t in range(layer.num_stages):
        def branch(name, value):
            return batch_norm(f"stage_{t}/{name}_norm", conv(f"stage_{t}/{name}", value))

        u = relu(branch("w1", x) * branch("w2", x) + branch("w21", z))
        v = relu(branch("w3", u)) * relu(branch("w4", u))
        s = conv(f"stage_{t}/wb", relu(branch("wa", v)))[..., 0] * (1.0 + weights[f"stage_{t}/scale"])
        x = x / (1.0 + np.exp(-s))[..., None]
    return x


def feature_map(seed, shape=(4, 3, 3, 8)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def assert_matches(got, want):
    """RTOL relative, with an absolute floor of RTOL times the map's scale for weights near 0."""
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())


@pytest.mark.parametrize("num_stages", [2, 3])
def test_inference_matches_numpy_with_the_moving_statistics(num_stages):
    z = feature_map(num_stages)
    layer = GeneralizedGaussianReweighting(num_stages=num_stages)
    layer.build(z.shape)
    randomise(layer, num_stages, z.shape)
    want = numpy_reweighting(layer, z, training=False)
    weight = want[..., 0] / z[..., 0]
    assert weight.std() > 0.01 and 0.01 < np.median(weight) < 0.99  # weights that discriminate
    assert_matches(keras.ops.convert_to_numpy(layer(z, training=False)), want)


@pytest.mark.parametrize("num_stages", [2, 3])
def test_training_matches_numpy_with_the_batch_statistics(num_stages):
    z = feature_map(10 + num_stages)
    layer = GeneralizedGaussianReweighting(num_stages=num_stages)
    layer.build(z.shape)
    randomise(layer, 10 + num_stages, z.shape)
    want = numpy_reweighting(layer, z, training=True)
    weight = want[..., 0] / z[..., 0]
    assert weight.std() > 0.01 and 0.01 < np.median(weight) < 0.99
    assert_matches(keras.ops.convert_to_numpy(layer(z, training=True)), want)
    # the moving statistics were not what training used
    assert np.abs(numpy_reweighting(layer, z, training=False) - want).max() > 0.1 * np.abs(want).max()
