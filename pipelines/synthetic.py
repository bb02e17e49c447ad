"""A built-in, learnable, multi-modal image classification set where second-order statistics matter.

`python -m pipelines.convert synthetic --output DIR` (or `ensure_synthetic(DIR)`) writes it as
TFRecords like any other dataset, so a new user can train with no download.

How an image is made. A *pattern type* is a grating of one scale (wavelength 3, 7 or 16 pixels, more
scales for many classes) in one colour (unit RGB vectors: a common grey part plus chroma spread around
the colour circle). With T = 12 types for 10 classes (T even, T - 1 >= num_classes), the classes are
perfect matchings of the types, from a round-robin 1-factorisation of the complete graph K_T: class k
is a set of T / 2 disjoint *pairs* of types, and every pair belongs to exactly one class. An image of
class k shows one of its pairs (its *mode*, 6 per class for 10 classes) as two textured blobs at
opposite sides of the image centre:

    image(p) = 0.5 + 0.45 sum_{l = a, b} a_l env_l(p) cos(2 pi <p, u(theta_l)> / lambda_l + phi_l) c_l
               + white noise (sigma 0.06 per channel), scaled to 0..255,

with random amplitude a_l, orientation theta_l, phase phi_l, wavelength lambda_l (within 8% of its
scale) and a Gaussian envelope env_l (the two blobs are 0.36 to 0.6 image widths apart). Properties:

- every type appears in exactly one mode of every class, so per-channel means (0.5) and variances, and
  the presence of each pattern type, have the same distribution in every class: the class cannot be
  read from first-order statistics, nor linearly from globally average-pooled type detectors;
- the label is the *co-occurrence* of two types anywhere in the image: a product of two type
  presences, which covariance (second-order) pooling exposes to a linear classifier;
- each class is a mixture of T / 2 distinct modes;
- labels survive mirroring, cropping and rotation (scale and colour are invariant), so flip and crop
  augmentations are label-preserving (a binding of colours to *orientations* would not be).

Everything is drawn from numpy generators seeded by (seed, split, block), so a split is the same
whatever the shard size, worker count or resume history. Generation is vectorised over blocks of 256
images (about 3k images/s at 64x64 on one core).
"""

import dataclasses
import math

import numpy as np

from pipelines.errors import DataError
from pipelines.manifest import has_manifest, read_manifest
from pipelines.source import Examples, Source, Split

MAX_CLASSES = 63
# Recorded in the manifest; bump it when a change to the generator changes the images, so that
# `ensure_synthetic` does not reuse a set made by an older generator.
GENERATOR_VERSION = 1
_BLOCK = 256
_CONTRAST = 0.45
_SPLIT_IDS = {"train": 1, "validation": 2}


@dataclasses.dataclass(frozen=True)
class Design:
    """The classes of a synthetic set.

    Attributes:
        wavelengths: [S] grating wavelength of each scale, pixels.
        colours: [C, 3] unit RGB colour of each colour index.
        types: [T, 2] (scale, colour) of each pattern type.
        modes: [num_classes, T / 2, 2] the pairs of types of each class.
    """

    wavelengths: np.ndarray
    colours: np.ndarray
    types: np.ndarray
    modes: np.ndarray


