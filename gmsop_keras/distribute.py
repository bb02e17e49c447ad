"""Choosing the tf.distribute strategy (one device, MirroredStrategy, MultiWorkerMirroredStrategy)
and what each task of a multi-worker run writes (the cluster itself: `gmsop_keras.cluster`).

The chief writes the run's files in the model directory. Every other worker takes part in each
save (reading TensorFlow's synchronised variables, such as the gate's component counts, is a
collective operation in which every worker must join) but writes only into a scratch folder,
`workers/<type>_<index>/`, and removes what it wrote at once; after a restart every worker
resumes from the chief's checkpoint, so all of them start from the same epoch.
"""

from gmsop_keras.cluster import NO_CLUSTER, is_chief, task_model_dir, tf_config
from gmsop_keras.errors import UsageError
from gmsop_keras.run_state import BEST_MODEL, RunDirectory, save_model
from pipelines import storage


def make_strategy(name):
    """`auto`: MirroredStrategy when several GPUs are visible, else the default strategy;
    `none`: the default strategy; `mirrored`: MirroredStrategy over every visible device
    (GPUs, or the logical CPU devices a test configured); `multi-worker`:
    MultiWorkerMirroredStrategy from `TF_CONFIG` (after `gmsop_keras.cluster.configure_cluster`)."""
    import tensorflow as tf

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


def task_run(model_dir):
    """The `RunDirectory` this process trains through: the chief's own, or a `WorkerRun`."""
    if is_chief():
        return RunDirectory(model_dir)
    return WorkerRun(task_model_dir(model_dir), model_dir)


class WorkerRun(RunDirectory):
    """The run of a worker that is not the chief, in its scratch folder `path`.

    It saves whenever the chief saves, because every worker must join the reads of synchronised
    variables that a save makes, and removes the file at once: the chief's copy is the run's. It
    resumes from the chief's newest checkpoint and compares with the chief's best metric, so that
    after a restart every worker continues from the same epoch and saves when the chief does.
    """

    _SCRATCH_WEIGHTS = "checkpoint.weights.h5"

    def __init__(self, path, chief_dir):
        super().__init__(path)
        self.chief = RunDirectory(chief_dir)

    def checkpoints(self):
        return self.chief.checkpoints()

    def save_checkpoint(self, model, epoch):
        storage.makedirs(self.path)
        model.save_weights(self.file(self._SCRATCH_WEIGHTS), overwrite=True)
        self.discard(self._SCRATCH_WEIGHTS)

    def restore(self, model):
        try:
            return self.chief.restore(model)
        except FileNotFoundError:  # the chief removed the same unfinished checkpoint file first
            return self.chief.restore(model)

    def best_value(self):
        return self.chief.best_value()

    def save_best(self, model, epoch, monitor, value):
        save_model(model, self.file(BEST_MODEL))
        self.discard(BEST_MODEL)

    def discard(self, name):
        """Removes the file `name` this worker wrote only to take part in a save."""
        storage.remove(self.file(name))


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
    import contextlib

    import tensorflow as tf

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
