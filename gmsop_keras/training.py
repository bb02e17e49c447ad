"""What `fit`, the tuner and the exporter share: the data a configuration names, its inputs, and
the compiled model. The command-line tools are thin layers over these functions.
"""

import os
import sys

from gmsop_keras.config import model_options
from gmsop_keras.errors import UsageError

SYNTHETIC_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "gmsop_keras")


def synthetic_dir(config):
    """Where the built-in synthetic set of this configuration is converted (once, then reused)."""
    options = config.get("synthetic") or {}
    return config.get("data_dir") or os.path.join(
        SYNTHETIC_CACHE, "synthetic-" + "-".join(f"{k}{v}" for k, v in sorted(options.items())))


def locate_data(config):
    """(data dir, manifest) of the configuration, checked without TensorFlow.

    The manifest is None for the synthetic set before its first conversion (`prepare_data`).

    Raises:
        UsageError: no data dir for a dataset that needs one, a folder that does not exist.
        pipelines.DataError: a folder that is not a finished conversion.
    """
    import pipelines
    from pipelines import storage
    from pipelines.manifest import has_manifest

    dataset = config["dataset"]
    if dataset == "synthetic":
        folder = synthetic_dir(config)
        return folder, (pipelines.read_manifest(folder) if has_manifest(folder) else None)
    data_dir = config["data_dir"] or (dataset if dataset not in ("imagenet64", "places365") else None)
    if data_dir is None:
        raise UsageError(f"--dataset {dataset} needs --data-dir: the output of python -m pipelines.convert {dataset}")
    if not storage.isdir(data_dir):
        raise UsageError(f"data dir {data_dir} does not exist; convert the dataset first (python -m pipelines.convert)")
    manifest = pipelines.read_manifest(data_dir)
    pipelines.verify_manifest(data_dir, splits=["train", "validation"], manifest=manifest)
    return data_dir, manifest


def prepare_data(config, data_dir, manifest=None):
    """The manifest of `data_dir` (`manifest`, when `locate_data` already read it), converting the
    synthetic set on first use."""
    import pipelines

    if manifest is not None:
        return manifest
    if config["dataset"] == "synthetic":
        pipelines.ensure_synthetic(data_dir, progress=True, **(config.get("synthetic") or {}))
    return pipelines.read_manifest(data_dir)


def steps_per_epoch(config, manifest, data_dir):
    """`--steps-per-epoch`, or the number of whole batches in the training split (twice the split
    under `--augment chrabaszcz`, whose epoch holds every image and its mirror image)."""
    from pipelines.augmentations import epoch_examples

    if config["steps_per_epoch"]:
        return config["steps_per_epoch"]
    examples = epoch_examples(manifest["splits"]["train"]["num_examples"], config.get("augment"))
    steps = examples // config["batch_size"]
    if steps == 0:
        raise UsageError(f"--batch-size {config['batch_size']} is larger than the training set of {data_dir} "
                         f"({examples} examples an epoch)")
    return steps


