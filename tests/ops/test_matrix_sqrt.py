"""newton_schulz_sqrt: forward against numpy/scipy, custom gradient against autodiff and finite differences."""

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from gmsop_keras.ops import newton_schulz_sqrt
from gmsop_keras.ops.matrix_sqrt import TRACE_EPSILON


def spd_batch(rng, batch=3, dim=6, positions=40, dtype="float64"):
    x = rng.standard_normal((batch, positions, dim))
    x -= x.mean(axis=1, keepdims=True)
    return (np.einsum("bli,blj->bij", x, x) / positions).astype(dtype)


def numpy_newton_schulz(a, num_iterations):
    """The iSQRT-COV iteration, written plainly in float64 numpy."""
    out = np.empty_like(a, dtype="float64")
    for i, m in enumerate(a.astype("float64")):
        trace = np.trace(m)
        y, z = m / trace, np.eye(m.shape[0])
        for _ in range(num_iterations):
            t = 0.5 * (3.0 * np.eye(m.shape[0]) - z @ y)
            y, z = y @ t, t @ z
        out[i] = y * np.sqrt(trace)
    return out


def gradient(a, upstream, num_iterations, custom):
    a = tf.constant(a)
    with tf.GradientTape() as tape:
        tape.watch(a)
        loss = tf.reduce_sum(newton_schulz_sqrt(a, num_iterations, custom_gradient=custom) * upstream)
    return tape.gradient(loss, a).numpy()


@pytest.mark.parametrize("num_iterations", [1, 2, 3, 5, 8])
def test_forward_matches_numpy_reference(num_iterations):
    a = spd_batch(np.random.default_rng(0))
    got = newton_schulz_sqrt(a, num_iterations).numpy()
    np.testing.assert_allclose(got, numpy_newton_schulz(a, num_iterations), rtol=1e-12, atol=1e-14)


def test_converges_to_scipy_sqrtm():
    a = spd_batch(np.random.default_rng(1), batch=2, dim=8)
    exact = np.stack([scipy.linalg.sqrtm(m).real for m in a])
    errors = [
        np.abs(newton_schulz_sqrt(a, n).numpy() - exact).max() / np.abs(exact).max()
        for n in (1, 3, 5, 10, 20, 30)
    ]
    assert all(later <= earlier * 1.0001 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[2] < 0.1  # 5 iterations: the paper's working point
    assert errors[-1] < 1e-10


@pytest.mark.parametrize("num_iterations", [1, 2, 3, 5])
@pytest.mark.parametrize("symmetric_upstream", [True, False])
def test_custom_gradient_equals_autodiff_float64(num_iterations, symmetric_upstream):
    rng = np.random.default_rng(2)
    a = spd_batch(rng)
    g = rng.standard_normal(a.shape)
    if symmetric_upstream:
        g = g + np.swapaxes(g, -1, -2)
    custom = gradient(a, g, num_iterations, custom=True)
    autodiff = gradient(a, g, num_iterations, custom=False)
    np.testing.assert_allclose(custom, autodiff, rtol=1e-10, atol=1e-12)
    # A non-symmetric upstream gradient gives a non-symmetric input gradient;
    # returning its transpose (as the PyTorch reference does) would fail here.
    if not symmetric_upstream:
        assert np.abs(custom - np.swapaxes(custom, -1, -2)).max() > 1e-3


@pytest.mark.parametrize("symmetric_upstream", [True, False])
def test_custom_gradient_matches_central_finite_differences(symmetric_upstream):
    rng = np.random.default_rng(3)
    a = spd_batch(rng, batch=1, dim=5)
    g = rng.standard_normal(a.shape)
    if symmetric_upstream:
        g = g + np.swapaxes(g, -1, -2)
    analytic = gradient(a, g, 5, custom=True)

    def loss(m):
        return float(np.sum(newton_schulz_sqrt(m, 5).numpy() * g))

    step = 1e-6
    for _ in range(6):  # random directions, symmetric and not
        direction = rng.standard_normal(a.shape)
        numeric = (loss(a + step * direction) - loss(a - step * direction)) / (2 * step)
        assert np.sum(analytic * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_float32_gradient_close_to_float64():
    rng = np.random.default_rng(4)
    a = spd_batch(rng, dim=16, positions=64)
    g = rng.standard_normal(a.shape)
    g64 = gradient(a, g, 5, custom=True)
    g32 = gradient(a.astype("float32"), g.astype("float32"), 5, custom=True)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=2e-4 * np.abs(g64).max())


def test_half_precision_input_computes_in_float32():
    a = spd_batch(np.random.default_rng(5), dim=8).astype("float16")
    out = newton_schulz_sqrt(a, 5)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), numpy_newton_schulz(a.astype("float64"), 5), rtol=1e-3, atol=1e-4)


def _finite_output_and_gradients(a, custom=True):
    a = tf.constant(a)
    g = tf.ones_like(a)
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = newton_schulz_sqrt(a, 5, custom_gradient=custom)
        loss = tf.reduce_sum(out * g)
    grad = tape.gradient(loss, a)
    return out.numpy(), grad.numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rank_deficient_input_stays_finite_and_matches_autodiff(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 12))  # 3 positions, 12 channels: rank <= 2 after centring
    x -= x.mean(axis=1, keepdims=True)
    a = (np.einsum("bli,blj->bij", x, x) / 3).astype(dtype)
    out, grad = _finite_output_and_gradients(a)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    _, grad_autodiff = _finite_output_and_gradients(a, custom=False)
    np.testing.assert_allclose(grad, grad_autodiff, rtol=1e-4, atol=1e-5 * np.abs(grad_autodiff).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ill_conditioned_input_stays_finite(dtype):
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    eigenvalues = np.logspace(0, -12, 10)  # condition number 1e12
    a = ((q * eigenvalues) @ q.T)[None].astype(dtype)
    out, grad = _finite_output_and_gradients(a)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    # The dominant eigenvalue's root is still recovered.
    assert np.linalg.eigvalsh(out[0].astype("float64")).max() == pytest.approx(1.0, rel=2e-2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e-14])
def test_zero_and_near_zero_trace_give_finite_values(dtype, scale):
    """A dead ReLU map: covariance zero (or nearly), trace below the clamp."""
    a = np.eye(4, dtype=dtype)[None] * scale
    out, grad = _finite_output_and_gradients(a)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    assert np.abs(out).max() <= np.sqrt(TRACE_EPSILON)
    if scale == 0.0:
        assert not out.any()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_iterations"):
        newton_schulz_sqrt(np.eye(3)[None], num_iterations=0)
    with pytest.raises(ValueError, match="square"):
        newton_schulz_sqrt(np.zeros((2, 3, 4)))


def test_gradient_in_a_compiled_graph_equals_eager():
    """Training runs the backward inside tf.function, where op order is dataflow order."""
    rng = np.random.default_rng(8)
    a = tf.constant(spd_batch(rng, dim=7))
    g = tf.constant(rng.standard_normal(a.shape))

    def grad_fn(m):
        with tf.GradientTape() as tape:
            tape.watch(m)
            loss = tf.reduce_sum(newton_schulz_sqrt(m, 5) * g)
        return tape.gradient(loss, m)

    np.testing.assert_allclose(tf.function(grad_fn)(a).numpy(), grad_fn(a).numpy(), rtol=1e-12, atol=1e-13)
