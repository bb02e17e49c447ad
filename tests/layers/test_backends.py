"""The JAX backend: the backend-agnostic op, layer and model tests, run again under `KERAS_BACKEND=jax`.

The suite runs under TensorFlow (tests/conftest.py sets it unless the
environment names another backend). This test runs the tests that use
`keras.ops` and Keras' public API only (every model `build_model` names builds,
trains a step, saves and reloads; the layers' contracts and values) in a fresh
interpreter with `KERAS_BACKEND=jax`, so `python -m pytest -q` covers both
backends. Tests that use TensorFlow itself (`tf.GradientTape`, `tf.function`,
XLA through TensorFlow) and a few slow training checks whose code path is the
same as a selected test's stay TensorFlow-only.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JAX_TESTS = (
    "tests/ops/test_covariance.py",
    "tests/layers/test_square_root_sop.py",
    "tests/layers/test_gsop_block.py",
    "tests/layers/test_gaussian_pooling_2d.py",
    "tests/layers/test_generalized_gaussian_reweighting.py",
    "tests/layers/test_gated_mixture.py",
    "tests/layers/test_netvlad.py",
    "tests/layers/test_sparse_moe.py",
    "tests/models/test_build_model.py",
)
TENSORFLOW_ONLY = (
    "gather_and_dense", "only_the_selected", "traces_with", "float64", "gathered_kernels", "routing_counts",
    "fresh_mixture_spreads", "compiled_training_fits", "mixed_precision_trains", "does_not_diverge",
    "parameter_count",
)
# At least this many tests must run under JAX: a selection that silently shrinks fails here.
MIN_JAX_TESTS = 90


def test_backend_agnostic_tests_pass_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
        "-k", " and ".join(f"not {name}" for name in TENSORFLOW_ONLY), *JAX_TESTS,
    ]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    lines = completed.stdout.strip().splitlines()
    summary = lines[-1] if lines else completed.stderr[-2000:]
    print(f"KERAS_BACKEND=jax: {summary}")
    assert completed.returncode == 0, "\n".join(lines[-60:]) + completed.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= MIN_JAX_TESTS, summary
    assert not re.search(r"\d+ (failed|error|skipped)", summary), summary