def make_inputs(config, data_dir, manifest=None):
    """(train, validation, manifest, steps per epoch): the `tf.data` inputs of a configuration."""
    import pipelines

    manifest = manifest or pipelines.read_manifest(data_dir)
    batch = config["batch_size"]
    steps = steps_per_epoch(config, manifest, data_dir)
    # The training input repeats and an epoch is `steps` batches, so Keras knows the epoch length.
    train = pipelines.make_dataset(
        data_dir, "train", batch, training=True, seed=config["seed"], cache=config["cache"], repeat=True,
        augment=config.get("augment") or "auto",
    )
    validation = pipelines.make_dataset(data_dir, "validation", batch, training=False)
    if config["strategy"] != "multi-worker":  # each worker reads only its files there
        # A declared length spares Keras' "ran out of data" warning at every validation.
        import tensorflow as tf

        num_batches = -(-manifest["splits"]["validation"]["num_examples"] // batch)
        validation = validation.apply(tf.data.experimental.assert_cardinality(num_batches))
    return train, validation, manifest, steps


def input_statistics(manifest, data_dir=None):
    """`build_model`'s `mean` and `std`: the training split's per-channel pixel statistics that the
    conversion recorded in the manifest. A manifest without them (converted by an older version)
    gives `{}`, i.e. ImageNet's, and a note saying so."""
    mean, std = manifest.get("pixel_mean"), manifest.get("pixel_std")
    if mean is not None and std is not None and min(std) > 0:
        return {"mean": list(mean), "std": list(std)}
    where = f"the manifest of {data_dir}" if data_dir else "the dataset's manifest"
    print(f"note: {where} records no positive pixel_mean / pixel_std (converted by an older version, or a "
          "constant channel); the model normalises its input with ImageNet's mean and std. Convert the "
          "dataset again (--overwrite) to use its own.", flush=True)
    return {}


def build_and_compile(config, input_shape, num_classes, steps_per_epoch, jit_compile="auto", *, mean=None,
                      std=None):
    """`build_model` for the configuration, compiled with SGD, the step schedule and top-1/top-5.

    `mean` and `std` (None: ImageNet's) normalise the input; `input_statistics` reads them from a manifest.
    """
    import keras

    from gmsop_keras.models import build_model
    from gmsop_keras.recipes import step_schedule

    model = build_model(
        config["backbone"], config["head"], num_classes=num_classes, input_shape=tuple(input_shape),
        mean=mean, std=std, **model_options(config),
    )
    schedule = step_schedule(config["lr"], config["stages"], steps_per_epoch, config["lr_decay"])
    optimizer = make_optimizer(config, schedule)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
        jit_compile=jit_compile,
    )
    return model


# BatchNorm scales and offsets, and every bias: exempt from weight decay unless
# `decay_norms_and_biases` (the official code decays every parameter).
NORMS_AND_BIASES = ("gamma", "beta", "bias")


def make_optimizer(config, learning_rate):
    """SGD with the configuration's momentum and weight decay (`weight_decay_mode`).

    coupled: the paper's L2 term wd * w in the gradient, which the momentum then
    accumulates (`CoupledWeightDecaySGD`). decoupled: Keras' decay applied outside the
    momentum; the L2 term's steady-state pull under momentum is lr * wd / (1 - momentum) per
    step, so Keras gets wd / (1 - momentum). Norms and biases are exempt unless
    `decay_norms_and_biases`.
    """
    import keras

    from gmsop_keras.optimizers import CoupledWeightDecaySGD

    momentum, decay = config["momentum"], config["weight_decay"]
    exempt = () if config.get("decay_norms_and_biases") else NORMS_AND_BIASES
    if config.get("weight_decay_mode", "decoupled") == "coupled":
        return CoupledWeightDecaySGD(learning_rate=learning_rate, momentum=momentum, l2=decay, l2_exempt=exempt)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=decay / (1.0 - momentum))
    if exempt:
        optimizer.exclude_from_weight_decay(var_names=list(exempt))
    return optimizer


def evaluate_saved(path, validation, steps):
    """Validation metrics of the saved model, on one device.

    Under MirroredStrategy each replica keeps its own BatchNorm moving statistics
    (Keras' per-replica BatchNorm); the saved and exported model carries the first
    replica's, while an evaluation under the strategy would mix them. Evaluating the
    saved file makes metrics.json describe exactly the model that was saved.
    """
    import keras

    import gmsop_keras.layers  # noqa: F401  (registers the layers for loading)
    import gmsop_keras.optimizers  # noqa: F401  (and the coupled-decay optimizer)

    model = keras.saving.load_model(path)
    return model.evaluate(validation, steps=steps, verbose=0, return_dict=True)


def keras_verbosity(value):
    """Keras' `verbose` for a `--verbose` value: "auto" is a progress bar on a terminal,
    one line per epoch otherwise."""
    if value == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(value)
