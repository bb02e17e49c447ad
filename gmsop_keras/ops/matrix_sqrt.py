"""Matrix square root by the coupled Newton-Schulz iteration (iSQRT-COV).

Forward (Li et al., CVPR 2018; GM-SOP paper Eq. 9), for a symmetric positive
semi-definite `A`:

    t = tr(A),  A_n = A / t                           pre-normalisation
    Y_0 = A_n,  Z_0 = I
    T_k = (3 I - Z_{k-1} Y_{k-1}) / 2
    Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1}             k = 1 .. N (the last needs only Y)
    sqrt(A) ~= Y_N * sqrt(t)                           post-compensation

Backward: the adjoint of exactly this computation, derived by hand (it equals
autodiff of the unrolled loop to round-off). Every iterate is a polynomial in
`A_n`, so `Y_k`, `Z_k` and `S_k = 3 I - Z_{k-1} Y_{k-1} = 2 T_k` are symmetric
and commute; the transposes a general product's gradient needs vanish, and the
upstream gradient `G` may be any matrix, symmetric or not. With `M` a scratch
matrix, one step back is

    M        = Y_{k-1} gY_k + gZ_k Z_{k-1}
    gY_{k-1} = (gY_k S_k - Z_{k-1} M) / 2
    gZ_{k-1} = (S_k gZ_k - M Y_{k-1}) / 2

What it keeps: only `A_n`, `Y_k` and `Z_k` (two matrices per iteration);
autodiff of the unrolled loop also keeps every `T_k`. `S_k` is rebuilt from
one product, which runs beside the `M` products. The factor 1/2 of every step
is taken out once at the end (exact: a power of two), which saves elementwise
passes, each about a quarter of a 128x128 product on a CPU. Measured in
benchmarks/BENCHMARKS.md: about the time of autodiff, three quarters of its
peak memory.

The trace terms, with `t` clamped at `TRACE_EPSILON`:
`gA = gA_n / t + (sum(G * Y_N) / (2 sqrt t) - sum(gA_n * A_n) / t) I`.

Precision policy (`compute_dtype`): by default every step runs in float32
(float64 stays float64). With `compute_dtype="bfloat16"` or `"float16"` only
the matrix products take half-precision operands; each product comes back as
float32 (the accumulation is the backend's: float32 on GPU tensor cores),
and the trace, its normalisation, the `T_k` updates, the post-compensation
and the result stay float32. The backward scales the upstream gradient of
each matrix by a power of two (its Frobenius norm rounded) before its half-
precision products and undoes it at the end, exactly, so that a loss-scaled
gradient neither overflows float16 nor underflows.
"""

from keras import ops

from gmsop_keras.ops.precision import to_float32_or_wider

# A dead ReLU map has a zero covariance and a zero trace. The normaliser is
# clamped at this value so that such an input gives a finite output (zero for
# an all-zero input) and finite gradients instead of 0/0.
TRACE_EPSILON = 1e-12

# The dtypes the matrix products may take (`compute_dtype`); "float32" is the default, also
# meaning "the input's own" for float64 input.
SQRT_DTYPES = ("float32", "bfloat16", "float16")


def newton_schulz_sqrt(a, num_iterations=5, custom_gradient=True, compute_dtype=None):
    """Approximate matrix square root of symmetric PSD matrices (iSQRT-COV).

    Args:
        a: symmetric positive semi-definite matrices, shape `(..., d, d)`.
            Half-precision inputs are upcast to float32 (the iteration
            diverges in float16); float64 stays float64.
        num_iterations: number of Newton-Schulz iterations `N` (paper: 5, the
            official GM-SOP code: 3). At least 1.
        custom_gradient: use the analytic backward (default). `False` lets the
            backend differentiate the unrolled loop; the two agree to
            round-off, the analytic one keeps fewer intermediates.

    Returns:
        `sqrt(a)` approximations, same shape as `a`, float32 or float64.

    Reference:
        Li, Xie, Wang, Gao. Towards Faster Training of Global Covariance
        Pooling Networks by Iterative Matrix Square Root Normalization.
        CVPR 2018.
    """
    if not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(
            "`num_iterations` must be an integer >= 1. "
            f"Received: num_iterations={num_iterations}"
        )
    if compute_dtype is not None and compute_dtype not in SQRT_DTYPES:
        raise ValueError(
            f"`compute_dtype` must be None or one of {SQRT_DTYPES}. Received: compute_dtype={compute_dtype!r}"
        )
    a = to_float32_or_wider(a)
    if len(a.shape) < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            "`newton_schulz_sqrt` expects square matrices of shape (..., d, d). "
            f"Received: shape={a.shape}"
        )
    matmul = _matmul_in(compute_dtype)
    if not custom_gradient:
        return _forward(a, num_iterations, matmul)[0]

    @ops.custom_gradient
    def sqrt_with_gradient(matrices):
        output, saved = _forward(matrices, num_iterations, matmul)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _backward(upstream, saved, num_iterations, matmul)

        return output, grad

    return sqrt_with_gradient(a)


def _matmul_in(compute_dtype):
    """`ops.matmul`, or a product of operands cast to a half `compute_dtype` returned in float32."""
    if compute_dtype in (None, "float32"):
        return ops.matmul

    def matmul(x, y):
        product = ops.matmul(ops.cast(x, compute_dtype), ops.cast(y, compute_dtype))
        return ops.cast(product, x.dtype)

    matmul.half = True
    return matmul


def _step_matrix(p, eye):
    """T = (3 I - P) / 2."""
    return 1.5 * eye - 0.5 * p


def _after(x, dependency):
    """`x`, made to depend on `dependency` at the cost of one cheap addition.

    The backward rebuilds each T_k from the saved Y_{k-1}, Z_{k-1}. A dataflow
    executor (TensorFlow graphs) runs an op as soon as its inputs exist, so
    without this every rebuild would run right after the forward pass and all
    the T_k would be held at once, undoing the memory saving. Tying the rebuild
    to the step's gradient makes it run just in time.
    """
    return x + 0.0 * dependency[..., :1, :1]


def _forward(a, num_iterations, matmul=ops.matmul):
    eye = ops.eye(a.shape[-1], dtype=a.dtype)
    trace = ops.trace(a, axis1=-2, axis2=-1)[..., None, None]
    norm = ops.maximum(trace, TRACE_EPSILON)
    a_n = a / norm
    ys, zs = [], []
    t = _step_matrix(a_n, eye)
    y = matmul(a_n, t)
    z = t
    for _ in range(num_iterations - 1):
        ys.append(y)
        zs.append(z)
        t = _step_matrix(matmul(z, y), eye)
        y = matmul(y, t)
        z = matmul(t, z)
    root_norm = ops.sqrt(norm)
    output = y * root_norm
    saved = dict(a_n=a_n, ys=ys, zs=zs, trace=trace, norm=norm, root_norm=root_norm, eye=eye)
    return output, saved


def _backward(upstream, saved, num_iterations, matmul=ops.matmul):
    """Adjoint of `_forward`; see the module docstring for the recursion.

    With S_k = 3 I - Z_{k-1} Y_{k-1} = 2 T_k, one step of the recursion is

        M        = Y_{k-1} gY_k + gZ_k Z_{k-1}
        gY_{k-1} = (gY_k S_k - Z_{k-1} M) / 2
        gZ_{k-1} = (S_k gZ_k - M Y_{k-1}) / 2

    The factor 1/2 of every step is taken out once at the end (powers of two
    are exact in floating point), which saves elementwise passes over the
    batch: on a CPU one such pass costs about a quarter of a 128x128 product.
    """
    a_n, ys, zs, eye = saved["a_n"], saved["ys"], saved["zs"], saved["eye"]
    norm, root_norm = saved["norm"], saved["root_norm"]
    upstream = ops.cast(upstream, a_n.dtype)
    three_eye = 3.0 * eye
    g_y = upstream * root_norm  # gY_N, then carried as 2^(steps done) * gY_k
    scale = None
    if getattr(matmul, "half", False):
        # The recursion is linear in G: scaled by a power of two near 1 / ||gY_N||, undone at the end.
        frobenius = ops.sqrt(ops.sum(ops.square(g_y), axis=(-2, -1), keepdims=True))
        scale = ops.power(2.0, ops.round(ops.log2(ops.maximum(frobenius, 1e-30))))
        scale = ops.cast(scale, g_y.dtype)
        g_y = g_y / scale
    g_z = None  # the last iteration produces no Z
    g_norm = None

    # Iterations N .. 2, newest first. Iteration k maps (Y_{k-1}, Z_{k-1}) -> (Y_k, Z_k).
    for y, z in zip(reversed(ys), reversed(zs)):
        # Rebuild S_k beside the M products; the first step back runs at once anyway.
        s_k = three_eye - matmul(z, y if g_z is None else _after(y, g_y))
        m = matmul(y, g_y)
        if g_z is None:
            g_norm = _post_compensation_gradient(m, s_k, norm)
            g_y, g_z = matmul(g_y, s_k) - matmul(z, m), -matmul(m, y)
        else:
            m = m + matmul(g_z, z)
            g_y, g_z = (
                matmul(g_y, s_k) - matmul(z, m),
                matmul(s_k, g_z) - matmul(m, y),
            )

    # Iteration 1: Y_1 = A_n S_1 / 2, Z_1 = S_1 / 2, S_1 = 3 I - A_n.
    s_1 = three_eye - a_n
    m = matmul(a_n, g_y)
    if g_norm is None:  # num_iterations == 1
        g_norm = _post_compensation_gradient(m, s_1, norm)
    g_a_n = matmul(g_y, s_1) - m
    if g_z is not None:
        g_a_n = g_a_n - g_z
    g_a_n = g_a_n * (0.5**num_iterations)

    # Pre-normalisation: A_n = A / norm, norm = max(tr(A), eps).
    g_norm = g_norm - ops.sum(g_a_n * a_n, axis=(-2, -1), keepdims=True) / norm
    g_trace = ops.where(saved["trace"] > TRACE_EPSILON, g_norm, ops.zeros_like(g_norm))
    gradient = g_a_n / norm + g_trace * eye
    return gradient if scale is None else gradient * scale


def _post_compensation_gradient(m, s_n, norm):
    """d loss / d norm through `output = Y_N sqrt(norm)`, without keeping the output.

    d/d norm = sum(G * Y_N) / (2 sqrt(norm)), and with Y_N = Y_{N-1} S_N / 2
    (both symmetric) sum(G * Y_N) = sum((Y_{N-1} G) * S_N) / 2. The backward
    computes M = Y_{N-1} G sqrt(norm) and S_N anyway.
    """
    return ops.sum(m * s_n, axis=(-2, -1), keepdims=True) / (4.0 * norm)
