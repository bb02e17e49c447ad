"""The TFRecord format of a converted dataset: feature keys, `tf.train.Example` encoding, shard writing.

Every record is one `tf.train.Example` holding a fixed-size image as raw uint8 bytes in H x W x 3
(row-major, RGB) order, its shape, and an int64 class label in [0, num_classes):

| key              | type  | value                          |
| ---------------- | ----- | ------------------------------ |
| `image/raw`      | bytes | H * W * 3 uint8 bytes (HWC)    |
| `image/height`   | int64 | H                              |
| `image/width`    | int64 | W                              |
| `image/channels` | int64 | 3                              |
| `label`          | int64 | class index, 0-based           |

Raw bytes (not PNG/JPEG) make the input pipeline a `decode_raw`, which is what lets a 2-core host feed a
GPU; at 64x64 a record is 12.4 kB. On a URL shards are written under their final names (`write_shard`),
with no rename, which object stores do not have; on a local disk aside and renamed. Either way a
shard counts only once the conversion's progress record and then the manifest list it with its
size (`pipelines.writer`), so a shard cut short is never taken for a whole one.
"""

import os

import numpy as np
import tensorflow as tf

from pipelines import storage
from pipelines.manifest import file_sha256
from pipelines.write_aside import errno_of

IMAGE_KEY = "image/raw"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
LABEL_KEY = "label"

# Parsing spec for `tf.io.parse_example`; all features are present in every record.
FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
    WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
    CHANNELS_KEY: tf.io.FixedLenFeature([], tf.int64),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}

SHARD_SUFFIX = ".tfrecord"
TEMP_SUFFIX = ".tmp"
# Per-record overhead of the Example proto and the TFRecord framing, for planning shard sizes.
RECORD_OVERHEAD_BYTES = 128


def shard_name(split, index, num_shards):
    """`train-00003-of-00016.tfrecord`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(image, label):
    """Serializes one uint8 image [H, W, 3] and its 0-based label as a `tf.train.Example`."""
    height, width, channels = image.shape
    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        HEIGHT_KEY: _int64(height),
        WIDTH_KEY: _int64(width),
        CHANNELS_KEY: _int64(channels),
        LABEL_KEY: _int64(label),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode_example(serialized):
    """Parses one serialized record back to (uint8 image [H, W, C], int label); for tests and tools."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    shape = [feature[key].int64_list.value[0] for key in (HEIGHT_KEY, WIDTH_KEY, CHANNELS_KEY)]
    image = np.frombuffer(feature[IMAGE_KEY].bytes_list.value[0], np.uint8).reshape(shape)
    return image, int(feature[LABEL_KEY].int64_list.value[0])


def write_shard(path, images, labels):
    """Writes one shard under its final name and returns its manifest entry.

    The entry (with the size) is what makes the shard count: an interrupted write leaves a file
    that no progress record or manifest lists, which a resumed conversion deletes. On a local disk
    the shard is written aside and renamed (`storage.written_aside`); a failed write deletes its
    partial file at once and raises an `OSError` naming `path` (`No space left on device`, ...).

    Args:
        path: final file name of the shard.
        images: uint8 array [N, H, W, 3].
        labels: integer array [N], 0-based.

    Returns:
        `{"file", "num_examples", "bytes", "sha256"}` of the written shard.
    """
    try:
        with storage.written_aside(path) as temp:
            try:
                with tf.io.TFRecordWriter(temp) as writer:
                    for image, label in zip(images, labels):
                        writer.write(encode_example(image, label))
            except tf.errors.OpError as error:  # a full disk: ResourceExhaustedError, no errno
                code = errno_of(error.message)
                raise OSError(code, os.strerror(code), path) from None
        checksum = file_sha256(path)
    except BaseException:
        storage.remove(path, missing_ok=True)  # on a URL, the part written in place
        raise
    return {
        "file": storage.basename(path),
        "num_examples": int(len(labels)),
        "bytes": storage.size(path),
        "sha256": checksum,
    }
