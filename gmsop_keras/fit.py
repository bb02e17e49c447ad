"""python -m gmsop_keras.fit: train a model of the paper on one device, many GPUs or many machines.

    python -m gmsop_keras.fit                                    # built-in synthetic set, a few minutes on a CPU
    python -m gmsop_keras.fit --dataset imagenet64 --data-dir data/imagenet64 --head gm-sop-16-8
    python -m gmsop_keras.fit --dataset places365 --data-dir data/places365 --head gm-gap-16-8

The model directory receives: `config.yaml` (resolved configuration), `backup/` (resume point:
re-running the same command after a crash continues from the last finished epoch), `log.csv`,
`tensorboard/`, `best.keras` (best validation top-1), `final.keras`, `metrics.json`, and for
gated mixtures `component_usage.csv` with a bar chart per epoch in `component_usage/`.
"""

import json
import os
import sys

from gmsop_keras.config import check_model_dir, model_options, resolve_config, write_config
from gmsop_keras.errors import UsageError, run_cli

SYNTHETIC_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "gmsop_keras")


def main(argv=None):
    config = resolve_config(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from gmsop_keras.distribute import fit_context, is_chief, make_strategy, task_model_dir

    strategy = make_strategy(config["strategy"])  # first: multi-worker must start before other TF work
    replicas = strategy.num_replicas_in_sync
    if config["batch_size"] % replicas:
        raise UsageError(
            f"--batch-size {config['batch_size']} is not divisible by the {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    check_model_dir(config)
    chief = is_chief()
    model_dir = task_model_dir(config["model_dir"])
    if chief:
        write_config(config)
    os.makedirs(model_dir, exist_ok=True)
    keras.utils.set_random_seed(config["seed"])
    if config["mixed_precision"]:
        keras.mixed_precision.set_global_policy("mixed_float16")

    data_dir = resolve_data_dir(config)
    train, validation, manifest, steps_per_epoch = make_inputs(config, data_dir)
    with strategy.scope():
        model = build_and_compile(config, train.element_spec[0].shape[1:], manifest["num_classes"], steps_per_epoch)
    with fit_context(model, strategy, train):
        history = fit_model(model, config, train, validation, steps_per_epoch, model_dir)
    final_path = os.path.join(model_dir, "final.keras")
    _save_atomic(model, final_path)
    results = evaluate_saved(final_path, validation, config["validation_steps"])
    summary = {
        "top1_error": 1.0 - results["top1"],
        "top5_error": 1.0 - results["top5"],
        "loss": results["loss"],
        "epochs": config["epochs"],
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
    }
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if chief and config["export"]:
        from gmsop_keras.export import export_model

        path = export_model(model, os.path.join("saved_models", config["export"]), manifest=manifest)
        print(f"exported {path}")
    print(
        f"validation: top-1 error {100 * summary['top1_error']:.2f}%, "
        f"top-5 error {100 * summary['top5_error']:.2f}% ({config['dataset']}, {config['backbone']}, {config['head']})"
    )
    return 0


def evaluate_saved(path, validation, steps):
    """Validation metrics of the saved model, on one device.

    Under MirroredStrategy each replica keeps its own BatchNorm moving statistics
    (Keras' per-replica BatchNorm); the saved and exported model carries the first
    replica's, while an evaluation under the strategy would mix them. Evaluating the
    saved file makes metrics.json describe exactly the model that was saved.
    """
    import keras

    model = keras.saving.load_model(path)
    return model.evaluate(validation, steps=steps, verbose=0, return_dict=True)


def fit_model(model, config, train, validation, steps_per_epoch, model_dir):
    return model.fit(
        train,
        validation_data=validation,
        epochs=config["epochs"],
        steps_per_epoch=steps_per_epoch,
        shuffle=False,  # the input pipeline shuffles
        validation_steps=config["validation_steps"],
        callbacks=make_callbacks(model_dir),
        verbose=keras_verbosity(config["verbose"]),
    )


def resolve_data_dir(config):
    """The converted dataset folder; the synthetic set converts itself on first use."""
    import pipelines

    dataset = config["dataset"]
    if dataset == "synthetic":
        options = config.get("synthetic") or {}
        folder = config["data_dir"] or os.path.join(
            SYNTHETIC_CACHE, "synthetic-" + "-".join(f"{k}{v}" for k, v in sorted(options.items()))
        )
        return pipelines.ensure_synthetic(folder, progress=True, **options)
    data_dir = config["data_dir"] or (dataset if dataset not in ("imagenet64", "places365") else None)
    if data_dir is None:
        raise UsageError(f"--dataset {dataset} needs --data-dir: the output of python -m pipelines.convert {dataset}")
    if not os.path.isdir(data_dir):
        raise UsageError(f"data dir {data_dir} does not exist; convert the dataset first (python -m pipelines.convert)")
    return data_dir


def make_inputs(config, data_dir):
    import pipelines

    manifest = pipelines.read_manifest(data_dir)
    batch = config["batch_size"]
    steps = config["steps_per_epoch"]
    # The training input repeats and an epoch is `steps` batches, so Keras knows the epoch length.
    train = pipelines.make_dataset(
        data_dir, "train", batch, training=True, seed=config["seed"], cache=config["cache"], repeat=True
    )
    validation = pipelines.make_dataset(data_dir, "validation", batch, training=False)
    if config["strategy"] != "multi-worker":  # each worker reads only its files there
        # A declared length spares Keras' "ran out of data" warning at every validation.
        import tensorflow as tf

        num_batches = -(-manifest["splits"]["validation"]["num_examples"] // batch)
        validation = validation.apply(tf.data.experimental.assert_cardinality(num_batches))
    if not steps:
        steps = manifest["splits"]["train"]["num_examples"] // batch
        if steps == 0:
            raise UsageError(f"--batch-size {batch} is larger than the training set ({data_dir})")
    return train, validation, manifest, steps


def build_and_compile(config, input_shape, num_classes, steps_per_epoch):
    import keras

    from gmsop_keras import build_model
    from gmsop_keras.recipes import step_schedule

    model = build_model(
        config["backbone"], config["head"], num_classes=num_classes, input_shape=tuple(input_shape),
        **model_options(config),
    )
    schedule = step_schedule(config["lr"], config["stages"], steps_per_epoch, config["lr_decay"])
    # The paper's weight decay is an L2 term in the gradient, which momentum then
    # accumulates: its steady-state pull is lr * wd / (1 - momentum) per step.
    # Keras applies decay outside the momentum, so it gets that value.
    optimizer = keras.optimizers.SGD(
        schedule, momentum=config["momentum"], weight_decay=config["weight_decay"] / (1.0 - config["momentum"])
    )
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
    )
    return model


def make_callbacks(model_dir):
    import keras

    from gmsop_keras.callbacks import ComponentUsage

    tensorboard_dir = os.path.join(model_dir, "tensorboard")
    return [
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup")),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False, profile_batch=0),
        keras.callbacks.ModelCheckpoint(
            os.path.join(model_dir, "best.keras"), monitor="val_top1", mode="max", save_best_only=True
        ),
        ComponentUsage(model_dir, tensorboard_dir),
    ]


def _save_atomic(model, path):
    model.save(path + ".tmp.keras")
    os.replace(path + ".tmp.keras", path)


def keras_verbosity(value):
    """Keras' `verbose` for a `--verbose` value: "auto" is a progress bar on a terminal,
    one line per epoch otherwise."""
    if value == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(value)


if __name__ == "__main__":
    sys.exit(run_cli(main))
