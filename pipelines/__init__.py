"""Dataset sources -> sharded TFRecords (`python -m pipelines.convert`); TFRecords -> `tf.data`.

    from pipelines import ensure_synthetic, make_dataset, read_manifest

    data_dir = ensure_synthetic("data/synthetic")          # or the --output of pipelines.convert
    manifest = read_manifest(data_dir)                     # num_classes, image_shape, splits, ...
    train = make_dataset(data_dir, "train", 256, training=True)
    val = make_dataset(data_dir, "validation", 256, training=False)

`make_dataset` and `write_dataset` import TensorFlow on first use, so that the conversion CLI can
quiet TensorFlow's start-up logging before it loads.
"""

import importlib

from pipelines.errors import DataError
from pipelines.manifest import input_error, read_manifest, verify_manifest
from pipelines.synthetic import ensure_synthetic, synthetic_source

_LAZY = {"make_dataset": "pipelines.dataset", "decode_records": "pipelines.dataset",
         "write_dataset": "pipelines.writer"}

__all__ = ["DataError", "decode_records", "ensure_synthetic", "input_error", "make_dataset", "read_manifest",
           "synthetic_source", "verify_manifest", "write_dataset"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
