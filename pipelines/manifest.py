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
import re

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
    if not (isinstance(shape, list) and len(shape) == 3 and all(_count(n) for n in shape) and shape[2] == 3):
        raise DataError(f"{path}: image_shape must be [H, W, 3]; found {shape}")
    problem = _structure_problem(manifest)
    if problem:
        raise DataError(f"{path}: {problem}; the manifest was edited or damaged: restore it, or re-run the "
                        "conversion with --overwrite")
    return manifest


def _structure_problem(manifest):
    """What is wrong with the classes and splits of a parsed manifest, or None."""
    classes, names = manifest["num_classes"], manifest["class_names"]
    if not _count(classes):
        return f"num_classes must be a positive integer, found {classes!r}"
    if names is not None and not (isinstance(names, list) and len(names) == classes):
        return f"num_classes is {classes} but class_names holds {len(names) if isinstance(names, list) else names!r}"
    if not isinstance(manifest["splits"], dict):
        return "splits must map split names to their shards"
    for name, split in manifest["splits"].items():
        shards = split.get("shards") if isinstance(split, dict) else None
        if not (isinstance(shards, list) and _count(split.get("num_examples"), 0) and all(
                isinstance(shard, dict) and isinstance(shard.get("file"), str)
                and _count(shard.get("num_examples"), 0) and _count(shard.get("bytes"), 0) for shard in shards)):
            return f"split '{name}' must give num_examples and shards of file, num_examples and bytes"
    return None


def _count(value, low=1):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


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


# The message of the check `make_dataset` puts on every batch's labels, then the largest label.
LABEL_OUT_OF_RANGE = "a record has a label outside the classes of manifest.json"


def input_error(error, data_dir, manifest=None):
    """The `DataError` that an error raised while reading a `make_dataset` input stands for (its
    labels beyond the manifest's `num_classes`: a manifest edited, or of other shards), else None."""
    text = str(getattr(error, "message", error))
    if LABEL_OUT_OF_RANGE not in text:
        return None
    manifest = manifest or read_manifest(data_dir)
    found = re.search(re.escape(LABEL_OUT_OF_RANGE) + r"\D*?(-?\d+)", text)
    label = f"label {found[1]}" if found else "labels"
    return DataError(f"{manifest_path(data_dir)}: the records hold {label}, but the manifest names "
                     f"{manifest['num_classes']} classes (labels 0 to {manifest['num_classes'] - 1}); the "
                     "manifest was edited or belongs to other shards: restore it, or convert the dataset "
                     "again (python -m pipelines.convert ... --overwrite)")


def shard_paths(data_dir, manifest, split):
    """Full paths of a split's shards, in order."""
    return [storage.join(data_dir, shard["file"]) for shard in manifest["splits"][split]["shards"]]