def synthetic_source(num_classes=10, train_per_class=500, val_per_class=100, image_size=64, seed=0):
    """The synthetic set as a `Source` (see the module docstring for how images are made).

    Args:
        num_classes: 2 to 63.
        train_per_class: training images per class.
        val_per_class: validation images per class.
        image_size: height and width (at least 8).
        seed: everything is a deterministic function of the seed.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"`num_classes` must be in 2..{MAX_CLASSES}. Received: num_classes={num_classes}")
    if image_size < 8:
        raise ValueError(f"`image_size` must be >= 8. Received: image_size={image_size}")
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError("`train_per_class` and `val_per_class` must be >= 1. "
                         f"Received: train_per_class={train_per_class}, val_per_class={val_per_class}")
    design = make_design(num_classes, seed)
    splits = {}
    for name, per_class in (("train", train_per_class), ("validation", val_per_class)):
        count = num_classes * per_class
        splits[name] = Split(num_examples=count,
                             read=_reader(design, count, image_size, seed, _SPLIT_IDS[name]))
    description = {"format": "synthetic", "generator": GENERATOR_VERSION, "num_classes": num_classes,
                   "train_per_class": train_per_class, "val_per_class": val_per_class,
                   "image_size": image_size, "seed": seed}
    return Source(dataset="synthetic", image_shape=(image_size, image_size, 3), num_classes=num_classes,
                  splits=splits, class_names=[f"matching_{k:02d}" for k in range(num_classes)],
                  description=description)


def ensure_synthetic(output_dir, *, num_classes=10, train_per_class=500, val_per_class=100, image_size=64,
                     seed=0, shard_size_mb=100.0, min_shards=4, workers=None, progress=False,
                     overwrite=False):
    """Converts the synthetic set into `output_dir` unless it is already there; returns `output_dir`.

    A finished synthetic dataset with the same options is reused as is; an interrupted one is resumed.

    Raises:
        DataError: `output_dir` holds another finished dataset (pass `overwrite=True` to replace it).
    """
    from pipelines.writer import write_dataset  # noqa: PLC0415 (writer imports TensorFlow)

    source = synthetic_source(num_classes, train_per_class, val_per_class, image_size, seed)
    if has_manifest(output_dir) and not overwrite:
        manifest = read_manifest(output_dir)
        if manifest["dataset"] == "synthetic" and manifest.get("source") == source.description:
            return output_dir
        raise DataError(f"{output_dir}: holds another dataset ({manifest['dataset']}, "
                        f"{manifest.get('source')}); choose another folder or pass overwrite=True")
    write_dataset(source, output_dir, shard_size_mb=shard_size_mb, min_shards=min_shards, workers=workers,
                  overwrite=overwrite, progress=progress)
    return output_dir


def make_design(num_classes, seed=0):
    """Pattern types and the classes' pairs of types (a 1-factorisation of K_T, T even)."""
    num_types = num_classes + 1 if num_classes % 2 else num_classes + 2
    num_scales = max(3, math.ceil(num_types / 8))
    num_colours = math.ceil(num_types / num_scales)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    grid = np.array([(s, c) for s in range(num_scales) for c in range(num_colours)])
    types = grid[np.sort(rng.permutation(len(grid))[:num_types])]
    # Round-robin tournament: vertex T - 1 stays, the others rotate; round r is a perfect matching.
    last = num_types - 1
    rounds = [[(last, r)] + [((r + k) % last, (r - k) % last) for k in range(1, num_types // 2)]
              for r in range(last)]
    chosen = rng.permutation(last)[:num_classes]
    wavelengths = 3.0 * (16.0 / 3.0) ** (np.arange(num_scales) / (num_scales - 1))
    return Design(wavelengths=wavelengths, colours=_colours(num_colours), types=types,
                  modes=np.array([rounds[r] for r in chosen]))


def generate(design, labels, image_size, rng):
    """Images for the given labels: uint8 [len(labels), image_size, image_size, 3]."""
    n = len(labels)
    pair = design.modes[labels, rng.integers(0, design.modes.shape[1], n)]      # [n, 2] the mode
    scale, colour = design.types[pair, 0], design.types[pair, 1]                # [n, 2] each
    wavelength = design.wavelengths[scale] * np.exp(rng.uniform(-0.08, 0.08, (n, 2)))
    freq = (1 / wavelength).astype(np.float32)[..., None, None]
    theta = rng.uniform(0, np.pi, (n, 2)).astype(np.float32)[..., None, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 2)).astype(np.float32)[..., None, None]
    grid = np.arange(image_size, dtype=np.float32)
    y, x = grid[None, None, :, None], grid[None, None, None, :]
    grating = np.cos(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) + phase)
    # Two blobs on opposite sides of the centre, at distance 0.18 to 0.3 image widths from it.
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = image_size * rng.uniform(0.18, 0.3, n)
    offset = np.stack([radius * np.sin(angle), radius * np.cos(angle)], -1)[:, None, :]
    centre = ((image_size - 1) / 2 + offset * np.array([[1], [-1]])).astype(np.float32)  # [n, blob, (y, x)]
    sigma = image_size * rng.uniform(0.14, 0.2, (n, 2)).astype(np.float32)[..., None, None]
    # Separable Gaussian envelope: exp(-(dy^2 + dx^2) / 2 sigma^2) = exp(-dy^2 / ..) * exp(-dx^2 / ..).
    env_y = np.exp(-((y - centre[..., 0, None, None]) ** 2) / (2 * sigma ** 2))
    env_x = np.exp(-((x - centre[..., 1, None, None]) ** 2) / (2 * sigma ** 2))
    amplitude = rng.uniform(0.7, 1.0, (n, 2)).astype(np.float32)[..., None, None]
    layers = amplitude * env_y * env_x * grating                                # [n, 2, S, S]
    rgb = (_CONTRAST * design.colours[colour]).astype(np.float32)[:, :, None, None, :]
    image = 0.5 + layers[:, 0, ..., None] * rgb[:, 0] + layers[:, 1, ..., None] * rgb[:, 1]
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(0.06)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _reader(design, num_examples, image_size, seed, split_id):
    labels = np.random.default_rng(np.random.SeedSequence([seed, split_id, 0])).permutation(
        np.arange(num_examples) % len(design.modes))

    def read(start, stop):
        images = []
        for block in range(start // _BLOCK, math.ceil(stop / _BLOCK)):
            lo, hi = block * _BLOCK, min((block + 1) * _BLOCK, num_examples)
            rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, 1, block]))
            block_images = generate(design, labels[lo:hi], image_size, rng)
            images.append(block_images[max(start - lo, 0):stop - lo])
        return Examples(np.concatenate(images), labels[start:stop].astype(np.int64))

    return read


def _colours(count):
    """`count` unit RGB vectors: a common grey part plus chroma at angles around the colour circle."""
    grey = np.ones(3) / np.sqrt(3)
    u = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    v = np.array([1.0, 1.0, -2.0]) / np.sqrt(6)
    angles = 2 * np.pi * np.arange(count) / count
    return 0.6 * grey + 0.8 * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
