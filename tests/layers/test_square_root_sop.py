"""SquareRootSOP and ParametricGAP: closed-form cases, numpy references, serialization, training."""

import keras
import numpy as np
import pytest

from gmsop_keras.layers import ParametricGAP, SquareRootSOP
from tests.layer_checks import check_layer


def checker(size=4):
    return np.indices((size, size)).sum(axis=0) % 2 * 2.0 - 1.0


def stripes(size=4):
    return np.indices((size, size))[0] % 2 * 2.0 - 1.0


def test_sr_sop_of_a_map_with_known_covariance():
    """Two orthogonal zero-mean patterns of amplitude 1 and 2: Sigma = diag(1, 4), sqrt = diag(1, 2)."""
    x = np.stack([checker(), 2.0 * stripes()], axis=-1)[None].astype("float32")
    got = keras.ops.convert_to_numpy(SquareRootSOP(num_iterations=20)(x))[0]
    np.testing.assert_allclose(got, [1.0, 0.0, 2.0], atol=1e-5)  # upper triangle of diag(1, 2)


def test_sr_sop_of_a_rank_one_map_is_exact_at_five_iterations():
    """Channel 1 = 2 x channel 0: Sigma = v v^T with v = (1, 2), sqrt = v v^T / |v|."""
    x = np.stack([checker(), 2.0 * checker()], axis=-1)[None].astype("float32")
    got = keras.ops.convert_to_numpy(SquareRootSOP(num_iterations=5)(x))[0]
    np.testing.assert_allclose(got, np.array([1.0, 2.0, 4.0]) / np.sqrt(5.0), rtol=1e-5)


def test_parametric_sr_sop_equals_sr_sop_of_the_convolved_map():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 6)).astype("float32")
    layer = SquareRootSOP(hidden_dims=(8, 4), num_iterations=3)
    got = keras.ops.convert_to_numpy(layer(x))
    k0, k1 = (np.array(w) for w in layer.kernels)
    mapped = np.maximum(np.maximum(x @ k0, 0) @ k1, 0)
    expected = keras.ops.convert_to_numpy(SquareRootSOP(num_iterations=3)(mapped))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert layer.output_dim == 10


def test_parametric_gap_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 4, 5)).astype("float32")
    layer = ParametricGAP(7)
    got = keras.ops.convert_to_numpy(layer(x))
    expected = np.maximum(x @ np.array(layer.kernel), 0).mean(axis=(1, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_hidden_kernels_are_independent():
    layer = SquareRootSOP(hidden_dims=(6, 6))
    layer.build((None, 4, 4, 6))
    k0, k1 = (np.array(w) for w in layer.kernels)
    assert not np.allclose(k0, k1)


@pytest.mark.parametrize(
    "make_layer, expected_dim",
    [
        (lambda: SquareRootSOP(), 15),
        (lambda: SquareRootSOP(hidden_dims=(8, 4), num_iterations=3), 10),
        (lambda: ParametricGAP(6), 6),
    ],
)
def test_layer_contract(make_layer, expected_dim, tmp_path):
    x = np.random.default_rng(2).standard_normal((4, 5, 5, 5)).astype("float32")
    check_layer(make_layer, x, (4, expected_dim), tmp_path)


def test_runs_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = SquareRootSOP(hidden_dims=(8, 4))
        y = layer(np.ones((2, 4, 4, 6), dtype="float16") + np.eye(4)[None, :, :, None])
        assert layer.compute_dtype == "float32" and y.dtype.name == "float32"
        assert ParametricGAP(3).compute_dtype == "float16"  # first-order parts follow the policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="num_iterations"):
        SquareRootSOP(num_iterations=0)
    with pytest.raises(ValueError, match="hidden_dims"):
        SquareRootSOP(hidden_dims=(0,))
    with pytest.raises(ValueError, match="units"):
        ParametricGAP(0)
    with pytest.raises(ValueError, match="feature maps"):
        SquareRootSOP()(np.zeros((2, 5), dtype="float32"))
