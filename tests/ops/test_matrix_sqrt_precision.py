"""newton_schulz_sqrt's `compute_dtype`: half-precision products against float64, finite on degenerate input.

Tolerances, as the largest error relative to the reference's largest entry (16x16 covariances of 64
positions; measured on a CPU: float32 5e-7, float16 2e-3, bfloat16 2e-2 at worst over the three kinds):
float32 1e-5, float16 6e-3, bfloat16 5e-2, for the output and for the gradient alike.
"""

import numpy as np
import pytest
import tensorflow as tf

from gmsop_keras.ops import newton_schulz_sqrt

TOLERANCE = {None: 1e-5, "float32": 1e-5, "float16": 6e-3, "bfloat16": 5e-2}


def covariances(kind, rng, batch=3, dim=16, positions=64):
    """Well-conditioned, ill-conditioned (eigenvalues over ~6 decades) or rank-4 covariances, float64."""
    x = rng.standard_normal((batch, positions, dim))
    if kind == "ill":
        x = x * np.logspace(0, -3, dim)
    elif kind == "rank-deficient":
        x = x[:, :, :4] @ rng.standard_normal((4, dim))
    x -= x.mean(axis=1, keepdims=True)
    return np.einsum("bli,blj->bij", x, x) / positions


def numpy_newton_schulz(a, num_iterations):
    """The iSQRT-COV iteration in float64 NumPy."""
    out = np.empty_like(a)
    for i, m in enumerate(a):
        trace = np.trace(m)
        y, z = m / trace, np.eye(len(m))
        for _ in range(num_iterations):
            t = 0.5 * (3.0 * np.eye(len(m)) - z @ y)
            y, z = y @ t, t @ z
        out[i] = y * np.sqrt(trace)
    return out


def value_and_gradient(a, upstream, compute_dtype, dtype="float32", num_iterations=5):
    a = tf.constant(a.astype(dtype))
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = newton_schulz_sqrt(a, num_iterations, compute_dtype=compute_dtype)
        loss = tf.reduce_sum(out * tf.constant(upstream, out.dtype))
    return out, tape.gradient(loss, a)


def relative_error(got, want):
    return np.abs(np.asarray(got, "float64") - want).max() / np.abs(want).max()


@pytest.mark.parametrize("kind", ["well", "ill", "rank-deficient"])
@pytest.mark.parametrize("compute_dtype", [None, "float32", "float16", "bfloat16"])
def test_forward_and_gradient_match_float64(kind, compute_dtype):
    rng = np.random.default_rng(0)
    a = covariances(kind, rng)
    upstream = rng.standard_normal(a.shape)
    # The reference: the same iteration in float64 NumPy; its gradient the float64 analytic one
    # (checked against finite differences in test_matrix_sqrt.py).
    _, reference_gradient = value_and_gradient(a, upstream, None, dtype="float64")
    out, gradient = value_and_gradient(a, upstream, compute_dtype)
    assert out.dtype == "float32" and gradient.dtype == "float32"  # the result stays float32
    assert relative_error(out, numpy_newton_schulz(a, 5)) < TOLERANCE[compute_dtype]
    assert relative_error(gradient, reference_gradient.numpy()) < TOLERANCE[compute_dtype]


@pytest.mark.parametrize("compute_dtype", ["float16", "bfloat16"])
def test_half_products_converge_to_the_eigendecomposition_square_root(compute_dtype):
    a = covariances("well", np.random.default_rng(1))
    values, vectors = np.linalg.eigh(a)
    exact = np.einsum("bij,bj,bkj->bik", vectors, np.sqrt(np.clip(values, 0, None)), vectors)
    out, _ = value_and_gradient(a, np.ones_like(a), compute_dtype, num_iterations=15)
    assert relative_error(out, exact) < TOLERANCE[compute_dtype]


@pytest.mark.parametrize("compute_dtype", ["float16", "bfloat16"])
def test_loss_scaled_gradient_neither_overflows_nor_loses_its_scale(compute_dtype):
    """A mixed-precision loss scale (2^15) times the gradient would overflow float16 products unscaled."""
    rng = np.random.default_rng(2)
    a = covariances("well", rng) * 400.0  # a large trace: the post-compensation multiplies G by 20
    upstream = rng.standard_normal(a.shape)
    _, reference = value_and_gradient(a, upstream, None, dtype="float64")
    _, gradient = value_and_gradient(a, upstream * 2.0**15, compute_dtype)
    assert np.all(np.isfinite(gradient.numpy()))
    assert relative_error(gradient.numpy() / 2.0**15, reference.numpy()) < TOLERANCE[compute_dtype]


@pytest.mark.parametrize("compute_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["zeros", "constant-map", "rank-1"])
def test_degenerate_input_gives_finite_values_and_gradients(compute_dtype, kind):
    dim = 8
    if kind == "zeros" or kind == "constant-map":  # a constant map's covariance is zero
        a = np.zeros((2, dim, dim))
    else:
        v = np.arange(1.0, dim + 1)
        a = np.stack([np.outer(v, v), 1e-6 * np.outer(v, v)])
    out, gradient = value_and_gradient(a, np.ones_like(a), compute_dtype)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(gradient.numpy()))
    if kind == "rank-1":  # sqrt(v v^T) = v v^T / |v|, which the iteration reaches
        want = a / np.sqrt(np.trace(a, axis1=1, axis2=2))[:, None, None]
        assert relative_error(out, want) < TOLERANCE[compute_dtype]
    else:
        np.testing.assert_array_equal(out.numpy(), 0.0)


def test_rejects_an_unknown_compute_dtype():
    with pytest.raises(ValueError, match="`compute_dtype` must be None or one of"):
        newton_schulz_sqrt(np.eye(3, dtype="float32")[None], compute_dtype="float8")
