"""The synthetic set: deterministic, balanced, and only second-order statistics tell the classes apart."""

import numpy as np
import pytest

from pipelines import DataError, ensure_synthetic, read_manifest, synthetic_source
from pipelines.synthetic import make_design


def test_deterministic_and_independent_of_read_ranges():
    options = dict(num_classes=3, train_per_class=200, val_per_class=5, image_size=12)
    split = synthetic_source(**options).splits["train"]
    whole = split.read(0, 600)
    pieces = [split.read(a, b) for a, b in [(0, 7), (7, 300), (300, 600)]]
    np.testing.assert_array_equal(whole.images, np.concatenate([p.images for p in pieces]))
    np.testing.assert_array_equal(whole.labels, np.concatenate([p.labels for p in pieces]))
    np.testing.assert_array_equal(whole.images, split.read(0, 600).images)
    assert np.bincount(whole.labels).tolist() == [200, 200, 200]
    other = synthetic_source(**options, seed=1)
    assert not np.array_equal(other.splits["train"].read(0, 10).images, whole.images[:10])
    val = synthetic_source(**options).splits["validation"]
    assert not np.array_equal(val.read(0, 10).images, whole.images[:10])


@pytest.mark.parametrize("num_classes", [2, 3, 10, 11, 30, 63])
def test_classes_are_disjoint_perfect_matchings_of_the_types(num_classes):
    design = make_design(num_classes, seed=0)
    num_types = len(design.types)
    assert num_types % 2 == 0 and num_types - 1 >= num_classes
    assert len({tuple(t) for t in design.types}) == num_types  # distinct (scale, colour) pairs
    for modes in design.modes:  # every type in exactly one mode of every class: same marginals
        assert sorted(modes.ravel().tolist()) == list(range(num_types))
    pairs = [frozenset(pair) for modes in design.modes for pair in modes.tolist()]
    assert len(set(pairs)) == len(pairs)  # a pair of types identifies its class


def test_invalid_options():
    with pytest.raises(ValueError, match="`num_classes` must be in 2..63"):
        synthetic_source(num_classes=64)
    with pytest.raises(ValueError, match="`image_size` must be >= 8"):
        synthetic_source(image_size=4)


def _presences(images, design):
    """Log energy of each pattern type (its scale band, projected on its colour): what global average
    pooling of ideal type detectors would give."""
    x = images.astype(np.float32) / 255 - 0.5
    spectrum = np.fft.fft2(x, axes=(1, 2))
    freq = np.fft.fftfreq(x.shape[1])
    radius = np.hypot(freq[:, None], freq[None, :])
    band = np.abs(np.log(np.maximum(radius, 1e-6))[..., None] - np.log(1 / design.wavelengths)).argmin(-1)
    valid = (radius > 0.8 / design.wavelengths[-1]) & (radius < 1.2 / design.wavelengths[0])
    energy = [np.abs(spectrum[:, (band == scale) & valid] @ design.colours[colour]) ** 2
              for scale, colour in design.types]
    energy = [e.mean(1) for e in energy]
    return np.log(np.stack(energy, 1) + 1e-3)


def _products(presences):
    """Second-order: products of two type presences (co-occurrence anywhere in the image)."""
    upper = np.triu_indices(presences.shape[1], 1)
    return (presences[:, :, None] * presences[:, None, :])[:, upper[0], upper[1]]


def _ridge_accuracy(train_x, train_y, test_x, test_y, classes, *more_tests):
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    a = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
    weights = np.linalg.solve(a.T @ a + 1e-3 * len(a) * np.eye(a.shape[1]), a.T @ np.eye(classes)[train_y])
    accuracies = []
    for x in (test_x,) + more_tests:
        b = np.c_[(x - mean) / std, np.ones(len(x))]
        accuracies.append(float(((b @ weights).argmax(1) == test_y).mean()))
    return accuracies if more_tests else accuracies[0]


def test_only_second_order_statistics_separate_the_classes():
    source = synthetic_source(num_classes=10, train_per_class=60, val_per_class=30, image_size=32)
    design = make_design(10)
    train, val = source.splits["train"].read(0, 600), source.splits["validation"].read(0, 300)
    for k in range(10):  # same per-channel means in every class
        means = train.images[train.labels == k].astype(np.float32).mean((0, 1, 2)) / 255
        np.testing.assert_allclose(means, 0.5, atol=0.01)
    first_train, first_val = _presences(train.images, design), _presences(val.images, design)
    first = _ridge_accuracy(first_train, train.labels, first_val, val.labels, 10)
    mirrored_val = _products(_presences(val.images[:, :, ::-1], design))
    second, mirrored = _ridge_accuracy(_products(first_train), train.labels, _products(first_val), val.labels,
                                       10, mirrored_val)
    assert first < 0.3, f"linear on pooled type presences should be near chance (0.1), got {first}"
    assert second > 0.95, f"co-occurrence of two types should identify the class, got {second}"
    assert mirrored > 0.95, f"a mirrored image must keep its class (flip augmentation), got {mirrored}"


def test_ensure_synthetic_reuses_and_refuses(tmp_path, tiny):
    out = str(tmp_path / "s")
    assert ensure_synthetic(out, **tiny, workers=1) == out
    created = read_manifest(out)["created"]
    assert ensure_synthetic(out, **tiny) == out and read_manifest(out)["created"] == created
    with pytest.raises(DataError, match="holds another dataset"):
        ensure_synthetic(out, **{**tiny, "seed": 4})
    ensure_synthetic(out, **{**tiny, "seed": 4}, overwrite=True)
    assert read_manifest(out)["source"]["seed"] == 4
