"""What a run checks before TensorFlow loads: its data, its model directory, whether it already finished,
and the cluster it is a task of. Nothing here imports TensorFlow, so a mistake answers at once.
"""

from gmsop_keras.training import data
from gmsop_keras.training.cluster import check_shards, configure_cluster
from gmsop_keras.training.saved_config import check_model_dir
from gmsop_keras.training.worker_run import task_run
from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.run_directory import RunDirectory


def preflight(config):
    """(data dir, manifest, finished) of a resolved configuration, checked without TensorFlow.

    `finished` is the metrics.json of a run that already trained `config["epochs"]` epochs (there
    is nothing to do), else None. The manifest is None for the synthetic set before its first
    conversion.

    Raises:
        UsageError: a flag that disagrees with the model directory's saved run, or a target below
            the epochs the run already trained (finished, or kept in a checkpoint).
        pipelines.DataError: data that is not a finished conversion.
    """
    data_dir, manifest = data.locate_data(config)
    if manifest is not None:
        data.steps_per_epoch(config, manifest, data_dir)
    check_model_dir(config)
    run = RunDirectory(config["model_dir"])
    finished = run.finished()
    finished = finished if finished and finished.get("epochs") is not None else None
    trained = max([finished["epochs"] if finished else 0] + run.checkpoints()[:1])
    if trained > config["epochs"]:
        raise fewer_epochs_error(config, trained)
    return data_dir, manifest, finished if finished and finished["epochs"] == config["epochs"] else None


def fewer_epochs_error(config, trained):
    """The refusal of an `--epochs` below the `trained` epochs of the model directory's run: the
    record would disagree with the weights, which already went further."""
    model_dir, epochs = config["model_dir"], config["epochs"]
    return UsageError(f"{model_dir} holds a run trained for {trained} epochs, more than --epochs {epochs}; "
                      f"give --epochs {trained} or more to continue it, or another --model-dir to train "
                      f"{epochs} epoch{'s' if epochs > 1 else ''} from the start")


def finished_line(config, finished):
    """The line for a run that has nothing left to do."""
    return (f"{config['model_dir']} holds a finished run of {finished['epochs']} epochs (metrics.json: "
            f"top-1 error {percent(finished.get('top1_error'))}); nothing to do. To train longer, raise --epochs.")


def open_run(config, data_dir, manifest, debug=False):
    """This task's `RunDirectory`, after joining the cluster of a multi-worker run (TF_CONFIG, or
    derived from SLURM's variables) and checking there are shards for every worker."""
    if config["strategy"] == "multi-worker":
        print(configure_cluster(config["slurm_port_base"], config["slurm_gpus_per_task"], debug), flush=True)
        if manifest is not None:
            check_shards(manifest, data_dir)
    return task_run(config["model_dir"])


def percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"
