"""The data a run configuration names: where it is, its manifest, its tf.data inputs and pixel statistics.

`fit`, the tuner and the exporter share these; `gmsop_keras.training.compile` builds the model.
"""

import os

import pipelines
from gmsop_keras.training.saved_config import read_saved_config
from gmsop_keras.training.errors import UsageError
from pipelines import DataError, read_manifest, storage
from pipelines.augmentations import epoch_examples
from pipelines.manifest import has_manifest

SYNTHETIC_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "gmsop_keras")


def synthetic_dir(config):
    """Where the built-in synthetic set of this configuration is converted (once, then reused)."""
    options = config.get("synthetic") or {}
    return config.get("data_dir") or os.path.join(
        SYNTHETIC_CACHE, "synthetic-" + "-".join(f"{k}{v}" for k, v in sorted(options.items())))


def named_data_dir(config):
    """The folder a configuration's data is in, unchecked: the synthetic set's cache (or its
    `data_dir`), else `data_dir`, else the dataset given as a folder; None for `imagenet64` or
    `places365` without a data dir."""
    dataset = config["dataset"]
    if dataset == "synthetic":
        return synthetic_dir(config)
    return config.get("data_dir") or (dataset if dataset not in ("imagenet64", "places365") else None)


def locate_data(config):
    """(data dir, manifest) of the configuration, checked without TensorFlow.

    The manifest is None for the synthetic set before its first conversion (`prepare_data`).

    Raises:
        UsageError: no data dir for a dataset that needs one, a folder that does not exist.
        pipelines.DataError: a folder that is not a finished conversion.
    """
    dataset = config["dataset"]
    data_dir = named_data_dir(config)
    if dataset == "synthetic":
        return data_dir, (read_manifest(data_dir) if has_manifest(data_dir) else None)
    if data_dir is None:
        raise UsageError(f"--dataset {dataset} needs --data-dir: the output of python -m pipelines.convert {dataset}")
    if not storage.isdir(data_dir):
        raise UsageError(f"data dir {data_dir} does not exist; convert the dataset first (python -m pipelines.convert)")
    manifest = read_manifest(data_dir)
    pipelines.verify_manifest(data_dir, splits=["train", "validation"], manifest=manifest)
    return data_dir, manifest


def prepare_data(config, data_dir, manifest=None):
    """The manifest of `data_dir` (`manifest`, when `locate_data` already read it), converting the
    synthetic set on first use."""
    if manifest is not None:
        return manifest
    if config["dataset"] == "synthetic":
        pipelines.ensure_synthetic(data_dir, progress=True, **(config.get("synthetic") or {}))
    return read_manifest(data_dir)


def steps_per_epoch(config, manifest, data_dir):
    """`--steps-per-epoch`, or the number of whole batches in the training split (twice the split
    under `--augment chrabaszcz`, whose epoch holds every image and its mirror image)."""
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
    manifest = manifest or read_manifest(data_dir)
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
        import tensorflow as tf  # noqa: PLC0415 (this module is imported before TensorFlow loads)

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


def find_manifest(data_dir, model_dir):
    """The manifest of `data_dir`; without one, of the dataset in `model_dir/config.yaml`, if readable."""
    if data_dir:
        return read_manifest(data_dir)
    for candidate in _config_data_dirs(model_dir):
        if has_manifest(candidate):
            try:
                return read_manifest(candidate)
            except DataError:
                continue
    return None


def _config_data_dirs(model_dir):
    """Dataset folders a model dir's `config.yaml` points at (`data_dir`, `dataset`, the synthetic cache)."""
    config = read_saved_config(model_dir)
    if config is None:
        return []
    candidates = [config.get("data_dir"), config.get("dataset")]
    if config.get("dataset") == "synthetic":
        candidates.append(synthetic_dir(config))  # where `fit` converts the built-in synthetic set
    return [c for c in candidates if isinstance(c, str) and storage.isdir(c)]
