"""NetVLAD: equals a float64 numpy NetVLAD, normalisations hold, config / save / training contract."""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import NetVLAD
from tests.layer_checks import check_layer


def numpy_netvlad(x, kernel, bias, centroids):
    """NetVLAD of Arandjelovic et al. written out per cluster and position, in float64."""
    x, kernel, bias, centroids = (np.asarray(a, dtype=np.float64) for a in (x, kernel, bias, centroids))
    batch, height, width, channels = x.shape
    out = []
    for b in range(batch):
        positions = x[b].reshape(height * width, channels)
        logits = positions @ kernel + bias
        assignment = np.exp(logits - logits.max(axis=1, keepdims=True))
        assignment /= assignment.sum(axis=1, keepdims=True)  # (L, K)
        vlad = np.zeros_like(centroids)
        for k in range(len(centroids)):
            for i in range(len(positions)):
                vlad[k] += assignment[i, k] * (positions[i] - centroids[k])
            vlad[k] /= np.linalg.norm(vlad[k])
        vlad = vlad.reshape(-1)
        out.append(vlad / np.linalg.norm(vlad))
    return np.stack(out)


def maps(batch=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, 4, 5)).astype("float32")


def test_equals_the_numpy_reference():
    layer = NetVLAD(4)
    x = maps()
    y = keras.ops.convert_to_numpy(layer(x))
    rng = np.random.default_rng(1)  # a non-zero bias, so that it is exercised too
    layer.assignment_bias.assign(rng.standard_normal(4).astype("float32"))
    y = keras.ops.convert_to_numpy(layer(x))
    expected = numpy_netvlad(x, layer.assignment_kernel.numpy(), layer.assignment_bias.numpy(), layer.centroids.numpy())
    assert y.shape == (3, 20)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_intra_and_global_normalisation():
    y = keras.ops.convert_to_numpy(NetVLAD(4)(maps()))
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
    # Every cluster's block has the same norm 1 / sqrt(K) after both normalisations.
    np.testing.assert_allclose(np.linalg.norm(y.reshape(3, 4, 5), axis=2), 0.5, rtol=1e-5)


def test_hand_computed_case():
    # A zero assignment kernel: each of the 2 clusters takes every position with weight 1/2; with the
    # centroids (0, 0) and (1, 1): V_1 = (4, 2) / 2 = (2, 1), V_2 = V_1 - (1/2 + 1/2) (1, 1) = (1, 0).
    layer = NetVLAD(2, kernel_initializer="zeros", centroid_initializer="ones")
    x = np.array([[[[1.0, 2.0], [3.0, 0.0]]]], "float32")  # (1, 1, 2, 2)
    layer.build(x.shape)
    layer.centroids.assign(np.array([[0.0, 0.0], [1.0, 1.0]], "float32"))
    y = keras.ops.convert_to_numpy(layer(x))
    # Intra-normalised: (2, 1) / sqrt(5) and (1, 0); then both blocks / sqrt(2).
    expected = np.array([[2 / 5**0.5, 1 / 5**0.5, 1.0, 0.0]]) / 2**0.5
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)


def test_float32_under_mixed_precision():
    layer = NetVLAD(2, dtype=keras.DTypePolicy("mixed_float16"))
    assert layer(maps().astype("float16")).dtype == "float16"  # an explicit policy is honoured
    assert NetVLAD(2).compute_dtype == "float32"  # the default computes in float32 under any global policy


def test_layer_contract(tmp_path):
    check_layer(lambda: NetVLAD(3), maps(batch=4), (4, 15), tmp_path)


@pytest.mark.parametrize("clusters", [0, -1, 2.5, True])
def test_rejects_bad_num_clusters(clusters):
    with pytest.raises(ValueError, match="`num_clusters` must be a positive integer"):
        NetVLAD(clusters)


def test_rejects_vectors():
    with pytest.raises(ValueError, match="expects feature maps"):
        NetVLAD(2)(np.ones((2, 5), "float32"))
