"""The mixture's dispatch: grouped rows equal gathered kernels (values and gradients) for any routing."""

import numpy as np
import pytest
import tensorflow as tf

from gmsop_keras.ops import grouped_components, stacked_components
from gmsop_keras.ops.dispatch import MAX_GROUP_TILE, group_tile

NUM_COMPONENTS = 5
DIMS = {"sop": (6, 4), "gap": (5,)}
OUT = {"sop": 10, "gap": 5}


def stacked_kernels(component, channels=8, seed=0):
    """He-normal kernels `(N, C, h)` of every 1x1 convolution of the component, as variables."""
    rng = np.random.default_rng(seed)
    kernels = []
    for width in DIMS[component]:
        values = rng.standard_normal((NUM_COMPONENTS, channels, width)) * np.sqrt(2.0 / channels)
        kernels.append(tf.Variable(values))
        channels = width
    return kernels


@pytest.mark.parametrize("component", ["sop", "gap"])
@pytest.mark.parametrize(
    "indices",
    [
        [[3, 1]] * 40,  # every sample to the same two components: one group of 40, three empty
        [[0, 4]] + [[1, 2]] * 39,  # groups of 1, 39, 39, 0, 1
        [[4, 0]],  # one sample
        np.zeros((0, 2), "int32"),  # no sample
    ],
    ids=["all-to-two", "skewed", "batch-1", "batch-0"],
)
def test_grouped_components_match_gathered_kernels_for_any_routing(component, indices):
    kernels = stacked_kernels(component)
    options = dict(component=component, num_iterations=3)
    indices = tf.constant(np.asarray(indices, "int32").reshape(-1, 2))
    positions = tf.constant(np.random.default_rng(7).standard_normal((indices.shape[0], 25, 8)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(positions)
        grouped = grouped_components(positions, indices, kernels, **options)
        gathered = stacked_components(positions[:, None], [tf.gather(k, indices) for k in kernels], **options)
        weights = tf.sin(tf.range(tf.size(grouped), dtype="float64"))
        losses = [tf.reduce_sum(tf.reshape(out, [-1]) * weights) for out in (grouped, gathered)]
    assert grouped.shape == (indices.shape[0], 2, OUT[component])
    np.testing.assert_allclose(grouped.numpy(), gathered.numpy(), rtol=1e-10, atol=1e-12)
    for source in (positions, *kernels):
        a, b = (tf.convert_to_tensor(tape.gradient(loss, source)).numpy() for loss in losses)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_stacked_components_of_all_kernels_are_each_components_own():
    kernels = stacked_kernels("gap")
    positions = np.random.default_rng(1).standard_normal((3, 1, 25, 8))
    outputs = stacked_components(positions, kernels, component="gap").numpy()
    for i in range(NUM_COMPONENTS):
        expected = np.maximum(positions[:, 0] @ kernels[0].numpy()[i], 0).mean(axis=1)
        np.testing.assert_allclose(outputs[:, i], expected, rtol=1e-12)


@pytest.mark.parametrize(
    "num_pairs, expected", [(0, 1), (79, 1), (80, 2), (800, 11), (10**6, MAX_GROUP_TILE)]
)
def test_group_tile_pads_at_most_a_sixteenth_of_the_pairs(num_pairs, expected):
    tile = group_tile(num_pairs, NUM_COMPONENTS)
    assert tile == expected
    assert NUM_COMPONENTS * (tile - 1) <= num_pairs / 16
