"""The shards of a conversion: the plan (which examples go into which file), and writing one planned shard.

A plan is a list of tasks `{"split", "file", "start", "stop", "chunk"}`: shard `file` holds the
split's examples `[start, stop)`, read from chunk `chunk` of a chunked split. Writing a task reads
its examples, checks them, writes the shard, and returns its progress record: count, size and
checksum (`pipelines.tfrecord.write_shard`), the exact pixel sums, the skipped inputs, and the
fingerprints of the source files it was read from.
"""

import math

import numpy as np

from pipelines import storage
from pipelines.errors import DataError
from pipelines.fingerprint import fingerprint_or_none
from pipelines.pixel_statistics import pixel_sums
from pipelines.tfrecord import RECORD_OVERHEAD_BYTES, shard_name, write_shard


def plan_shards(source, shard_size_mb=100.0, min_shards=4):
    """Shard plan: a list of `{"split", "file", "start", "stop", "chunk"}`, in writing order.

    A split gets about `max(min_shards, size / shard_size_mb)` shards (never more than it has
    examples) of equal record counts; with `Split.chunks`, shards are cut inside each chunk.
    """
    if shard_size_mb <= 0:
        raise ValueError(f"`shard_size_mb` must be positive. Received: shard_size_mb={shard_size_mb}")
    record_bytes = int(np.prod(source.image_shape)) + RECORD_OVERHEAD_BYTES
    plan = []
    for split_name, split in source.splits.items():
        total = split.num_examples
        if total <= 0:
            where = source.description.get("path", source.dataset)
            raise DataError(f"{where}: split '{split_name}' has no examples")
        target = max(min_shards, math.ceil(total * record_bytes / (shard_size_mb * 1e6)))
        per_shard = math.ceil(total / min(target, total))
        ranges, offset = [], 0
        for chunk_index, size in enumerate(split.chunks or (total,)):
            count = math.ceil(size / per_shard)
            bounds = [offset + round(j * size / count) for j in range(count + 1)]
            ranges += [(a, b, chunk_index) for a, b in zip(bounds[:-1], bounds[1:])]
            offset += size
        for index, (start, stop, chunk_index) in enumerate(ranges):
            plan.append({"split": split_name, "file": shard_name(split_name, index, len(ranges)),
                         "start": start, "stop": stop, "chunk": chunk_index})
    return plan


def group_jobs(source, tasks):
    """One job per chunk for chunked splits (load a chunk once), else one job per shard."""
    jobs = {}
    for task in tasks:
        chunked = source.splits[task["split"]].chunks is not None
        key = (task["split"], task["chunk"]) if chunked else (task["split"], task["file"])
        jobs.setdefault(key, []).append(task)
    return list(jobs.values())


def write_task(source, output_dir, task):
    """Writes the shard of `task` into `output_dir`; returns its progress record."""
    split = source.splits[task["split"]]
    # Fingerprinted before reading: a file changed during the read shows up as changed on resume.
    # An unreadable file gets None, and the reader reports (or with --skip-bad, skips) it.
    paths = split.inputs(task["start"], task["stop"]) if split.inputs else []
    inputs = [fingerprint_or_none(path) for path in paths]
    examples = split.read(task["start"], task["stop"])
    _check_examples(source, task, examples)
    entry = write_shard(storage.join(output_dir, task["file"]), examples.images, examples.labels)
    entry["pixel_sums"] = pixel_sums(examples.images)
    entry["skipped"] = list(examples.skipped)
    entry["inputs"] = inputs
    return entry


def _check_examples(source, task, examples):
    """Safety net behind the sources' own checks: shape, dtype and label range of what was read."""
    where = (f"{source.description.get('path', source.dataset)} "
             f"({task['split']} examples {task['start']}..{task['stop'] - 1})")
    images, labels = examples.images, np.asarray(examples.labels)
    expected = (len(labels),) + tuple(source.image_shape)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape != expected:
        found = (getattr(images, "dtype", type(images)), getattr(images, "shape", None))
        raise DataError(f"{where}: images are {found[0]} {found[1]}; expected uint8 {expected}")
    if len(labels) + len(examples.skipped) != task["stop"] - task["start"]:
        raise DataError(f"{where}: read {len(labels)} examples and skipped {len(examples.skipped)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= source.num_classes):
        raise DataError(f"{where}: label {int(labels.min() if labels.min() < 0 else labels.max())} "
                        f"is out of range 0..{source.num_classes - 1}")
