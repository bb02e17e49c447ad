"""Prediction from an exported SavedModel: its preprocessing, its class names, its top-5; needs no Keras."""

import json

import numpy as np
import tensorflow as tf

from gmsop_keras.serving.paths import CLASS_NAMES_FILE, PREPROCESSING_FILE, SIGNATURE, resolve_saved_model
from pipelines import storage
from pipelines.resize import resize_images


class Predictor:
    """An exported SavedModel with its preprocessing and class names; needs no Keras.

    Args:
        path: a version folder, or a folder of numbered versions (the newest is used).

    Example:

    >>> from pipelines.folder import load_image
    >>> predictor = Predictor("saved_models/gmsop")
    >>> results = predictor.predict([load_image("cat.jpg")])
    >>> results[0][0]  # best class: (index, name or None, probability)
    (281, 'n02123045', 0.83)
    """

    def __init__(self, path):
        self.path = resolve_saved_model(path)
        self.signature = tf.saved_model.load(self.path).signatures[SIGNATURE]
        height, width = self.signature.structured_input_signature[1]["image"].shape[1:3]
        assets = storage.join(self.path, "assets")
        self.preprocessing = {"resize_to": [height, width], "crop_to": None}
        if storage.isfile(storage.join(assets, PREPROCESSING_FILE)):
            self.preprocessing.update(json.loads(storage.read_text(storage.join(assets, PREPROCESSING_FILE))))
        self.class_names = None
        if storage.isfile(storage.join(assets, CLASS_NAMES_FILE)):
            self.class_names = storage.read_text(storage.join(assets, CLASS_NAMES_FILE)).splitlines()

    def prepare(self, image):
        """uint8 RGB [H, W, 3] of any size -> the model's input size, as the dataset was made."""
        return prepare_image(image, self.preprocessing["resize_to"], self.preprocessing.get("crop_to"))

    def predict(self, images):
        """Top-5 `(class, name, score)` lists for a list of uint8 RGB images of any size."""
        batch = np.stack([self.prepare(image) for image in images])
        outputs = self.signature(image=tf.constant(batch))
        classes, scores = outputs["classes"].numpy(), outputs["scores"].numpy()
        return [
            [(int(c), self.class_names[c] if self.class_names else None, float(s)) for c, s in zip(row, row_scores)]
            for row, row_scores in zip(classes, scores)
        ]


def prepare_image(image, resize_to, crop_to=None):
    """Resizes uint8 [H, W, 3] to `resize_to` (MATLAB bicubic imresize), then centre-crops `crop_to`."""
    image = resize_images(image[None], tuple(resize_to))[0]
    if crop_to:
        # The evaluation crop of pipelines.augment.center_crop: odd margins leave the extra pixel after.
        top = (image.shape[0] - crop_to[0]) // 2
        left = (image.shape[1] - crop_to[1]) // 2
        image = image[top:top + crop_to[0], left:left + crop_to[1]]
    return image
