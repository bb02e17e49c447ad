"""What each task of a multi-worker run writes.

The chief writes the run's files in the model directory. Every other worker takes part in each
save (reading TensorFlow's synchronised variables, such as the gate's component counts, is a
collective operation in which every worker must join) but writes only into a scratch folder,
`workers/<type>_<index>/`, and removes what it wrote at once; after a restart every worker
resumes from the chief's checkpoint, so all of them start from the same epoch.
"""

from gmsop_keras.training.cluster import is_chief, task_model_dir
from gmsop_keras.training.run_directory import BEST_MODEL, RunDirectory, save_model, save_weights
from pipelines import storage


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
        save_weights(model, self.file(self._SCRATCH_WEIGHTS))
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
