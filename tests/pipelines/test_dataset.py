"""make_dataset: values through the whole pipeline, epochs, augmentation, distribution, options."""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

from pipelines import DataError, ensure_synthetic, make_dataset, synthetic_source


def arrays(tiny, split):
    """A split of the tiny synthetic set straight from the generator: (images, labels)."""
    examples = synthetic_source(**tiny).splits[split]
    ex = examples.read(0, examples.num_examples)
    return ex.images, ex.labels


def key(image):
    return image.tobytes()


def collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_eval_is_exact_and_in_file_order(synthetic_dir, tiny, read_all):
    for split in ("validation", "train"):
        want_images, want_labels = arrays(tiny, split)
        images, labels = read_all(synthetic_dir, split)
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


def test_eval_batches_keep_the_remainder(synthetic_dir):
    ds = make_dataset(synthetic_dir, "validation", 10, training=False)
    assert [int(y.shape[0]) for _, y in ds] == [10, 10, 4]
    assert ds.element_spec[0].shape.as_list() == [None, 16, 16, 3]
    options = ds.options()
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE


def test_training_epochs_cover_everything_and_differ(synthetic_dir, tiny):
    want_images, want_labels = arrays(tiny, "train")
    by_key = {key(im): int(lab) for im, lab in zip(want_images, want_labels)}
    want = collections.Counter(map(key, want_images))
    ds = make_dataset(synthetic_dir, "train", 16, training=True, augment="none", seed=1)
    assert ds.element_spec[0].shape.as_list() == [16, 16, 16, 3]  # static batch with drop_remainder
    epochs = [collect(ds) for _ in range(2)]
    for images, labels in epochs:
        assert collections.Counter(map(key, images)) == want  # each exactly once
        assert all(by_key[key(im)] == lab for im, lab in zip(images, labels))
    orders = [[key(im) for im in images] for images, _ in epochs]
    assert orders[0] != orders[1]
    again = collect(make_dataset(synthetic_dir, "train", 16, training=True, augment="none", seed=1))
    np.testing.assert_array_equal(again[0], epochs[0][0])  # the seed makes it reproducible
    other = collect(make_dataset(synthetic_dir, "train", 16, training=True, augment="none", seed=2))
    assert [key(im) for im in other[0]] != orders[0]


def test_drop_remainder_and_repeat(synthetic_dir):
    ds = make_dataset(synthetic_dir, "validation", 10, training=True, augment="none")
    assert sum(int(y.shape[0]) for _, y in ds) == 20
    ds = make_dataset(synthetic_dir, "validation", 10, training=True, repeat=True, drop_remainder=False)
    assert sum(int(y.shape[0]) for _, y in ds.take(7)) == 70


def test_flip_is_an_exact_mirror(synthetic_dir, tiny):
    want_images, want_labels = arrays(tiny, "train")
    plain = {key(im): lab for im, lab in zip(want_images, want_labels)}
    mirrored = {key(im[:, ::-1]): lab for im, lab in zip(want_images, want_labels)}
    images, labels = collect(make_dataset(synthetic_dir, "train", 16, training=True, augment="flip", seed=0))
    kinds = []
    for image, label in zip(images, labels):
        if key(image) in plain:
            assert plain[key(image)] == label
            kinds.append("plain")
        else:
            assert mirrored[key(image)] == label, "output is neither a source image nor its mirror"
            kinds.append("mirror")
    assert 20 < kinds.count("mirror") < 76  # about half of 96


def test_flip_with_crop_size_centre_crops_first(synthetic_dir, tiny):
    want_images, _ = arrays(tiny, "train")
    centre = want_images[:, 3:13, 3:13]
    allowed = {key(im) for im in centre} | {key(im[:, ::-1]) for im in centre}
    images, _ = collect(make_dataset(synthetic_dir, "train", 16, training=True, augment="flip", crop_size=10))
    assert images.shape == (96, 10, 10, 3) and all(key(im) in allowed for im in images)


def windows(images, size, pad=0):
    """{bytes of every size x size window of each image and of its mirror: (index, top, left, mirrored)}."""
    table = {}
    padded = np.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    for index, image in enumerate(padded):
        for mirrored, im in ((False, image), (True, image[:, ::-1])):
            for top in range(im.shape[0] - size + 1):
                for left in range(im.shape[1] - size + 1):
                    table[key(im[top:top + size, left:left + size])] = (index, top, left, mirrored)
    return table


