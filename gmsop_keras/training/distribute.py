"""Choosing the tf.distribute strategy (one device, MirroredStrategy, MultiWorkerMirroredStrategy),
and running Keras' `fit` under it (the cluster: `gmsop_keras.training.cluster`; what each task
writes: `gmsop_keras.training.worker_run`).
"""

import contextlib

import tensorflow as tf

from gmsop_keras.training.cluster import NO_CLUSTER, tf_config
from gmsop_keras.training.errors import UsageError


def make_strategy(name):
    """`auto`: MirroredStrategy when several GPUs are visible, else the default strategy;
    `none`: the default strategy; `mirrored`: MirroredStrategy over every visible device
    (GPUs, or the logical CPU devices a test configured); `multi-worker`:
    MultiWorkerMirroredStrategy from `TF_CONFIG` (after `gmsop_keras.training.cluster.configure_cluster`)."""
    if name == "multi-worker":
        if not tf_config():
            raise UsageError(NO_CLUSTER)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if name not in ("auto", "none"):
        raise UsageError(f"unknown strategy {name!r}; valid: auto, none, mirrored, multi-worker")
    return tf.distribute.get_strategy()


def fit_context(model, strategy, dataset):
    """A context in which `model.fit(dataset)` works under `strategy`; enter it around `fit`.

    Under MultiWorkerMirroredStrategy, Keras 3.15's `fit` first averages one
    distributed batch over all replicas (`strategy.reduce(MEAN, (x, y))`)
    only to learn the input shapes for building the metrics and optimizer, and
    the collective strategy cannot reduce that structure (keras-team/keras
    issue 20585: Keras 3 `fit` fails under MultiWorkerMirroredStrategy). Here
    the model is built from one local batch first, and `fit` runs under the
    strategy's scope with the model's own reference to the strategy cleared, so
    it skips that step and takes the strategy from the scope instead. Other
    strategies need none of this. See also `_reduce_scalars_without_axis`.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return contextlib.nullcontext()
    _reduce_scalars_without_axis(strategy)
    sample = next(iter(dataset.take(1)))
    with strategy.scope():
        model._symbolic_build(data_batch=sample)
    model._distribute_strategy = None
    return strategy.scope()


def _reduce_scalars_without_axis(strategy):
    """Lets this strategy average per-replica scalars over `axis=0` as Keras asks it to.

    Keras 3.15 averages every step's logs (scalars: loss, metrics) across
    workers with `strategy.reduce("MEAN", value, axis=0)`, which the collective
    strategy rejects for a 0-d value. For those, axis 0 means "over replicas",
    which is what `axis=None` does. Only this strategy object is changed.
    """
    original = strategy.reduce

    def reduce(reduce_op, value, axis=None):
        if axis == 0 and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return original(reduce_op, value, axis=axis)

    strategy.reduce = reduce
