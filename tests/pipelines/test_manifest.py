"""Manifest reading and verification: what make_dataset refuses, and how it says so."""

import json
import os
import shutil

import pytest

from pipelines import DataError, make_dataset, read_manifest, verify_manifest


@pytest.fixture
def copy(tmp_path, synthetic_dir):
    target = str(tmp_path / "data")
    shutil.copytree(synthetic_dir, target)
    return target


def edit_manifest(data_dir, change):
    path = os.path.join(data_dir, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    change(manifest)
    with open(path, "w") as f:
        json.dump(manifest, f)


def test_manifest_contents(synthetic_dir):
    manifest = read_manifest(synthetic_dir)
    assert manifest["dataset"] == "synthetic" and manifest["num_classes"] == 4
    assert manifest["image_shape"] == [16, 16, 3]
    assert manifest["class_names"] == ["matching_00", "matching_01", "matching_02", "matching_03"]
    assert {name: split["num_examples"] for name, split in manifest["splits"].items()} == {
        "train": 96, "validation": 24}
    shard = manifest["splits"]["train"]["shards"][0]
    assert shard["file"] == "train-00000-of-00004.tfrecord" and shard["num_examples"] == 24
    assert shard["bytes"] == os.path.getsize(os.path.join(synthetic_dir, shard["file"]))
    assert len(shard["sha256"]) == 64 and manifest["skipped"] == []
    assert verify_manifest(synthetic_dir, checksums=True) == manifest


def test_missing_split(synthetic_dir):
    with pytest.raises(DataError, match="no split 'test' \\(the dataset has train, validation\\)"):
        make_dataset(synthetic_dir, "test", 8, training=False)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="no manifest .*pipelines.convert"):
        make_dataset(str(tmp_path), "train", 8, training=True)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(DataError, match="not a dataset manifest \\(missing image_shape"):
        read_manifest(str(tmp_path))


def test_missing_shard(copy):
    os.remove(os.path.join(copy, "train-00002-of-00004.tfrecord"))
    with pytest.raises(DataError, match="train-00002-of-00004.tfrecord: shard listed in manifest.json is"):
        make_dataset(copy, "train", 8, training=True)
    make_dataset(copy, "validation", 8, training=False)  # the other split is still fine


def test_truncated_shard(copy):
    path = os.path.join(copy, "validation-00001-of-00004.tfrecord")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="validation-00001-of-00004.tfrecord: 100 bytes, but manifest.json"):
        make_dataset(copy, "validation", 8, training=False)


def test_corrupt_shard_found_by_checksum(copy):
    path = os.path.join(copy, "train-00000-of-00004.tfrecord")
    with open(path, "r+b") as f:
        f.seek(500)
        f.write(b"\xff\xff")
    verify_manifest(copy)  # same size: the cheap check passes
    with pytest.raises(DataError, match="SHA-256 differs"):
        verify_manifest(copy, checksums=True)


def test_counts_that_do_not_add_up(copy):
    edit_manifest(copy, lambda m: m["splits"]["train"].update(num_examples=97))
    with pytest.raises(DataError, match="split 'train' has num_examples 97 but its shards hold 96"):
        make_dataset(copy, "train", 8, training=True)


def test_bad_image_shape(copy):
    edit_manifest(copy, lambda m: m.update(image_shape=[16, 16]))
    with pytest.raises(DataError, match=r"image_shape must be \[H, W, 3\]"):
        make_dataset(copy, "train", 8, training=True)
