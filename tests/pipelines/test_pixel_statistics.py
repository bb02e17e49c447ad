"""Per-dataset normalisation: the manifest's pixel mean/std of the training split, and the model built from it."""

import dataclasses
import os

import keras
import numpy as np
import pytest
from PIL import Image

from gmsop_keras import build_model
from gmsop_keras.training.data import input_statistics
from pipelines import DataError, read_manifest
from pipelines.folder import folder_source
from pipelines.pixel_statistics import pixel_sums
from pipelines.writer import write_dataset


def make_tree(root, rng):
    """A train/val tree of 12x10 images whose channels have very different means and spreads."""
    for split, count in (("train", 5), ("val", 2)):
        for cls in ("a", "b"):
            for i in range(count):
                image = np.stack([rng.integers(0, 60, (12, 10)), rng.integers(100, 256, (12, 10)),
                                  np.full((12, 10), 200) + rng.integers(-5, 6, (12, 10))], axis=-1)
                path = os.path.join(root, split, cls, f"{i}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(image.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(str(root), np.random.default_rng(0))
    out = str(root / "out")
    write_dataset(folder_source(str(root), (12, 10)), out, min_shards=3, workers=2, progress=False)
    return out


def test_pixel_sums_are_exact():
    images = np.random.default_rng(1).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    wide = images.astype(np.int64)
    expected = [[int(wide[..., c].sum()), int((wide[..., c] ** 2).sum())] for c in range(3)]
    assert pixel_sums(images) == expected


def test_manifest_holds_the_training_split_statistics(folder_dataset, read_all):
    manifest = read_manifest(folder_dataset)
    images, _ = read_all(folder_dataset, "train")
    assert images.shape == (10, 12, 10, 3) and len(manifest["splits"]["train"]["shards"]) == 3
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(manifest["pixel_mean"], pixels.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(manifest["pixel_std"], pixels.std(axis=0), atol=1e-5)
    validation, _ = read_all(folder_dataset, "validation")
    assert not np.allclose(manifest["pixel_mean"], validation.reshape(-1, 3).mean(axis=0), atol=1e-3)
    # The per-shard sums serve the statistics only; the shard entries stay as they were.
    assert all("pixel_sums" not in shard for split in manifest["splits"].values() for shard in split["shards"])


def test_model_from_the_manifest_normalises_to_zero_mean_unit_std(folder_dataset, read_all):
    manifest = read_manifest(folder_dataset)
    images, _ = read_all(folder_dataset, "train")
    model = build_model("resnet18", "gap", num_classes=2, input_shape=(12, 10, 3), **input_statistics(manifest))
    normalised = keras.ops.convert_to_numpy(model.get_layer("normalization")(images.astype("float32")))
    np.testing.assert_allclose(normalised.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.reshape(-1, 3).std(axis=0), 1.0, atol=1e-4)
    # ImageNet's statistics would leave the third channel far from standardised.
    imagenet = build_model("resnet18", "gap", num_classes=2, input_shape=(12, 10, 3))
    other = keras.ops.convert_to_numpy(imagenet.get_layer("normalization")(images.astype("float32")))
    assert other.reshape(-1, 3)[:, 2].std() < 0.1


def test_older_manifest_gets_imagenet_statistics_with_a_note(folder_dataset, capsys):
    manifest = dict(read_manifest(folder_dataset))
    del manifest["pixel_mean"], manifest["pixel_std"]
    assert input_statistics(manifest, "data/old") == {}
    assert "data/old records no positive pixel_mean / pixel_std" in capsys.readouterr().out
    model = build_model("resnet18", "gap", num_classes=2, input_shape=(12, 10, 3), **input_statistics(manifest))
    config = model.get_layer("normalization").get_config()
    np.testing.assert_allclose(np.ravel(config["mean"]), [123.675, 116.28, 103.53], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mean=[1.0, 2.0]), r"`mean` must be three finite numbers.*Received: mean=\[1.0, 2.0\]"),
        (dict(std=[1.0, 0.0, 1.0]), r"`std` must be three positive numbers"),
        (dict(mean="abc"), r"`mean` must be three finite numbers"),
    ],
)
def test_build_model_refuses_bad_statistics(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("resnet18", "gap", num_classes=2, input_shape=(8, 8, 3), **kwargs)


def test_a_resumed_conversion_keeps_the_statistics(tmp_path, folder_dataset):
    # The sums travel with each finished shard in the progress file, so a resumed run still has them all.
    make_tree(str(tmp_path), np.random.default_rng(0))  # the same images as `folder_dataset`
    source = folder_source(str(tmp_path), (12, 10))
    train = source.splits["train"]
    calls = []

    def failing_read(start, stop):
        calls.append(start)
        if len(calls) == 2:
            raise DataError("interrupted")
        return train.read(start, stop)

    broken = dataclasses.replace(source, splits={**source.splits, "train": dataclasses.replace(train, read=failing_read)})
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="interrupted"):
        write_dataset(broken, out, min_shards=3, workers=1, progress=False)
    again = []

    def counting_read(start, stop):
        again.append(start)
        return train.read(start, stop)

    counted = dataclasses.replace(source, splits={**source.splits, "train": dataclasses.replace(train, read=counting_read)})
    resumed = write_dataset(counted, out, min_shards=3, workers=1, progress=False)
    assert calls[0] == 0 and 0 not in again and len(again) == 2  # the first shard's sums come from the progress file
    expected = read_manifest(folder_dataset)
    assert resumed["pixel_mean"] == expected["pixel_mean"] and resumed["pixel_std"] == expected["pixel_std"]
