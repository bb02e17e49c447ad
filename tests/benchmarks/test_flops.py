"""benchmarks/flops.py: counts checked on hand-computed small models, the square root's products counted
as the code runs them, and the device peaks."""

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from gmsop_keras.layers import GatedMixture, SquareRootSOP
from gmsop_keras.ops import matrix_sqrt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("flops", os.path.join(ROOT, "benchmarks", "flops.py"))
flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flops)
count_flops, peak_tflops, sqrt_products, total = flops.count_flops, flops.peak_tflops, flops.sqrt_products, flops.total


def model_of(input_shape, *layers):
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_a_conv_and_a_dense_layer():
    model = model_of((6, 6, 4), keras.layers.Conv2D(5, 3), keras.layers.Flatten(), keras.layers.Dense(3))
    parts, skipped = count_flops(model)
    conv = 2 * (4 * 4) * (3 * 3 * 4) * 5  # 4x4 outputs of a 3x3x4 window, 5 filters: 5760
    dense = 2 * (4 * 4 * 5) * 3
    assert parts == {"backbone": (conv, 3 * conv), "classifier": (dense, 3 * dense)}
    assert skipped == ["flatten (Flatten)"]  # named, not silently dropped


def test_square_root_sop_covariance_and_newton_schulz():
    model = model_of((3, 3, 6), SquareRootSOP(hidden_dims=(4,), num_iterations=5))
    parts, _ = count_flops(model)
    assert parts["dispatch"] == (2 * 9 * 6 * 4, 3 * 2 * 9 * 6 * 4)
    assert parts["covariance"] == (2 * 9 * 4 * 4, 3 * 2 * 9 * 4 * 4)
    # 5 iterations: 13 products forward, 28 backward, of 2 * 4^3 FLOPs each.
    assert parts["square root"] == (13 * 128, (13 + 28) * 128)


def test_gated_mixture_by_hand():
    layer = GatedMixture(4, 2, component_dims=(8, 6), gate_dims=(5, 3), noise="none", num_iterations=5)
    parts, _ = count_flops(model_of((4, 4, 7), layer, keras.layers.Dense(3)))
    positions = 16
    gate = 2 * positions * (7 * 5 + 5 * 3) + 2 * positions * 9 + 13 * 2 * 27 + 2 * 6 * 4  # convs, cov, sqrt, dense
    assert parts["gate"][0] == gate
    assert parts["dispatch"][0] == 2 * 2 * positions * (7 * 8 + 8 * 6)  # K = 2 components per image
    assert parts["covariance"][0] == 2 * 2 * positions * 36
    assert parts["square root"] == (2 * 13 * 2 * 216, 2 * 41 * 2 * 216)
    assert parts["classifier"][0] == 2 * 21 * 3
    assert total(parts, 0) == sum(v[0] for v in parts.values())


@pytest.mark.parametrize("num_iterations", [1, 2, 5])
def test_square_root_product_count_is_what_the_code_runs(num_iterations, monkeypatch):
    calls = []
    real = keras.ops.matmul
    monkeypatch.setattr(matrix_sqrt.ops, "matmul", lambda x, y: calls.append(1) or real(x, y))
    a = tf.constant(np.eye(4, dtype="float32")[None] * 2.0)
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = matrix_sqrt.newton_schulz_sqrt(a, num_iterations)
        forward = len(calls)
        loss = tf.reduce_sum(out)
    tape.gradient(loss, a)
    assert (forward, len(calls) - forward) == sqrt_products(num_iterations)


def test_device_peaks():
    assert peak_tflops("NVIDIA H200", "mixed_float16", tf32=True) == (989.4, "H200 bf16/fp16 dense")
    assert peak_tflops("NVIDIA H100 80GB HBM3", "float32", tf32=True) == (494.7, "H100 tf32 dense")
    assert peak_tflops("NVIDIA H200", "float32", tf32=False) == (67.0, "H200 fp32")
    assert peak_tflops("CPU", "float32", tf32=False) == (None, "peak unknown")
    assert peak_tflops("NVIDIA H100 PCIe", "float32", tf32=True)[0] is None
