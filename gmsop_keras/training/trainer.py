"""A run's training, from a resolved configuration to metrics.json: the model, its callbacks and `fit`.

    from gmsop_keras.training import config, trainer
    trainer.run(config.resolve({"dataset": "synthetic", "epochs": 2}))

`run` is the whole of `python -m gmsop_keras.fit` after its flags are parsed, callable from
Python. The command itself calls `preflight` and takes the run's lock before this module (and
TensorFlow with it) is imported, so that a mistake answers at once; see `gmsop_keras.fit`.
"""

import keras
import tensorflow as tf

import pipelines

import gmsop_keras.layers  # noqa: F401  (registers the layers: final.keras is loaded back in finish)
from gmsop_keras.training import data
from gmsop_keras.training.callbacks import (BestModel, Checkpoint, ComponentCountsReader, ComponentUsage,
                                            DivergenceGuard, EpochCSVLogger, ProgressLines, SaveConfig)
from gmsop_keras.training.cluster import check_shards, is_chief
from gmsop_keras.training.compile import build_and_compile, evaluate_saved, keras_verbosity
from gmsop_keras.training.distribute import fit_context, make_strategy
from gmsop_keras.training.errors import TrainingDiverged, UsageError
from gmsop_keras.training.preflight import finished_line, fewer_epochs_error, open_run, preflight
from gmsop_keras.training.run_directory import FINAL_MODEL, save_model


def run(config, debug=False):
    """Trains the run `config` describes (a dict from `gmsop_keras.training.config.resolve`).

    Returns the validation summary written to metrics.json (None on a worker of a multi-worker run
    that is not the chief). Raises `UsageError`, `pipelines.DataError` or `TrainingDiverged` with
    the one line the command prints.
    """
    data_dir, manifest, finished = preflight(config)
    if finished:
        print(finished_line(config, finished))
        return finished
    task = open_run(config, data_dir, manifest, debug)
    with task.lock():
        return train_in(config, task, data_dir, manifest)


def train_in(config, run, data_dir, manifest):
    """Trains in `run` (a `RunDirectory` whose lock this process holds), under the configured strategy.

    Returns what `finish` returns."""
    strategy = make_strategy(config["strategy"])  # first: multi-worker must start before other TF work
    replicas = strategy.num_replicas_in_sync
    if config["batch_size"] % replicas:
        raise UsageError(
            f"--batch-size {config['batch_size']} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    return train(config, run, data_dir, manifest, strategy, is_chief(), devices_line())


def devices_line():
    """'2 GPUs' or 'CPU (no GPU visible)': what this process trains on."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}"
    return "CPU (no GPU visible)"


def train(config, run, data_dir, manifest, strategy, chief, devices):
    keras.utils.set_random_seed(config["seed"])  # Python's, NumPy's and the backend's global seeds
    if config.get("deterministic"):
        # Before any op runs: deterministic kernels (or an error naming an op without one) and
        # tf.data pipelines in order, whatever their `deterministic` option says.
        tf.config.experimental.enable_op_determinism()
    if config["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    first_conversion = manifest is None  # the synthetic set, converted on first use just below
    manifest = data.prepare_data(config, data_dir, manifest)
    if first_conversion and config["strategy"] == "multi-worker":  # main checked any manifest it found
        check_shards(manifest, data_dir)
    train_data, validation, manifest, steps = data.make_inputs(config, data_dir, manifest)
    jit_compile = _jit_compile(config["jit_compile"], strategy)
    with strategy.scope():
        model = build_and_compile(
            config, train_data.element_spec[0].shape[1:], manifest["num_classes"], steps, jit_compile,
            **data.input_statistics(manifest, data_dir))
    with fit_context(model, strategy, train_data):
        with strategy.scope():
            initial_epoch = run.restore(model)
        if initial_epoch > config["epochs"]:  # preflight checked before the lock; another fit may have gone on
            raise fewer_epochs_error(config, initial_epoch)
        run.trim_logs(initial_epoch)
        if initial_epoch:
            print(f"resuming {config['model_dir']} after epoch {initial_epoch} of {config['epochs']}", flush=True)
        print(f"training {config['backbone']} + {config['head']} on {devices}, {config['epochs']} epochs of "
              f"{steps} steps (batch {config['batch_size']})", flush=True)
        guard = DivergenceGuard()
        try:
            model.fit(
                train_data,
                validation_data=validation,
                initial_epoch=initial_epoch,
                epochs=config["epochs"],
                steps_per_epoch=steps,
                shuffle=False,  # the input pipeline shuffles
                validation_steps=config["validation_steps"],
                callbacks=[guard] + make_callbacks(run, config, steps, chief),
                verbose=keras_verbosity(config["verbose"]),
            )
        except tf.errors.InvalidArgumentError as error:
            explained = pipelines.input_error(error, data_dir, manifest)
            if explained is None:
                raise
            raise explained from error
    if guard.diverged:
        kept = run.checkpoints()
        kept = (f"the checkpoint of epoch {kept[0]} (backup/) and best.keras are kept in {run.path}" if kept
                else "no epoch had finished, so no checkpoint was written")
        raise TrainingDiverged(
            f"the loss became {guard.diverged['loss']} at epoch {guard.diverged['epoch']}, step "
            f"{guard.diverged['step']}; training stopped and no diverged model was saved; {kept}. "
            "Lower --lr (or check the data) and train in a new --model-dir"
        )
    return finish(config, run, model, validation, manifest, chief)


def finish(config, run, model, validation, manifest, chief):
    """final.keras, then metrics.json (the run's completion marker); returns the summary in it,
    with the dataset's `manifest` added for an export (None on a worker that is not the chief).

    Every worker saves (reading the synchronised variables is a collective operation); only the
    chief keeps the file, evaluates it and writes metrics.json.
    """
    final_path = run.file(FINAL_MODEL)
    save_model(model, final_path)
    if not chief:
        run.discard(FINAL_MODEL)
        print(f"worker finished; the chief writes the final model and metrics.json in {config['model_dir']}")
        return None
    results = evaluate_saved(final_path, validation, config["validation_steps"])
    summary = {
        "top1_error": 1.0 - results["top1"],
        "top5_error": 1.0 - results["top5"],
        "loss": results["loss"],
        "epochs": config["epochs"],
        "history": run.history(),
    }
    run.write_metrics(summary)
    return dict(summary, manifest=manifest)


def load_final(run):
    """The run's final.keras, loaded on this process alone."""
    return keras.saving.load_model(run.file(FINAL_MODEL))


def make_callbacks(run, config, steps, chief=True):
    if not chief:  # a worker writes no logs, but joins every read of the synchronised variables
        return [ComponentCountsReader(run.path), BestModel(run), Checkpoint(run)]

    tensorboard_dir = run.file("tensorboard")
    callbacks = [
        EpochCSVLogger(run.file("log.csv"), append=True),
        keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False, profile_batch=0),
        ComponentUsage(run.path, tensorboard_dir),
        BestModel(run),
        SaveConfig(config),
        Checkpoint(run),  # last: an epoch counts as done once everything above has been written
    ]
    if keras_verbosity(config["verbose"]) == 2 and config["verbose"] == "auto":
        callbacks.insert(0, ProgressLines(config["log_every"], config["epochs"], steps, config["batch_size"]))
    return callbacks


def _jit_compile(value, strategy):
    """Keras' `jit_compile` for `--jit-compile`. Under a distribution strategy Keras 3.15 cannot
    compile with XLA (every model fails), so it is off there and an explicit `on` is refused."""
    distributed = strategy.num_replicas_in_sync > 1 or isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
    if distributed:
        if value == "on":
            raise UsageError("--jit-compile on does not work under a distribution strategy in Keras 3.15 "
                             "(XLA compilation fails for every model); use --jit-compile auto or off")
        if value == "auto":
            print("note: XLA is off under a distribution strategy (Keras 3.15 cannot compile there)", flush=True)
        return False
    return {"auto": "auto", "on": True, "off": False}[value]
