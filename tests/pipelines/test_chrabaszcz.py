"""The augmentation of Chrabaszcz et al. (Table 3's starred rows): pad 4 + random crop, the doubled set."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from gmsop_keras.training.data import steps_per_epoch
from pipelines import make_dataset, read_manifest
from pipelines.augment import augment_batch, pad_crop, prediction_pad_crops
from pipelines.augmentations import epoch_examples

PAD = 4


def hand_image(height=6, width=5):
    """Pixel (y, x, c) = 1 + its index: every pixel distinct and non-zero, so zeros can only be padding."""
    return (1 + np.arange(height * width * 3).reshape(height, width, 3)).astype(np.uint8)


def offset_of(window, image):
    """The (dy, dx) in 0..2 PAD at which `window` is the zero-padded `image`'s sub-window; None if none."""
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
    height, width = image.shape[:2]
    found = [(dy, dx) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)
             if np.array_equal(padded[dy:dy + height, dx:dx + width], window)]
    assert len(found) <= 1
    return found[0] if found else None


def test_pad_crop_is_a_shifted_window_with_zero_padding():
    image = hand_image()
    out = pad_crop(tf.constant(np.stack([image] * 200)), tf.constant([1, 2])).numpy()
    assert out.shape == (200, 6, 5, 3) and out.dtype == np.uint8
    offsets = [offset_of(window, image) for window in out]
    assert None not in offsets
    # A hand-checked case: shifted by (dy, dx) = offset - PAD, the uncovered rows/columns are zeros.
    dy, dx = offsets[0]
    expected = np.zeros_like(image)
    src = image[max(0, dy - PAD):6 + min(0, dy - PAD), max(0, dx - PAD):5 + min(0, dx - PAD)]
    expected[max(0, PAD - dy):max(0, PAD - dy) + src.shape[0], max(0, PAD - dx):max(0, PAD - dx) + src.shape[1]] = src
    np.testing.assert_array_equal(out[0], expected)
    # Every offset 0..8 in each direction occurs (uniform over the 81 windows), and only those.
    assert {o[0] for o in offsets} == set(range(9)) and {o[1] for o in offsets} == set(range(9))
    np.testing.assert_array_equal(pad_crop(tf.constant(np.stack([image] * 200)), tf.constant([1, 2])).numpy(), out)


def test_chrabaszcz_mirrors_the_marked_copies_then_pad_crops():
    image = hand_image()
    batch = tf.constant(np.stack([image] * 40))
    mirrored = tf.constant([i % 2 == 1 for i in range(40)])
    out = augment_batch(batch, "chrabaszcz", tf.constant([5, 6]), mirrored=mirrored).numpy()
    for i, window in enumerate(out):
        source = image[:, ::-1] if i % 2 else image
        assert offset_of(window, source) is not None, i
    with pytest.raises(ValueError, match="pass `mirrored`"):
        augment_batch(batch, "chrabaszcz", tf.constant([5, 6]))


def test_an_epoch_holds_every_image_and_its_mirror_once(synthetic_dir, read_all):
    originals, labels = read_all(synthetic_dir, "train")
    windows = collections.defaultdict(set)  # window bytes -> {(index, mirrored)}
    for i, image in enumerate(originals):
        for m, source in enumerate((image, image[:, ::-1])):
            padded = np.pad(source, ((PAD, PAD), (PAD, PAD), (0, 0)))
            for dy in range(2 * PAD + 1):
                for dx in range(2 * PAD + 1):
                    windows[padded[dy:dy + 16, dx:dx + 16].tobytes()].add((i, m))
    ds = make_dataset(synthetic_dir, "train", 16, training=True, augment="chrabaszcz", seed=4,
                      drop_remainder=False)
    seen, seen_labels = [], []
    for images, batch_labels in ds:
        for image, label in zip(images.numpy(), batch_labels.numpy()):
            candidates = windows[image.tobytes()]
            assert len(candidates) == 1, "each output is one image's (or one mirror's) shifted window"
            seen.append(next(iter(candidates)))
            seen_labels.append(label)
    assert len(originals) == 96 and len(seen) == 192 == epoch_examples(96, "chrabaszcz")
    assert sorted(seen) == [(i, m) for i in range(96) for m in (0, 1)]
    assert [labels[i] for i, _ in seen] == seen_labels
    # Shuffled: the copies of an image are not neighbours, and offsets vary.
    assert sum(abs(a - b) <= 1 for a, b in zip([s[0] for s in seen[::2]], [s[0] for s in seen[1::2]])) < 20


def test_epoch_length_counts_the_doubled_set(synthetic_dir):
    manifest = read_manifest(synthetic_dir)
    config = {"steps_per_epoch": None, "batch_size": 16}
    assert steps_per_epoch({**config, "augment": "chrabaszcz"}, manifest, synthetic_dir) == 12
    for augment in (None, "auto", "pad_crop_flip", "flip"):
        assert steps_per_epoch({**config, "augment": augment}, manifest, synthetic_dir) == 6


def test_test_time_crops_are_deterministic_by_seed():
    batch = tf.constant(np.stack([hand_image()] * 50))
    first = [c.numpy() for c in prediction_pad_crops(batch, seed=3, batch_index=2, crops=2)]
    again = [c.numpy() for c in prediction_pad_crops(batch, seed=3, batch_index=2, crops=2)]
    other = [c.numpy() for c in prediction_pad_crops(batch, seed=4, batch_index=2, crops=2)]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], other[0])
    assert all(offset_of(w, hand_image()) is not None for w in first[1])
