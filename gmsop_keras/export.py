"""python -m gmsop_keras.export: a trained model -> a SavedModel that TF Serving and plain TensorFlow load.

    python -m gmsop_keras.export runs/imagenet64-resnet18-gm-sop-16-8 --output saved_models/gmsop
    python -m gmsop_keras.export runs/places/best.keras --output saved_models/places --data-dir data/places365

Writes `OUTPUT/<version>/` (the next free integer unless `--version` is given), the layout TF Serving
watches. Signature `serving_default`: input `image`, uint8 [None, H, W, 3] (H, W: the model's input
size); outputs `logits` and `probabilities` [None, C], the top-5 `classes` (int32) and their `scores`.
Inference mode: no gate noise, BatchNorm with its moving statistics. `assets/class_names.txt` (when
the dataset's manifest has names) and `assets/preprocessing.json` tell `gmsop_keras.predict` how to
prepare image files. Loading the SavedModel needs only TensorFlow. See docs/serving.md.
"""

import argparse
import json
import operator
import os
import shutil
import sys
import uuid

from gmsop_keras.errors import UsageError, add_debug_flag, run_cli
from pipelines import storage
from pipelines.startup import load_tensorflow

SIGNATURE = "serving_default"
INPUT_NAME = "image"
TOP_K = 5
CLASS_NAMES_FILE = "class_names.txt"
PREPROCESSING_FILE = "preprocessing.json"


def export_model(model, output_base, version=None, manifest=None, class_names=None):
    """Exports `model` as a SavedModel in `output_base/<version>/`.

    A version is complete when its `saved_model.pb` exists: TensorFlow writes it after the
    variables and assets, and this package's own assets are written before it. On a local disk
    the version is also built in a temporary folder beside it and renamed into place, so that TF
    Serving never sees a version being written. On a URL (`gs://...`; object stores have no
    rename) it is written in place, and an interrupted export leaves a version folder without
    `saved_model.pb`, which `gmsop_keras.predict` refuses and the next export skips. An existing
    version is never overwritten.

    Args:
        model: a `keras.Model` taking raw RGB images in [0, 255] of a static size (`build_model`).
        output_base: the model's folder, e.g. `saved_models/NAME`.
        version: integer version; default: one more than the largest there (1 for a new folder).
        manifest: the dataset's manifest (`pipelines.read_manifest`): class names, and the stored
            image size from which `gmsop_keras.predict` centre-crops when the model's input is
            smaller (Places365: stored 100x100, model 96x96).
        class_names: names of the classes; default: the manifest's, if any.

    Returns:
        The version folder written.

    Raises:
        UsageError: the version folder exists already.
        ValueError: a bad version, a model without a static image size, or class names that do
            not match the number of classes.
    """
    import tensorflow as tf
    from keras.export import ExportArchive

    height, width = _input_size(model)
    num_classes = int(model.output_shape[-1])
    if class_names is None and manifest is not None:
        class_names = manifest.get("class_names")
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
        if any("\n" in name or "\r" in name for name in class_names):
            raise ValueError("class names must not contain line breaks (one name a line in class_names.txt)")
    version = next_version(output_base) if version is None else _check_version(version)
    target = storage.join(output_base, str(version))
    if storage.exists(target):
        raise UsageError(f"{target} exists; versions are never overwritten, choose another --version")

    k = min(TOP_K, num_classes)

    def predict(image):
        logits = tf.cast(model(tf.cast(image, tf.float32), training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, classes = tf.math.top_k(probabilities, k=k)
        return logits, probabilities, classes, scores

    def nothing():
        empty = tf.zeros([0, num_classes], tf.float32)
        return empty, empty, tf.zeros([0, k], tf.int32), tf.zeros([0, k], tf.float32)

    def serve(image):
        image = check_image_shape(image, height, width)
        # An empty batch answers empty outputs without running the network: TensorFlow 2.21's
        # oneDNN Conv2D returns a wrongly shaped result for a batch of 0 on CPUs.
        logits, probabilities, classes, scores = tf.cond(
            tf.shape(image)[0] > 0, lambda: predict(image), nothing)
        return {"logits": logits, "probabilities": probabilities, "classes": classes, "scores": scores}

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE, serve, input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name=INPUT_NAME)]
    )
    storage.makedirs(output_base)
    if storage.is_url(output_base):
        _write_version(archive, target, model, manifest, class_names)  # saved_model.pb last
        return target
    # TF Serving only loads folders named by an integer: the temporary one is invisible to it.
    temp_dir = os.path.join(output_base, f".tmp-{version}-{uuid.uuid4().hex[:12]}")
    try:
        _write_version(archive, temp_dir, model, manifest, class_names)
        if os.path.exists(target):  # another export took this version meanwhile
            raise UsageError(f"{target} exists; versions are never overwritten, choose another --version")
        os.rename(temp_dir, target)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return target


def _write_version(archive, folder, model, manifest, class_names):
    """This package's assets, then the SavedModel, whose `saved_model.pb` TensorFlow writes last."""
    assets = storage.join(folder, "assets")
    storage.makedirs(assets)
    storage.write_text(storage.join(assets, PREPROCESSING_FILE), json.dumps(preprocessing(model, manifest), indent=1) + "\n")
    if class_names is not None:
        storage.write_text(storage.join(assets, CLASS_NAMES_FILE), "".join(f"{name}\n" for name in class_names))
    archive.write_out(folder, verbose=False)


