"""Export to the layout TF Serving watches: `<output>/<version>/saved_model.pb` with a signature that
takes uint8 images and answers logits, probabilities and the top-5 classes (docs/serving.md)."""

import json
import operator
import os
import shutil
import uuid

import tensorflow as tf
from keras.export import ExportArchive

from gmsop_keras.serving.paths import CLASS_NAMES_FILE, INPUT_NAME, PREPROCESSING_FILE, SIGNATURE, TOP_K
from gmsop_keras.training.errors import UsageError
from pipelines import storage


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
