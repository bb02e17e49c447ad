"""Writes a `Source` as sharded TFRecords: plan, resume, parallel shard writing, manifest last.

Files in the output folder while a conversion runs:

- `.convert-plan.json`: the shard plan and the source description. A re-run with the same plan
  resumes; a different one (other source or shard size) is refused unless `--overwrite`.
- `.convert-progress.jsonl`: one line per finished shard (count, size, checksum, skipped inputs),
  appended after the shard was renamed to its final name.
- `train-00003-of-00016.tfrecord.tmp`: a shard being written; deleted on resume.
- `manifest.json`: written last; from then on the folder is a finished dataset and is not
  overwritten without `overwrite=True`.
"""

import concurrent.futures
import datetime
import json
import math
import os
import re
import threading

import numpy as np
from tqdm import tqdm

from pipelines.errors import DataError
from pipelines.manifest import FORMAT_VERSION, MANIFEST_NAME, has_manifest, write_manifest
from pipelines.tfrecord import RECORD_OVERHEAD_BYTES, TEMP_SUFFIX, shard_name, write_shard

PLAN_NAME = ".convert-plan.json"
PROGRESS_NAME = ".convert-progress.jsonl"
_OWN_FILE = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$")


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


def write_dataset(source, output_dir, *, shard_size_mb=100.0, min_shards=4, workers=None,
                  overwrite=False, progress=True):
    """Converts `source` into `output_dir`; resumes an interrupted run; returns the manifest.

    Args:
        source: a `pipelines.source.Source`.
        output_dir: folder for the shards and `manifest.json` (created if needed).
        shard_size_mb: target shard size in MB.
        min_shards: at least this many shards per split (when it has that many examples), so that
            small sets still interleave and shard by file over several workers.
        workers: threads writing shards in parallel (default: CPU count).
        overwrite: replace a finished dataset (or an unfinished one with another plan).
        progress: show a tqdm progress bar on stderr.

    Raises:
        DataError: a finished dataset is there and `overwrite` is False; bad input (the shards
            finished before the error are kept, and a re-run resumes after the fix).
    """
    os.makedirs(output_dir, exist_ok=True)
    if has_manifest(output_dir) and not overwrite:
        raise DataError(f"{output_dir}: already holds a finished dataset ({MANIFEST_NAME}); "
                        "pass --overwrite to replace it")
    plan = plan_shards(source, shard_size_mb, min_shards)
    plan_record = json.loads(json.dumps({  # as it reads back from the plan file
        "dataset": source.dataset, "source": source.description, "image_shape": list(source.image_shape),
        "num_classes": source.num_classes, "shards": plan}))
    if overwrite:
        _remove_own_files(output_dir)
    done = _resume_state(output_dir, plan_record)
    todo = [task for task in plan if task["file"] not in done]
    jobs = _group_jobs(source, todo)
    lock = threading.Lock()
    stop = threading.Event()
    bar = tqdm(total=sum(t["stop"] - t["start"] for t in todo), unit="img", disable=not progress,
               desc=f"{source.dataset} -> {os.path.basename(os.path.abspath(output_dir))}",
               dynamic_ncols=True)

    def run_job(tasks):
        for task in tasks:
            if stop.is_set():
                return
            entry = _write_task(source, output_dir, task)
            with lock:
                with open(os.path.join(output_dir, PROGRESS_NAME), "a") as f:
                    f.write(json.dumps(entry) + "\n")
                done[task["file"]] = entry
                bar.update(task["stop"] - task["start"])

    try:
        _run_all(run_job, jobs, workers or os.cpu_count() or 1, stop)
    finally:
        bar.close()
    manifest = _build_manifest(source, plan, done)
    write_manifest(output_dir, manifest)
    for name in (PLAN_NAME, PROGRESS_NAME):
        os.remove(os.path.join(output_dir, name))
    return manifest


def _write_task(source, output_dir, task):
    split = source.splits[task["split"]]
    examples = split.read(task["start"], task["stop"])
    _check_examples(source, task, examples)
    entry = write_shard(os.path.join(output_dir, task["file"]), examples.images, examples.labels)
    entry["skipped"] = list(examples.skipped)
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


def _group_jobs(source, tasks):
    """One job per chunk for chunked splits (load a chunk once), else one job per shard."""
    jobs = {}
    for task in tasks:
        chunked = source.splits[task["split"]].chunks is not None
        key = (task["split"], task["chunk"]) if chunked else (task["split"], task["file"])
        jobs.setdefault(key, []).append(task)
    return list(jobs.values())


def _run_all(run_job, jobs, workers, stop):
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            run_job(job)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        try:
            finished, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise future.exception()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise


def _resume_state(output_dir, plan_record):
    """Checks a previous run's plan, deletes its partial files, returns its finished shards' entries."""
    plan_path = os.path.join(output_dir, PLAN_NAME)
    progress_path = os.path.join(output_dir, PROGRESS_NAME)
    own = [name for name in os.listdir(output_dir) if _OWN_FILE.match(name)]
    if not os.path.exists(plan_path):
        if own:  # not made by a run of this tool that we know of: do not delete someone's data
            raise DataError(f"{output_dir}: holds shard files ({own[0]}, ...) but no record of the "
                            "conversion that made them; choose an empty folder or pass --overwrite")
        with open(plan_path, "w") as f:
            json.dump(plan_record, f)
        return {}
    try:
        with open(plan_path) as f:
            previous = json.load(f)
    except ValueError:  # cut short while being written: nothing was converted yet
        previous = plan_record
    if previous != plan_record:
        raise DataError(f"{output_dir}: holds an unfinished conversion with other settings or source; "
                        "re-run it with the same options to resume, or pass --overwrite to start over")
    done = {}
    if os.path.exists(progress_path):
        with open(progress_path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by the interruption
                    continue
                path = os.path.join(output_dir, entry["file"])
                if os.path.isfile(path) and os.path.getsize(path) == entry["bytes"]:
                    done[entry["file"]] = entry
    for name in own:  # partial (.tmp) shards, and shards renamed but never recorded
        if name not in done:
            os.remove(os.path.join(output_dir, name))
    with open(plan_path, "w") as f:
        json.dump(plan_record, f)
    with open(progress_path, "w") as f:  # rewrite without the stale lines
        f.writelines(json.dumps(entry) + "\n" for entry in done.values())
    return done


def _remove_own_files(output_dir):
    for name in os.listdir(output_dir):
        if _OWN_FILE.match(name) or name in (MANIFEST_NAME, MANIFEST_NAME + TEMP_SUFFIX, PLAN_NAME,
                                             PROGRESS_NAME):
            os.remove(os.path.join(output_dir, name))


def _build_manifest(source, plan, done):
    splits, skipped = {}, []
    for task in plan:
        entry = dict(done[task["file"]])
        skipped += entry.pop("skipped", [])
        split = splits.setdefault(task["split"], {"num_examples": 0, "shards": []})
        split["num_examples"] += entry["num_examples"]
        split["shards"].append(entry)
    return {
        "format_version": FORMAT_VERSION,
        "dataset": source.dataset,
        "image_shape": list(source.image_shape),
        "num_classes": source.num_classes,
        "class_names": source.class_names,
        "splits": splits,
        "source": source.description,
        "skipped": skipped,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
