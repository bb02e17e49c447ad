"""Loading a saved `.keras` model for evaluation, and what evaluation does with it."""

import zipfile

import keras
import numpy as np

import gmsop_keras.layers  # noqa: F401  (registers the layer classes, which loading looks up)
import gmsop_keras.training.optimizers  # noqa: F401  (and the coupled-decay optimizer of a compiled model)
from gmsop_keras.serving.paths import resolve_model_path
from gmsop_keras.training.errors import UsageError
from pipelines.dataset import default_crop_size


def load_run_model(model, path=None):
    """(Keras model, its file) for a `.keras` file or a model dir: `resolve_model_path`'s choice (`path`, when
    the caller resolved it already), passing over a file that Keras cannot load, with a warning, to the
    model dir's next one (best.keras, then final.keras).

    Raises:
        UsageError: no file loads, each one named with what is wrong with it.
    """
    damaged = {}
    path = path or resolve_model_path(model)
    while True:
        try:
            return keras.saving.load_model(path), path
        except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
            damaged[path] = "Keras cannot load it: " + " ".join(str(error).split())[:300]
            path = resolve_model_path(model, damaged)


def check_model_matches_data(model, manifest, model_path, data_dir):
    """The evaluation crop side for `model` on the dataset of `manifest` (None: whole images).

    A model fits a dataset when it has the manifest's number of classes and takes either the stored
    images or the crop that training takes from them (`pipelines.dataset.default_crop_size`:
    Places365's 96x96 of 100x100).

    Raises:
        UsageError: naming both shapes and the fix.
    """
    input_shape = tuple(model.input_shape[1:])
    num_classes = int(model.output_shape[-1])
    stored = tuple(manifest["image_shape"])
    crop = default_crop_size(manifest["dataset"])
    valid = [stored] + ([(crop, crop, stored[2])] if crop and crop < min(stored[:2]) else [])
    if num_classes == manifest["num_classes"] and input_shape in valid:
        return None if input_shape == stored else crop
    sizes = " or ".join("x".join(map(str, shape)) for shape in valid)
    raise UsageError(
        f"model {model_path} takes {'x'.join(map(str, input_shape))} images and predicts {num_classes} "
        f"classes, but {data_dir} holds {manifest['dataset']} images of {'x'.join(map(str, stored))} "
        f"({manifest['num_classes']} classes; a model for it takes {sizes} with {manifest['num_classes']} "
        "classes); evaluate the model on the dataset it was trained on (the data_dir of its config.yaml)")


def predict_probabilities(model, images, ten_crop_size=None):
    """Softmax of the model; with `ten_crop_size`, averaged over the ten standard crops."""
    if ten_crop_size is None:
        crops = [images]
    else:
        h, w = images.shape[1:3]
        c = ten_crop_size
        corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
        crops = [images[:, y:y + c, x:x + c] for y, x in corners]
        crops += [crop[:, :, ::-1] for crop in crops]
    probabilities = [keras.ops.convert_to_numpy(keras.ops.softmax(model(c.astype("float32"), training=False))) for c in crops]
    return np.mean(probabilities, axis=0)


def topk_correct(probabilities, labels):
    """(top-1, top-5) counts of the rows of `probabilities` (batch, classes) whose label in `labels`
    (batch,) is the highest score, or among the five highest (every class with fewer than five)."""
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    return int((top5[:, 0] == labels).sum()), int((top5 == labels[:, None]).any(axis=1).sum())