@pytest.mark.parametrize("augment, size, pad", [("crop_flip", 10, 0), ("pad_crop_flip", 16, 4)])
def test_crops_are_sub_windows(synthetic_dir, tiny, augment, size, pad):
    want_images, want_labels = arrays(tiny, "train")
    table = windows(want_images, size, pad)
    crop = 10 if augment == "crop_flip" else None
    images, labels = collect(make_dataset(synthetic_dir, "train", 16, training=True, augment=augment,
                                          crop_size=crop, padding=pad, seed=5))
    assert images.shape[1:] == (size, size, 3)
    found = [table.get(key(im)) for im in images]
    assert None not in found, "an output is not a window of a (mirrored) source image"
    assert all(want_labels[index] == label for (index, *_), label in zip(found, labels))
    assert sorted(f[0] for f in found) == list(range(96))  # every image once
    assert len({(top, left) for _, top, left, _ in found}) > 10 and len({f[3] for f in found}) == 2


def test_places365_crops_96_then_centre_crops(tmp_path):
    data_dir = ensure_synthetic(str(tmp_path / "p"), num_classes=2, train_per_class=3, val_per_class=2,
                                image_size=100, min_shards=1)
    path = os.path.join(data_dir, "manifest.json")
    manifest = json.load(open(path))
    manifest["dataset"] = "places365"  # the augmentation is picked from the manifest's dataset
    json.dump(manifest, open(path, "w"))
    images, _ = collect(make_dataset(data_dir, "train", 2, training=True))
    assert images.shape == (6, 96, 96, 3)
    val = synthetic_source(2, 3, 2, 100).splits["validation"].read(0, 4).images
    images, _ = collect(make_dataset(data_dir, "validation", 3, training=False))
    np.testing.assert_array_equal(images, val[:, 2:98, 2:98])
    images, _ = collect(make_dataset(data_dir, "validation", 3, training=False, crop_size=None))
    np.testing.assert_array_equal(images, val)


def test_cache_keeps_epochs_complete(synthetic_dir, tiny):
    want = collections.Counter(map(key, arrays(tiny, "train")[0]))
    ds = make_dataset(synthetic_dir, "train", 12, training=True, augment="none", cache=True, seed=3)
    first, second = collect(ds)[0], collect(ds)[0]
    assert collections.Counter(map(key, first)) == want == collections.Counter(map(key, second))
    assert [key(i) for i in first] != [key(i) for i in second]


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "`batch_size` must be a positive int"),
    (dict(augment="rotate"), "`augment` must be 'auto' or one of"),
    (dict(augment="crop_flip"), "needs a `crop_size`"),
    (dict(crop_size=17), "`crop_size` must be an int in 1..16"),
])
def test_invalid_arguments(synthetic_dir, kwargs, message):
    kwargs = {"batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_dataset(synthetic_dir, "train", training=True, **kwargs)


def test_two_workers_auto_shard_by_file(synthetic_dir, tiny):
    """The rewrite MultiWorkerMirroredStrategy applies: each example goes to exactly one worker."""
    want = collections.Counter(map(key, arrays(tiny, "train")[0]))
    for training in (False, True):
        seen = []
        for worker in range(2):
            ds = make_dataset(synthetic_dir, "train", 8, training=training, augment="none",
                              drop_remainder=False)
            seen.append(collections.Counter(map(key, collect(_AutoShardDataset(ds, 2, worker, 2))[0])))
        assert not set(seen[0]) & set(seen[1])
        assert seen[0] + seen[1] == want
        assert sum(seen[0].values()) == 48  # two of the four shard files each


def test_input_context_shards_by_file(synthetic_dir, tiny):
    want = collections.Counter(map(key, arrays(tiny, "validation")[0]))
    parts = [collections.Counter(map(key, collect(make_dataset(
        synthetic_dir, "validation", 5, training=False,
        input_context=tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)))[0]))
        for i in range(2)]
    assert not set(parts[0]) & set(parts[1]) and parts[0] + parts[1] == want
    with pytest.raises(DataError, match="fewer shards than the 5 input pipelines"):
        make_dataset(synthetic_dir, "validation", 5, training=False,
                     input_context=tf.distribute.InputContext(num_input_pipelines=5, input_pipeline_id=4))


def test_mirrored_strategy_reads_everything_once(synthetic_dir, tiny):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    ds = make_dataset(synthetic_dir, "validation", 8, training=False)
    labels = []
    for _, y in strategy.experimental_distribute_dataset(ds):
        labels += [int(v) for part in strategy.experimental_local_results(y) for v in part]
    np.testing.assert_array_equal(labels, arrays(tiny, "validation")[1])
