"""`manifest.json`: what a converted dataset folder holds, written last, checked before reading.

A manifest looks like this (values from a converted ImageNet-64):

    {
      "format_version": 1,
      "dataset": "imagenet64",
      "image_shape": [64, 64, 3],
      "num_classes": 1000,
      "class_names": ["n01440764", ...] or null,
      "splits": {
        "train": {"num_examples": 1281167,
                  "shards": [{"file": "train-00000-of-00160.tfrecord", "num_examples": 8008,
                              "bytes": 99113204, "sha256": "..."}, ...]},
        "validation": {...}
      },
      "pixel_mean": [122.1, 116.3, 103.4],   # per channel (RGB, [0, 255]) over the training
      "pixel_std": [70.6, 68.6, 71.7],       # split's pixels; absent in older manifests
      "source": {"format": "pickle", "path": "/data/Imagenet64", ...},
      "skipped": [],
      "created": "2026-01-01T12:00:00+00:00"
    }

Its presence means the conversion finished: it is written last, after every shard it lists is in
place, and a shard counts only with the size the manifest records for it. No step relies on a
rename (object stores have none): shards are written under their final names, and the manifest
is one small write (on a local disk written aside and renamed, on a URL one object write, which
object stores make visible whole or not at all; `pipelines.storage`).
"""

import hashlib
import json

from pipelines import storage
from pipelines.errors import DataError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("dataset", "image_shape", "num_classes", "class_names", "splits")


def file_sha256(path, block_size=1 << 22):
    digest = hashlib.sha256()
    with storage.open_file(path, "rb") as f:
        for block in iter(lambda: f.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(data_dir):
    return storage.join(data_dir, MANIFEST_NAME)


def has_manifest(data_dir):
    return storage.isfile(manifest_path(data_dir))


def write_manifest(data_dir, manifest):
    """Writes `manifest.json` whole (`storage.write_text`): a reader sees all of it or none."""
    storage.write_text(manifest_path(data_dir), json.dumps(manifest, indent=1) + "\n")


def read_manifest(data_dir):
    """Reads and sanity-checks the manifest of a converted dataset folder.

    Args:
        data_dir: the `--output` folder of `python -m pipelines.convert`.

    Returns:
        The manifest as a dict, with at least `dataset`, `image_shape` ([H, W, 3]), `num_classes`,
        `class_names` (list or None) and `splits` ({name: {"num_examples", "shards": [...]}}).

    Raises:
        DataError: no manifest (conversion never finished), or one that cannot be read.
    """
    path = manifest_path(data_dir)
    if not storage.isfile(path):
        hint = "the conversion did not finish; re-run it to resume" if storage.isdir(data_dir) else (
            "the folder does not exist")
        raise DataError(f"{path}: no manifest ({hint}); convert a dataset with `python -m pipelines.convert`")
    try:
        manifest = json.loads(storage.read_text(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e}); re-run the conversion with "
                        "--overwrite") from None
    missing = [key for key in _REQUIRED_KEYS if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise DataError(f"{path}: not a dataset manifest (missing {', '.join(missing)})")
    shape = manifest["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and shape[2] == 3 and min(shape) > 0):
        raise DataError(f"{path}: image_shape must be [H, W, 3]; found {shape}")
    return manifest


def verify_manifest(data_dir, splits=None, checksums=False, manifest=None):
    """Checks that the shard files on disk are the ones the manifest describes.

    Cheap checks always (every shard present, with the recorded size; record counts add up to the
    split's `num_examples`); `checksums=True` also re-hashes every shard (reads all the data).

    Args:
        data_dir: dataset folder.
        splits: split names to check (default: all); a name the manifest lacks is an error.
        checksums: also compare SHA-256 checksums.
        manifest: an already-read manifest (default: read it).

    Returns:
        The manifest.

    Raises:
        DataError: naming the first missing split, missing or mismatched shard.
    """
    manifest = manifest or read_manifest(data_dir)
    available = sorted(manifest["splits"])
    for split in splits or available:
        if split not in manifest["splits"]:
            raise DataError(
                f"{manifest_path(data_dir)}: no split '{split}' (the dataset has {', '.join(available)})")
        entry = manifest["splits"][split]
        shards = entry.get("shards") or []
        if not shards:
            raise DataError(f"{manifest_path(data_dir)}: split '{split}' lists no shards")
        counted = sum(shard["num_examples"] for shard in shards)
        if counted != entry["num_examples"]:
            raise DataError(f"{manifest_path(data_dir)}: split '{split}' has num_examples "
                            f"{entry['num_examples']} but its shards hold {counted}; re-run the conversion")
        for shard in shards:
            _verify_shard(data_dir, shard, checksums)
    return manifest


def _verify_shard(data_dir, shard, checksums):
    path = storage.join(data_dir, shard["file"])
    if not storage.isfile(path):
        raise DataError(f"{path}: shard listed in {MANIFEST_NAME} is missing; copy the whole folder "
                        "or re-run the conversion with --overwrite")
    size = storage.size(path)
    if size != shard["bytes"]:
        raise DataError(f"{path}: {size} bytes, but {MANIFEST_NAME} says {shard['bytes']}; the shard is "
                        "truncated or was replaced, re-run the conversion with --overwrite")
    if checksums and file_sha256(path) != shard["sha256"]:
        raise DataError(f"{path}: SHA-256 differs from {MANIFEST_NAME}; the shard is corrupt, re-run the "
                        "conversion with --overwrite")


def shard_paths(data_dir, manifest, split):
    """Full paths of a split's shards, in order."""
    return [storage.join(data_dir, shard["file"]) for shard in manifest["splits"][split]["shards"]]
