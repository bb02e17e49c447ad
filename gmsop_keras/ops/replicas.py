"""Sums across the replicas of a synchronous data-parallel step, for layers that need the global batch.

Under `tf.distribute.MirroredStrategy` (and `MultiWorkerMirroredStrategy`) each replica runs
the model on its own slice of the global batch. Keras 3 (3.15, TensorFlow backend) then
scales every replica's loss by `1 / num_replicas` (`scale_loss_for_distribution`, losses
added with `add_loss` included) and sums the replicas' gradients before the update. A loss
that is an average over samples therefore gives the same update on one and on R replicas;
a loss that is a non-linear function of a batch statistic, like the balance loss' CV^2 of
the per-component importance, does not: computed per replica it is the mean of R small-batch
values. `cross_replica_sum` makes such a statistic the global batch's.

The sum is differentiable: the gradient of an all-reduced sum is the all-reduced sum of the
replicas' upstream gradients. With every replica computing the same loss `L(S)` of the global
sum `S` and Keras scaling each by `1 / R`, each replica's gradient through its own term of
`S` is `R * (1 / R) dL/dS`, and the summed update equals one device's on the global batch.

It is the identity outside a replica context with more than one replica, and on every backend
but TensorFlow. On JAX, data-parallel training shards one program over the devices
(`keras.distribution.DataParallel`), where a batch statistic inside a jitted step is already
the global batch's, so there is nothing to sum.
"""

import keras


def cross_replica_sum(value):
    """`value` summed over the replicas of the current synchronous step (with gradient); else `value`."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    if replicas_in_sync() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def replicas_in_sync():
    """The number of replicas of the current synchronous step: 1 outside a replica context or off TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync
