"""ImageNet-64 sources: the pickled and .npz release, the .mat file (v5 and v7.3), and their errors."""

import datetime
import json
import os
import pickle

import numpy as np
import pytest

from pipelines import DataError, read_manifest
from pipelines.convert import main as convert
from pipelines.imagenet64 import imagenet64_source

OPTS = ["--workers", "2", "--min-shards", "2", "--no-progress"]


def to_hwc(data):
    return data.reshape(-1, 3, 64, 64).transpose(0, 2, 3, 1)


def test_planes_become_hwc_and_labels_zero_based(tmp_path, fakes, read_all):
    data, _ = fakes.release_arrays(2)
    data[0, :4096] = np.arange(4096) % 256          # R plane: a row-major ramp
    data[0, 4096:8192] = 20                          # G plane
    data[0, 8192:] = 30                              # B plane
    fakes.write_pickle(tmp_path / "val_data", data, [1, 1000])
    fakes.write_pickle(tmp_path / "train_data_batch_1", data, [5, 7])
    assert convert(["imagenet64", "--source", str(tmp_path), "--output", str(tmp_path / "out"), *OPTS]) == 0
    images, labels = read_all(str(tmp_path / "out"), "validation")
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0, :, :, 0], (np.arange(4096) % 256).reshape(64, 64))
    assert (images[0, :, :, 1] == 20).all() and (images[0, :, :, 2] == 30).all()
    np.testing.assert_array_equal(labels, [0, 999])


@pytest.mark.parametrize("form", ["pickle2-bytes-keys", "pickle4", "pickle5", "npz"])
def test_release_round_trip(tmp_path, fakes, read_all, form):
    batches = {name: fakes.release_arrays(n, seed=i) for i, (name, n) in
               enumerate([("train_data_batch_1", 5), ("train_data_batch_2", 3), ("train_data_batch_10", 4),
                          ("val_data", 3)])}
    source = tmp_path / "Imagenet64"
    (source / "train").mkdir(parents=True)
    for name, (data, labels) in batches.items():
        folder = source if name == "val_data" else source / "train"
        if form == "npz":
            fakes.write_npz(folder / f"{name}.npz", data, labels)
        else:
            protocol = int(form[6])
            fakes.write_pickle(folder / name, data, labels, protocol=protocol, bytes_keys="bytes" in form,
                               extra={"mean": data.mean(0)})
    out = str(tmp_path / "out")
    assert convert(["imagenet64", "--source", str(source), "--output", out, *OPTS]) == 0
    order = ["train_data_batch_1", "train_data_batch_2", "train_data_batch_10"]  # numeric, not lexical
    images, labels = read_all(out, "train")
    np.testing.assert_array_equal(images, to_hwc(np.concatenate([batches[n][0] for n in order])))
    np.testing.assert_array_equal(labels, np.concatenate([batches[n][1] for n in order]) - 1)
    images, labels = read_all(out, "validation")
    np.testing.assert_array_equal(images, to_hwc(batches["val_data"][0]))
    np.testing.assert_array_equal(labels, np.array(batches["val_data"][1]) - 1)
    manifest = read_manifest(out)
    assert manifest["dataset"] == "imagenet64" and manifest["num_classes"] == 1000
    assert manifest["image_shape"] == [64, 64, 3]
    assert manifest["class_names"][0] == "n02119789"  # TFDS imagenet_resized order = release label 1
    counts = [shard["num_examples"] for shard in manifest["splits"]["train"]["shards"]]
    assert counts == [5, 3, 4]  # shards never span two files


def test_map_clsloc_gives_class_names(tmp_path, fakes):
    data, labels = fakes.release_arrays(2)
    fakes.write_pickle(tmp_path / "val_data", data, labels)
    with open(tmp_path / "map_clsloc.txt", "w") as f:
        f.writelines(f"n{i:08d} {i} name_{i}\n" for i in range(1, 1001))
    assert imagenet64_source(str(tmp_path)).class_names[:2] == ["n00000001", "n00000002"]


@pytest.mark.parametrize("variant", ["v5-imdb-hwcn", "v73-imdb-hwcn", "v73-flat-rows", "v73-flat-columns",
                                     "v5-images-whcn"])
def test_mat_round_trip(tmp_path, fakes, read_all, variant):
    data, labels = fakes.release_arrays(6, seed=4)
    sets = np.array([1, 2, 1, 1, 2, 1])
    hwcn = fakes.matlab_hwcn(data)
    path = str(tmp_path / "imdb.mat")
    layout = "whcn" if "whcn" in variant else "hwcn"
    if variant == "v5-imdb-hwcn":
        fakes.write_mat_v5(path, {"imdb": {"images": {"data": hwcn, "labels": np.array([labels], float),
                                                      "set": sets[None]}, "meta": {"rgbMean": np.ones(3)}}})
    elif variant == "v5-images-whcn":
        whcn = hwcn.transpose(1, 0, 2, 3)
        fakes.write_mat_v5(path, {"images": {"data": whcn, "labels": labels, "set": sets}})
    elif variant == "v73-imdb-hwcn":
        fakes.write_mat_v73(path, ["imdb", "images"], {"data": hwcn, "labels": np.array([labels], float),
                                                       "set": sets[None].astype(float)})
    elif variant == "v73-flat-rows":
        columns = {"data": data, "labels": np.array(labels)[:, None], "set": sets[:, None]}
        fakes.write_mat_v73(path, [], columns)
    else:
        fakes.write_mat_v73(path, [], {"data": data.T, "labels": np.array([labels]), "set": sets[None]})
    out = str(tmp_path / "out")
    assert convert(["imagenet64", "--source", path, "--output", out, "--mat-layout", layout, *OPTS]) == 0
    for split, code in (("train", 1), ("validation", 2)):
        images, got = read_all(out, split)
        np.testing.assert_array_equal(images, to_hwc(data[sets == code]))
        np.testing.assert_array_equal(got, np.array(labels)[sets == code] - 1)
    assert read_manifest(out)["source"]["format"] == ("mat-v7.3" if "v73" in variant else "mat-v5")


def _bad_pickle_source(tmp_path, fakes, problem):
    data, labels = fakes.release_arrays(3)
    path = tmp_path / "val_data"
    if problem == "truncated":
        fakes.write_pickle(path, data, labels)
        fakes.truncate(path)
    elif problem == "shape":
        fakes.write_pickle(path, data[:, :3072], labels)
    elif problem == "label":
        fakes.write_pickle(path, data, [1, 1001, 3])
    elif problem == "zero-label":
        fakes.write_pickle(path, data, [0, 1, 3])
    elif problem == "count":
        fakes.write_pickle(path, data, labels[:2])
    elif problem == "keys":
        with open(path, "wb") as f:
            pickle.dump({"images": data}, f)
    elif problem == "code":
        with open(path, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "when": datetime.date(2020, 1, 1)}, f)
    elif problem == "npz-truncated":
        path = tmp_path / "val_data.npz"
        fakes.write_npz(path, data, labels)
        fakes.truncate(path)
    elif problem == "npz-shape":
        path = tmp_path / "val_data.npz"
        fakes.write_npz(path, data.reshape(3, 3, 64, 64), labels)
    return str(path)


@pytest.mark.parametrize("problem, message", [
    ("truncated", "truncated or corrupt"),
    ("shape", r"shape \(3, 3072\); expected \[N, 12288\]"),
    ("label", "label 1001 at index 1 is out of range 1..1000"),
    ("zero-label", "label 0 at index 0 is out of range 1..1000"),
    ("count", "2 labels for 3 images"),
    ("keys", "expected keys 'data' and 'labels'"),
    ("code", "refers to datetime.date"),
    ("npz-truncated", "truncated or corrupt"),
    ("npz-shape", r"expected uint8 \[3, 12288\]"),
])
def test_bad_release_files_are_named(tmp_path, fakes, problem, message):
    path = _bad_pickle_source(tmp_path, fakes, problem)
    with pytest.raises(DataError, match=message) as info:
        imagenet64_source(str(tmp_path))
    assert str(info.value).startswith(path + ":") and "\n" not in str(info.value)


def test_bad_mat_files(tmp_path, fakes):
    data, labels = fakes.release_arrays(2)
    path = str(tmp_path / "imdb.mat")
    fakes.write_mat_v73(path, ["images"], {"data": fakes.matlab_hwcn(data), "labels": labels, "set": [1, 2]})
    fakes.truncate(path, 0.3)
    with pytest.raises(DataError, match="truncated or corrupt MATLAB v7.3"):
        imagenet64_source(path)
    fakes.write_mat_v5(path, {"images": {"data": fakes.matlab_hwcn(data), "labels": labels, "set": [1, 2]}})
    fakes.truncate(path, 0.5)
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        imagenet64_source(path)
    small = np.zeros((32, 32, 3, 2), np.uint8)
    fakes.write_mat_v5(path, {"images": {"data": small, "labels": labels, "set": [1, 2]}})
    with pytest.raises(DataError, match="images.data has shape 32x32x3x2"):
        imagenet64_source(path)
    hwcn = fakes.matlab_hwcn(data)
    fakes.write_mat_v5(path, {"images": {"data": hwcn, "labels": [3, 1200], "set": [1, 2]}})
    with pytest.raises(DataError, match="label 1200 at index 1 is out of range"):
        imagenet64_source(path)
    fakes.write_mat_v5(path, {"images": {"data": fakes.matlab_hwcn(data), "labels": labels}})
    with pytest.raises(DataError, match="no images.set"):
        imagenet64_source(path)


def test_manifest_records_the_source(tmp_path, fakes):
    data, labels = fakes.release_arrays(2)
    fakes.write_npz(tmp_path / "val_data.npz", data, labels)
    out = tmp_path / "out"
    assert convert(["imagenet64", "--source", str(tmp_path), "--output", str(out), *OPTS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["format"] == "chrabaszcz-npz"
    assert list(manifest["splits"]) == ["validation"]
    assert sorted(os.listdir(out)) == ["manifest.json", "validation-00000-of-00002.tfrecord",
                                       "validation-00001-of-00002.tfrecord"]
