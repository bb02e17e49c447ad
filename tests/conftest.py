"""Shared test configuration: quiet TensorFlow, the TensorFlow backend, deterministic seeds, tiny data."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    import keras

    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A converted synthetic set: 4 classes, 16x16 images, 64 training and 32 validation examples."""
    import pipelines

    folder = tmp_path_factory.mktemp("data") / "synthetic"
    return str(pipelines.ensure_synthetic(
        str(folder), num_classes=4, train_per_class=16, val_per_class=8, image_size=16, min_shards=2
    ))
