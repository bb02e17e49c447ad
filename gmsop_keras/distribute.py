"""Choosing the tf.distribute strategy: one device, MirroredStrategy, MultiWorkerMirroredStrategy."""

import json
import os

from gmsop_keras.errors import UsageError


def make_strategy(name):
    """`auto`: MirroredStrategy when several GPUs are visible, else the default strategy;
    `none`: the default strategy; `mirrored`: MirroredStrategy over every visible device
    (GPUs, or the logical CPU devices a test configured); `multi-worker`:
    MultiWorkerMirroredStrategy from `TF_CONFIG`."""
    import tensorflow as tf

    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy multi-worker needs TF_CONFIG (cluster and task) in the environment")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise UsageError(f"TF_CONFIG is not valid JSON: {error}") from None
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


def is_chief():
    """True unless TF_CONFIG names this process a non-chief worker."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster
