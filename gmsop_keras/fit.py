"""python -m gmsop_keras.fit: train a model of the paper on one device, many GPUs or many machines.

    python -m gmsop_keras.fit                                    # built-in synthetic set, a few minutes on a CPU
    python -m gmsop_keras.fit --dataset imagenet64 --data-dir data/imagenet64 --head gm-sop-16-8
    python -m gmsop_keras.fit --dataset places365 --data-dir data/places365 --head gm-gap-16-8

The model directory receives: `config.yaml` (resolved configuration), `backup/` (resume point:
re-running the same command after a crash continues from the last finished epoch; re-running a
finished run says so and trains nothing; a larger `--epochs` continues it), `log.csv`,
`tensorboard/`, `best.keras` (best validation top-1), `final.keras`, `metrics.json` (written
last), and for gated mixtures `component_usage.csv` with a bar chart per epoch in
`component_usage/`. Epochs are counted from 1 everywhere. `gmsop_keras.run_state` describes the
order in which these files are written and why a kill at any moment loses at most one epoch.
"""

import os
import sys

from gmsop_keras.config import check_model_dir, resolve_config, write_config
from gmsop_keras.errors import TrainingDiverged, UsageError, debug_requested, run_cli
from gmsop_keras.run_state import FINAL_MODEL, RunDirectory, save_model
from gmsop_keras.training import keras_verbosity


def main(argv=None):
    # Everything that can be checked without TensorFlow is checked first: flags, names, the
    # data folder and the model directory, so that a mistake answers at once and writes nothing.
    from gmsop_keras import training

    config = resolve_config(argv)
    debug = debug_requested(argv)
    data_dir, manifest = training.locate_data(config)
    if manifest is not None:
        training.steps_per_epoch(config, manifest, data_dir)
    check_model_dir(config)
    finished = RunDirectory(config["model_dir"]).finished()
    if finished is not None and finished.get("epochs") is not None:
        if finished["epochs"] == config["epochs"]:
            print(f"{config['model_dir']} holds a finished run of {finished['epochs']} epochs (metrics.json: "
                  f"top-1 error {_percent(finished.get('top1_error'))}); nothing to do. "
                  "To train longer, raise --epochs.")
            return 0
        if finished["epochs"] > config["epochs"]:
            raise UsageError(f"{config['model_dir']} holds a run finished after {finished['epochs']} epochs; "
                             f"--epochs {config['epochs']} would not train it further (raise --epochs, or use "
                             "another --model-dir)")

    from gmsop_keras._startup import devices_line, load_tensorflow
    from gmsop_keras.cluster import check_shards, configure_cluster, is_chief
    from gmsop_keras.distribute import make_strategy, task_run

    if config["strategy"] == "multi-worker":  # TF_CONFIG (a TFJob), or derived from SLURM's variables
        print(configure_cluster(config["slurm_port_base"], config["slurm_gpus_per_task"], debug), flush=True)
        if manifest is not None:
            check_shards(manifest, data_dir)
    run = task_run(config["model_dir"])
    with run.lock():  # before TensorFlow loads: a second fit on this directory is refused at once
        load_tensorflow(debug)
        strategy = make_strategy(config["strategy"])  # first: multi-worker must start before other TF work
        replicas = strategy.num_replicas_in_sync
        if config["batch_size"] % replicas:
            raise UsageError(
                f"--batch-size {config['batch_size']} is not divisible by the {replicas} replicas; "
                f"use a multiple of {replicas}"
            )
        return train(config, run, data_dir, manifest, strategy, is_chief(), devices_line())


def train(config, run, data_dir, manifest, strategy, chief, devices):
    import keras

    import gmsop_keras.layers  # noqa: F401  (registers the layers: final.keras is loaded back below)
    from gmsop_keras import training
    from gmsop_keras.callbacks import DivergenceGuard
    from gmsop_keras.distribute import fit_context

    keras.utils.set_random_seed(config["seed"])
    if config["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    first_conversion = manifest is None  # the synthetic set, converted on first use just below
    manifest = training.prepare_data(config, data_dir, manifest)
    if first_conversion and config["strategy"] == "multi-worker":  # main checked any manifest it found
        from gmsop_keras.cluster import check_shards

        check_shards(manifest, data_dir)
    train_data, validation, manifest, steps = training.make_inputs(config, data_dir, manifest)
    jit_compile = _jit_compile(config["jit_compile"], strategy)
    with strategy.scope():
        model = training.build_and_compile(
            config, train_data.element_spec[0].shape[1:], manifest["num_classes"], steps, jit_compile,
            **training.input_statistics(manifest, data_dir))
    if chief:
        write_config(config)
    with fit_context(model, strategy, train_data):
        with strategy.scope():
            initial_epoch = run.restore(model)
        run.trim_logs(initial_epoch)
        if initial_epoch:
            print(f"resuming {config['model_dir']} after epoch {initial_epoch} of {config['epochs']}", flush=True)
        print(f"training {config['backbone']} + {config['head']} on {devices}, {config['epochs']} epochs of "
              f"{steps} steps (batch {config['batch_size']})", flush=True)
        guard = DivergenceGuard()
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
    """final.keras, then metrics.json (the run's completion marker), then the optional export.

    Every worker saves (reading the synchronised variables is a collective operation); only the
    chief keeps the file, evaluates it and writes metrics.json and the export.
    """
    from gmsop_keras.training import evaluate_saved

    final_path = run.file(FINAL_MODEL)
    save_model(model, final_path)
    if not chief:
        run.discard(FINAL_MODEL)
        print(f"worker finished; the chief writes the final model and metrics.json in {config['model_dir']}")
        return 0
    results = evaluate_saved(final_path, validation, config["validation_steps"])
    summary = {
        "top1_error": 1.0 - results["top1"],
        "top5_error": 1.0 - results["top5"],
        "loss": results["loss"],
        "epochs": config["epochs"],
        "history": run.history(),
    }
    run.write_metrics(summary)
    if config["export"]:
        import keras

        from gmsop_keras.export import export_model

        # From the saved file: the export is exactly final.keras, built on this process alone (a
        # model trained under MultiWorkerMirroredStrategy reads its variables with the other workers).
        saved = keras.saving.load_model(final_path)
        path = export_model(saved, os.path.join("saved_models", config["export"]), manifest=manifest)
        print(f"exported {path}")
    print(
        f"validation: top-1 error {_percent(summary['top1_error'])}, top-5 error {_percent(summary['top5_error'])} "
        f"({config['dataset']}, {config['backbone']}, {config['head']}); model dir {run.path}"
    )
    return 0


def make_callbacks(run, config, steps, chief=True):
    import keras

    from gmsop_keras.callbacks import (BestModel, Checkpoint, ComponentCountsReader, ComponentUsage, EpochCSVLogger,
                                       ProgressLines)

    if not chief:  # a worker writes no logs, but joins every read of the synchronised variables
        return [ComponentCountsReader(run.path), BestModel(run), Checkpoint(run)]

    tensorboard_dir = run.file("tensorboard")
    callbacks = [
        EpochCSVLogger(run.file("log.csv"), append=True),
        keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False, profile_batch=0),
        ComponentUsage(run.path, tensorboard_dir),
        BestModel(run),
        Checkpoint(run),  # last: an epoch counts as done once everything above has been written
    ]
    if keras_verbosity(config["verbose"]) == 2 and config["verbose"] == "auto":
        callbacks.insert(0, ProgressLines(config["log_every"], config["epochs"], steps, config["batch_size"]))
    return callbacks


def _jit_compile(value, strategy):
    """Keras' `jit_compile` for `--jit-compile`. Under a distribution strategy Keras 3.15 cannot
    compile with XLA (every model fails), so it is off there and an explicit `on` is refused."""
    import tensorflow as tf

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


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def console_main():
    """The `gmsop-fit` console script."""
    sys.exit(run_cli(main, interrupted="interrupted: re-run the same command to resume from the last finished epoch"))


if __name__ == "__main__":
    console_main()
