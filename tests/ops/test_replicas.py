"""replicas: the identity outside a multi-replica step (the distributed case is tested in test_noisy_top_k_gate)."""

import keras
import numpy as np
import tensorflow as tf

from gmsop_keras.ops.replicas import cross_replica_sum, replicas_in_sync


def test_identity_outside_a_replica_context_and_with_one_replica():
    x = np.array([1.0, 2.0, 3.0], "float32")
    assert replicas_in_sync() == 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cross_replica_sum(x)), x)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    result = strategy.run(lambda: (cross_replica_sum(tf.constant(x)), replicas_in_sync()))
    np.testing.assert_array_equal(result[0].numpy(), x)
    assert result[1] == 1
