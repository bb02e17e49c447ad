"""TFDS sources read from a local data dir: tiny real `imagenet_resized/64x64` and `places365_small`."""

import importlib.resources
import sys

import numpy as np
import pytest

from pipelines import DataError, read_manifest
from pipelines.convert import main as convert
from pipelines.resize import resize_images

OPTS = ["--workers", "1", "--min-shards", "2", "--no-progress"]


def store(data_dir, name, config, splits):
    """Writes a prepared TFDS dataset (same builder name, version and features as the real one)."""
    # tensorflow-datasets 4.9.10 preparing a dataset (not reading one) imports `importlib_resources`,
    # which its requirements only install on Python < 3.9; the standard library module serves.
    sys.modules.setdefault("importlib_resources", importlib.resources)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder(f"{name}/{config}" if config else name, data_dir=data_dir)
    datasets = {split: tf.data.Dataset.from_tensor_slices(columns) for split, columns in splits.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=str(builder.version), config=config, features=builder.info.features,
        split_datasets=datasets, data_dir=data_dir, disable_shuffling=True)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    small_labels = np.array([0, 999, 5, 5, 7, 1, 2])
    store(data_dir, "imagenet_resized", "64x64", {
        "train": {"image": small[:5], "label": small_labels[:5]},
        "validation": {"image": small[5:], "label": small_labels[5:]}})
    places = rng.integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    places_labels = np.array([3, 364, 0, 10, 200])
    names = np.array([f"img{i}.jpg" for i in range(5)])
    store(data_dir, "places365_small", None, {
        "train": {"image": places[:3], "label": places_labels[:3], "filename": names[:3]},
        "validation": {"image": places[3:], "label": places_labels[3:], "filename": names[3:]}})
    return data_dir, (small, small_labels), (places, places_labels)


def test_imagenet_resized(tmp_path, tfds_dir, read_all):
    data_dir, (images, labels), _ = tfds_dir
    out = str(tmp_path / "out")
    assert convert(["imagenet64", "--tfds-data-dir", data_dir, "--output", out, *OPTS]) == 0
    got_images, got_labels = read_all(out, "train")
    np.testing.assert_array_equal(got_images, images[:5])  # TFDS keeps file order without shuffling
    np.testing.assert_array_equal(got_labels, labels[:5])  # already 0-based
    got_images, got_labels = read_all(out, "validation")
    np.testing.assert_array_equal(got_images, images[5:])
    manifest = read_manifest(out)
    assert manifest["dataset"] == "imagenet64" and manifest["class_names"][0] == "n02119789"
    assert manifest["source"]["format"] == "tfds"


def test_places365_small_resized_to_100(tmp_path, tfds_dir, read_all):
    data_dir, _, (images, labels) = tfds_dir
    out = str(tmp_path / "out")
    assert convert(["places365", "--tfds-data-dir", data_dir, "--output", out, *OPTS]) == 0
    got_images, got_labels = read_all(out, "validation", crop_size=None)
    np.testing.assert_array_equal(got_images, resize_images(images[3:], (100, 100)))
    np.testing.assert_array_equal(got_labels, labels[3:])
    manifest = read_manifest(out)
    assert manifest["dataset"] == "places365" and manifest["image_shape"] == [100, 100, 3]
    assert manifest["num_classes"] == 365 and manifest["class_names"][0] == "airfield"


def test_no_prepared_dataset(tmp_path):
    from pipelines.imagenet64 import imagenet64_source

    with pytest.raises(DataError, match="no prepared TFDS dataset imagenet_resized/64x64.*tfds build"):
        imagenet64_source(tfds_data_dir=str(tmp_path))
