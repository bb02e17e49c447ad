"""Prediction from a trained `.keras` model (a run directory, or the file): what `Predictor` answers from
its export, with the same preprocessing and class names (the run's dataset, as `gmsop_keras.export` writes
them), without exporting first."""

import keras
import numpy as np

from gmsop_keras.serving.export import preprocessing
from gmsop_keras.serving.loading import load_run_model
from gmsop_keras.serving.paths import TOP_K
from gmsop_keras.serving.predictor import prepare_image
from gmsop_keras.training.data import find_manifest
from gmsop_keras.training.errors import UsageError
from pipelines import storage


class KerasPredictor:
    """A model dir's best.keras (else final.keras), or a `.keras` file, with the preprocessing and class
    names of the dataset named in the run's config.yaml (`data_dir` overrides it).

    Example:

    >>> from pipelines.folder import load_image
    >>> predictor = KerasPredictor("runs/synthetic-resnet18-gm-sop-16-8")
    >>> predictor.predict([load_image("cat.png")])[0][0]  # best class: (index, name or None, probability)
    (3, 'matching_03', 0.91)
    """

    def __init__(self, model, path=None, data_dir=None):
        self.model, self.path = load_run_model(model, path)
        num_classes = int(self.model.output_shape[-1])
        manifest = find_manifest(data_dir, storage.dirname(self.path))
        if manifest is not None and manifest["num_classes"] != num_classes:
            raise UsageError(f"model {self.path} predicts {num_classes} classes, but its dataset has "
                             f"{manifest['num_classes']}; pass --data-dir with the dataset it was trained on")
        self.manifest = manifest
        self.preprocessing = preprocessing(self.model, manifest)
        self.class_names = [str(name) for name in manifest["class_names"]] if manifest and manifest.get(
            "class_names") else None
        self.k = min(TOP_K, num_classes)

    def prepare(self, image):
        """uint8 RGB [H, W, 3] of any size -> the model's input size, as the dataset was made."""
        return prepare_image(image, self.preprocessing["resize_to"], self.preprocessing.get("crop_to"))

    def predict(self, images):
        """Top-5 `(class, name, score)` lists for a list of uint8 RGB images of any size."""
        batch = np.stack([self.prepare(image) for image in images]).astype("float32")
        logits = keras.ops.cast(self.model(batch, training=False), "float32")
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        results = []
        for row in probabilities:
            classes = np.argsort(-row, kind="stable")[:self.k]
            results.append([(int(c), self.class_names[c] if self.class_names else None, float(row[c]))
                            for c in classes])
        return results
