"""What a dataset source hands to the shard writer: splits that can read any range of examples.

Each dataset form (pickled ImageNet-64 batches, a `.mat` file, an image tree, TFDS, the synthetic set)
is turned into a `Source`: its image shape, classes, and for every split a `Split` with a
`read(start, stop)` function. The writer (`pipelines.writer`) plans shards over `[0, num_examples)`,
calls `read` for each shard from a pool of threads and never needs to know the format.
"""

import dataclasses
import threading
from typing import Callable, NamedTuple, Optional

import numpy as np


class Examples(NamedTuple):
    """A block of examples read from a source.

    images: uint8 [n, H, W, 3]; labels: integer [n] in [0, num_classes); skipped: one
    `"path: reason"` string per input that was dropped (only with `--skip-bad`), so n may be smaller
    than the range asked for.
    """

    images: np.ndarray
    labels: np.ndarray
    skipped: tuple = ()


@dataclasses.dataclass
class Split:
    """One split of a source.

    Attributes:
        num_examples: examples in the split (before any `--skip-bad` drops).
        read: `read(start, stop) -> Examples` for `0 <= start < stop <= num_examples`; raises
            `DataError` naming the bad file. Called from several threads at once.
        chunks: sizes of consecutive blocks that are expensive to open (one pickled batch file of
            1.6 GB); shards never straddle a block and one worker writes all shards of a block, so
            each block is loaded once. None: any range is cheap to read.
        inputs: `inputs(start, stop) -> [path, ...]`, the source files examples [start, stop) are
            read from, in a fixed order; the writer records their fingerprints with each shard and
            checks them when it resumes. None: the source has no files that could change (synthetic
            data; a TFDS data dir, versioned and read-only).
    """

    num_examples: int
    read: Callable[[int, int], Examples]
    chunks: Optional[tuple] = None
    inputs: Optional[Callable[[int, int], list]] = None


@dataclasses.dataclass
class Source:
    """A dataset ready for conversion.

    Attributes:
        dataset: manifest `dataset` name: "imagenet64", "places365", "folder" or "synthetic".
        image_shape: (H, W, 3) of every image.
        num_classes: labels are in [0, num_classes).
        splits: {"train": Split, "validation": Split}, in writing order.
        class_names: names by label, or None where the source has none.
        description: JSON-serialisable description (format, path, options), recorded in the
            manifest; a resumed conversion must have the same one.
    """

    dataset: str
    image_shape: tuple
    num_classes: int
    splits: dict
    class_names: Optional[list] = None
    description: dict = dataclasses.field(default_factory=dict)


class ChunkCache:
    """Keeps the most recently loaded chunk per thread, so each worker loads each chunk once.

    `get(key, load)` returns `load()` for a new key and drops the previous chunk of this thread first,
    so memory holds at most one chunk per worker thread.
    """

    def __init__(self):
        self._local = threading.local()

    def get(self, key, load):
        if getattr(self._local, "key", None) != key:
            self._local.key, self._local.value = None, None
            self._local.value = load()
            self._local.key = key
        return self._local.value


def chunk_of(chunks, start, stop):
    """Index and offset of the chunk holding [start, stop); the range must not straddle chunks."""
    offset = 0
    for index, size in enumerate(chunks):
        if start < offset + size:
            if stop > offset + size:
                raise ValueError(f"range [{start}, {stop}) straddles chunk {index} ending at {offset + size}")
            return index, offset
        offset += size
    raise ValueError(f"range [{start}, {stop}) is past the last chunk (total {offset})")