def check_image_shape(image, height, width):
    """`image` after a run-time check that it is [batch, height, width, 3], with a message saying so.

    The `TensorSpec` of a signature does not do it: a loaded SavedModel's signature function only
    converts its inputs to the declared dtype and passes them to the graph, whose placeholders do not
    check shapes at run time; a wrong size then flows into the network, which answers (global
    average pooling takes any size) or fails deep inside (a reshape of the mixture).
    """
    import tensorflow as tf

    shape = tf.shape(image)
    # [H, W, 3, -1] exactly when the shape is [B, H, W, 3] (padding with -1 compares any rank).
    padded = tf.concat([shape, tf.constant([-1, -1, -1, -1])], axis=0)[1:5]
    valid = tf.reduce_all(tf.equal(padded, tf.constant([height, width, 3, -1])))
    check = tf.debugging.Assert(valid, [f"the model takes uint8 images of shape [batch, {height}, {width}, 3]; "
                                        f"resize or crop the images to {height}x{width} RGB. Received shape:",
                                        shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(image)


def next_version(output_base):
    """One more than the largest integer-named folder in `output_base` (1 when there is none)."""
    if not storage.isdir(output_base):
        return 1
    versions = [int(name) for name in storage.listdir(output_base)
                if name.isascii() and name.isdigit() and storage.isdir(storage.join(output_base, name))]
    return max(versions, default=0) + 1


def preprocessing(model, manifest=None):
    """How an image file becomes the model's input: resize to `resize_to`, then centre-crop `crop_to`.

    The stored size of the dataset (the manifest's `image_shape`) when it is larger than the model's
    input (Places365: 100x100, then the 96x96 centre crop evaluation uses), else the input size.
    """
    size = list(_input_size(model))
    stored = list(manifest["image_shape"][:2]) if manifest else size
    crop = stored != size and all(s >= i for s, i in zip(stored, size))
    return {
        "resize_to": stored if crop else size,
        "crop_to": size if crop else None,
        "resize_method": "bicubic, antialiased (MATLAB imresize semantics, pipelines.resize)",
        "dataset": manifest.get("dataset") if manifest else None,
    }


def _input_size(model):
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
        raise ValueError(f"the model must take images of a fixed size [None, H, W, 3]. Received: {shape}")
    return int(shape[1]), int(shape[2])


def _check_version(version):
    try:
        checked = operator.index(version)
    except TypeError:
        checked = 0
    if isinstance(version, bool) or checked < 1:
        raise ValueError(f"`version` must be a positive integer. Received: version={version!r}")
    return checked


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m gmsop_keras.export", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .keras file, or a model dir (its best.keras, else final.keras)")
    parser.add_argument("--output", help="model folder receiving the numbered version "
                                         "(default: saved_models/<name of the model dir>)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--data-dir", help="the dataset the model was trained on, for class names and "
                                           "image size (default: the data dir in the model dir's config.yaml)")
    add_debug_flag(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.version is not None and args.version < 1:
        raise UsageError(f"--version must be a positive integer, got {args.version}")
    from gmsop_keras.evaluate import load_model, resolve_model_path

    path = resolve_model_path(args.model)
    model_dir = storage.dirname(path)
    output = args.output or os.path.join("saved_models", storage.basename(model_dir))
    if args.version is not None and storage.exists(storage.join(output, str(args.version))):  # before loading
        raise UsageError(f"{storage.join(output, str(args.version))} exists; versions are never overwritten, "
                         "choose another --version")
    manifest = find_manifest(args.data_dir, model_dir)
    load_tensorflow(args.debug)
    model = load_model(path)
    num_classes = int(model.output_shape[-1])
    if manifest is not None and manifest["num_classes"] != num_classes:
        source = args.data_dir or "the dataset of its config.yaml"
        raise UsageError(f"model {path} predicts {num_classes} classes, but {source} has "
                         f"{manifest['num_classes']}; pass --data-dir with the dataset the model was trained on")
    try:
        written = export_model(model, output, version=args.version, manifest=manifest)
    except ValueError as error:  # a model without a fixed image size, class names that do not fit
        raise UsageError(f"cannot export {path}: {error}") from None
    if manifest is None or not manifest.get("class_names"):
        print("note: no class names (pass --data-dir with a dataset whose manifest has them)", file=sys.stderr)
    print(written)
    return 0


def find_manifest(data_dir, model_dir):
    """The manifest of `data_dir`; without one, of the dataset in `model_dir/config.yaml`, if readable."""
    from pipelines import DataError, read_manifest
    from pipelines.manifest import has_manifest

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
    from gmsop_keras.config import read_saved_config
    from gmsop_keras.training import synthetic_dir

    config = read_saved_config(model_dir)
    if config is None:
        return []
    candidates = [config.get("data_dir"), config.get("dataset")]
    if config.get("dataset") == "synthetic":
        candidates.append(synthetic_dir(config))  # where `fit` converts the built-in synthetic set
    return [c for c in candidates if isinstance(c, str) and storage.isdir(c)]


def console_main():
    """The `gmsop-export` console script."""
    sys.exit(run_cli(main))


if __name__ == "__main__":
    console_main()
