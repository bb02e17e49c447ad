"""Exports on a URL (`ram://`): written in place with saved_model.pb last; incomplete versions refused."""

import json
import uuid

import numpy as np
import pytest

from gmsop_keras.training.errors import UsageError
from gmsop_keras.serving.export import export_model, next_version
from gmsop_keras.serving.paths import resolve_saved_model
from gmsop_keras.serving.predictor import Predictor
from pipelines import storage


def _tiny_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_export_to_a_url_and_predict_from_it():
    base = f"ram://export-{uuid.uuid4().hex}/saved"
    model = _tiny_model()
    path = export_model(model, base, class_names=["a", "b", "c"])
    assert path == f"{base}/1"
    assert sorted(storage.listdir(path)) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert json.loads(storage.read_text(f"{path}/assets/preprocessing.json"))["resize_to"] == [8, 8]
    predictor = Predictor(base)
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    top = predictor.predict(list(images))
    want = np.argsort(-model(images.astype("float32")).numpy(), axis=1)[:, :3]
    assert [[c for c, _, _ in row] for row in top] == want.tolist()
    assert top[0][0][1] == "abc"[want[0, 0]]


def test_an_interrupted_url_export_is_refused_and_skipped():
    base = f"ram://export-{uuid.uuid4().hex}/saved"
    export_model(_tiny_model(), base)
    # Version 2 cut short: variables written, saved_model.pb (TensorFlow's last write) never.
    storage.makedirs(f"{base}/2/variables")
    storage.write_text(f"{base}/2/variables/variables.index", "partial")
    assert resolve_saved_model(base) == f"{base}/1"  # the newest complete version
    with pytest.raises(UsageError, match=r"2 is an incomplete export \(no saved_model.pb"):
        resolve_saved_model(f"{base}/2")
    assert next_version(base) == 3  # the folder of the cut version is not reused
