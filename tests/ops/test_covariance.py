"""covariance and triu_vectorize against numpy."""

import keras
import numpy as np
import pytest

from gmsop_keras.ops import covariance, triu_output_dim, triu_vectorize


def test_covariance_matches_numpy_biased_covariance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4, 6)) * 3.0 + 2.0
    got = keras.ops.convert_to_numpy(covariance(x))
    # float64 stays float64, except under JAX without x64, which computes it in float32.
    tolerance = 1e-12 if got.dtype == np.float64 else 1e-5
    for b in range(3):
        expected = np.cov(x[b].reshape(20, 6), rowvar=False, bias=True)
        np.testing.assert_allclose(got[b], expected, rtol=tolerance, atol=tolerance * 10)


def test_covariance_upcasts_half_precision_to_float32():
    x = np.random.default_rng(1).standard_normal((2, 4, 4, 3)).astype("float16")
    got = covariance(x)
    assert got.dtype.name == "float32"
    expected = np.cov(x[0].astype("float64").reshape(16, 3), rowvar=False, bias=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got)[0], expected, rtol=1e-5, atol=1e-6)


def test_covariance_of_a_hand_built_map():
    """Channel 1 = 2 x channel 0 (a +-1 checkerboard), channel 2 constant."""
    checker = np.indices((4, 4)).sum(axis=0) % 2 * 2.0 - 1.0
    x = np.stack([checker, 2 * checker, np.full((4, 4), 7.0)], axis=-1)[None]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(covariance(x))[0], [[1, 2, 0], [2, 4, 0], [0, 0, 0]], atol=1e-12
    )


def test_covariance_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        covariance(np.zeros((4, 4)))


def test_triu_vectorize_order_and_size():
    a = np.arange(2 * 4 * 4, dtype="float32").reshape(2, 4, 4)
    got = keras.ops.convert_to_numpy(triu_vectorize(a))
    rows, cols = np.triu_indices(4)
    np.testing.assert_array_equal(got, a[:, rows, cols])
    assert got.shape == (2, triu_output_dim(4)) == (2, 10)
    assert triu_output_dim(128) == 8256
