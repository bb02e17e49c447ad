"""Writes a `Source` as sharded TFRecords: plan, resume, parallel shard writing, manifest last.

Files in the output folder while a conversion runs:

- `.convert-plan.json`: the shard plan and the source description. A re-run with the same plan
  resumes; a different one (other source or shard size) is refused unless `--overwrite`.
- `train-00003-of-00016.tfrecord`: a shard, written under its final name (no rename: object stores
  have none). It counts only once the progress file lists it with its size; a shard file that is
  not listed (a write cut short) is deleted on resume.
- `.convert-progress.jsonl`: one line per finished shard (count, size, checksum, skipped inputs, and
  the fingerprints of the source files it was read from), added after the shard was written whole
  (on a URL the small file is written again whole, object stores cannot append). A resumed run
  re-fingerprints those files and refuses to go on when one changed (same name, other content):
  the finished shards hold the old images, the rest would hold the new ones.
- `manifest.json`: written last, listing every shard with its size; from then on the folder is a
  finished dataset and is not overwritten without `overwrite=True`.

Every path may be a URL (`gs://...`, `file://...`; `pipelines.storage`).

Replacing a finished dataset (`overwrite=True`) never leaves a folder whose manifest lists missing or
other shards, and needs no atomic rename (the protocol holds on object stores, where a "move" is a
copy then a delete):

1. The new dataset is converted into `OUTPUT/.convert-staging/`, with its own plan, progress and,
   last, manifest. Until that manifest exists the old dataset is untouched and complete; a failed
   or killed run leaves it so, and the same command resumes the staging conversion.
2. Switch: delete `OUTPUT/manifest.json` (from here on OUTPUT is an unfinished folder, which readers
   refuse), delete OUTPUT's shards that are not yet replaced, move each staged shard up, write
   `OUTPUT/manifest.json` (the staged one), delete the staging folder.
3. A run that finds a staged manifest first finishes step 2; a shard whose staged copy is gone was
   already moved. So an interruption anywhere in the switch is completed by the next run.
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

from pipelines import storage
from pipelines.errors import DataError
from pipelines.fingerprint import fingerprint
from pipelines.manifest import FORMAT_VERSION, MANIFEST_NAME, has_manifest, write_manifest
from pipelines.tfrecord import RECORD_OVERHEAD_BYTES, TEMP_SUFFIX, shard_name, write_shard

PLAN_NAME = ".convert-plan.json"
PROGRESS_NAME = ".convert-progress.jsonl"
STAGING_NAME = ".convert-staging"
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
        overwrite: replace a finished dataset (which stays whole until the new one is complete),
            and discard an unfinished conversion with another plan or changed source files (one
            with the same plan and unchanged files resumes).
        progress: show a tqdm progress bar on stderr.

    Raises:
        DataError: a finished dataset is there and `overwrite` is False; bad input (the shards
            finished before the error are kept, and a re-run resumes after the fix); a source file
            that changed since an interrupted run began (unless `overwrite`, which starts again).
    """
    storage.makedirs(output_dir)
    plan = plan_shards(source, shard_size_mb, min_shards)
    plan_record = json.loads(json.dumps({  # as it reads back from the plan file
        "dataset": source.dataset, "source": source.description, "image_shape": list(source.image_shape),
        "num_classes": source.num_classes, "shards": plan}))
    staging = storage.join(output_dir, STAGING_NAME)
    if has_manifest(staging):  # a replacement was complete but not yet switched in: finish that
        manifest = _switch_in(output_dir, staging)
        if _same_conversion(manifest, plan_record):  # this very command, interrupted in the switch
            return manifest
    if has_manifest(output_dir):
        if not overwrite:
            raise DataError(f"{output_dir}: already holds a finished dataset ({MANIFEST_NAME}); "
                            "pass --overwrite to replace it")
        target = staging  # the old dataset stays whole until the new one is
    else:
        storage.rmtree(staging)
        target = output_dir
    storage.makedirs(target)
    done = _resume_state(source, target, plan, plan_record, overwrite)
    todo = [task for task in plan if task["file"] not in done]
    jobs = _group_jobs(source, todo)
    lock = threading.Lock()
    stop = threading.Event()
    bar = tqdm(total=sum(t["stop"] - t["start"] for t in todo), unit="img", disable=not progress,
               desc=f"{source.dataset} -> {storage.basename(storage.absolute(output_dir))}",
               dynamic_ncols=True)

    def run_job(tasks):
        for task in tasks:
            if stop.is_set():
                return
            entry = _write_task(source, target, task)
            with lock:
                storage.append_text(storage.join(target, PROGRESS_NAME), json.dumps(entry) + "\n")
                done[task["file"]] = entry
                bar.update(task["stop"] - task["start"])

    try:
        _run_all(run_job, jobs, workers or os.cpu_count() or 1, stop)
    finally:
        bar.close()
    manifest = _build_manifest(source, plan, done)
    write_manifest(target, manifest)
    for name in (PLAN_NAME, PROGRESS_NAME):
        storage.remove(storage.join(target, name))
    if target == staging:
        _switch_in(output_dir, staging)
    return manifest


def _switch_in(output_dir, staging):
    """Replaces the dataset in `output_dir` by the finished one in `staging` (steps 2-3 above)."""
    manifest = json.loads(storage.read_text(storage.join(staging, MANIFEST_NAME)))
    staged = {shard["file"] for split in manifest["splits"].values() for shard in split["shards"]}
    storage.remove(storage.join(output_dir, MANIFEST_NAME), missing_ok=True)
    for name in storage.listdir(output_dir):
        # Old shards, and partial copies of staged ones; a staged shard already moved up is kept.
        if _OWN_FILE.match(name) and (name not in staged or storage.exists(storage.join(staging, name))):
            storage.remove(storage.join(output_dir, name))
    for name in sorted(staged):
        if storage.exists(storage.join(staging, name)):
            _move(storage.join(staging, name), storage.join(output_dir, name))
    write_manifest(output_dir, manifest)
    storage.rmtree(staging)
    return manifest


def _move(source_path, target_path):
    """Moves a staged shard up: a copy, then the staged copy deleted (what a "rename" is on an
    object store). Nothing relies on this being atomic (step 3 of the protocol): a copy cut
    short is deleted and copied again by the next run, since its staged source still exists."""
    storage.copy(source_path, target_path)
    storage.remove(source_path)


def _same_conversion(manifest, plan_record):
    """Whether `manifest` is what the plan `plan_record` converts to."""
    keys = ("dataset", "source", "image_shape", "num_classes")
    files = [shard["file"] for split in manifest["splits"].values() for shard in split["shards"]]
    return (all(manifest.get(key) == plan_record[key] for key in keys)
            and files == [task["file"] for task in plan_record["shards"]])


def _write_task(source, output_dir, task):
    split = source.splits[task["split"]]
    # Fingerprinted before reading: a file changed during the read shows up as changed on resume.
    # An unreadable file gets None, and the reader reports (or with --skip-bad, skips) it.
    paths = split.inputs(task["start"], task["stop"]) if split.inputs else []
    inputs = [_fingerprint_or_none(path) for path in paths]
    examples = split.read(task["start"], task["stop"])
    _check_examples(source, task, examples)
    entry = write_shard(storage.join(output_dir, task["file"]), examples.images, examples.labels)
    entry["pixel_sums"] = pixel_sums(examples.images)
    entry["skipped"] = list(examples.skipped)
    entry["inputs"] = inputs
    return entry


def pixel_sums(images, rows=1 << 16):
    """Exact per-channel [sum, sum of squares] of uint8 images [N, H, W, C], as Python ints.

    Float64 products with a ones vector, a block of pixels at a time: every partial sum is an
    integer below 2^53, so the result is exact, at about a tenth of a second per 100 MB shard
    (a third of the shard's own writing time; a histogram per channel took eight times as long).
    """
    pixels = images.reshape(-1, images.shape[-1])
    ones = np.ones(min(rows, len(pixels)))
    sums = np.zeros(pixels.shape[1])
    squares = np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), rows):
        block = pixels[start:start + rows].astype(np.float64)
        sums += ones[:len(block)] @ block
        block *= block
        squares += ones[:len(block)] @ block
    return [[int(s), int(q)] for s, q in zip(sums, squares)]


def _pixel_statistics(entries, image_shape):
    """`{"pixel_mean", "pixel_std"}`: per-channel mean and standard deviation (over all pixels, [0, 255]
    units) of the shards `entries`, from their `pixel_sums`; empty when a shard lacks them (one
    finished by an older version of this tool before a resume) or there are no pixels."""
    if not entries or any("pixel_sums" not in entry for entry in entries):
        return {}
    height, width, channels = image_shape
    totals = np.zeros((channels, 2), dtype=np.float64)
    for entry in entries:
        totals += np.array(entry["pixel_sums"], dtype=np.float64)
    count = float(sum(entry["num_examples"] for entry in entries)) * height * width
    if count == 0:
        return {}
    mean = totals[:, 0] / count
    std = np.sqrt(np.maximum(totals[:, 1] / count - mean * mean, 0.0))
    return {"pixel_mean": [round(float(m), 6) for m in mean], "pixel_std": [round(float(v), 6) for v in std]}


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


def _resume_state(source, target, plan, plan_record, overwrite):
    """Checks a previous run's plan and inputs, deletes its partial files, returns its finished shards.

    With `overwrite`, a previous run with another plan or changed inputs is discarded instead of
    refused; one with the same plan and unchanged inputs resumes.
    """
    plan_path = storage.join(target, PLAN_NAME)
    progress_path = storage.join(target, PROGRESS_NAME)
    own = [name for name in storage.listdir(target) if _OWN_FILE.match(name)]
    if not storage.exists(plan_path):
        if own and not overwrite:  # not made by a run of this tool that we know of: keep it
            raise DataError(f"{target}: holds shard files ({own[0]}, ...) but no record of the "
                            "conversion that made them; choose an empty folder or pass --overwrite")
        return _start_over(target, plan_record)
    try:
        previous = json.loads(storage.read_text(plan_path))
    except ValueError:  # cut short while being written: nothing was converted yet
        previous = plan_record
    if previous != plan_record:
        if overwrite:
            return _start_over(target, plan_record)
        raise DataError(f"{target}: holds an unfinished conversion with other settings or source; "
                        "re-run it with the same options to resume, or pass --overwrite to start over")
    done = {}
    if storage.exists(progress_path):
        for line in storage.read_text(progress_path).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by the interruption
                continue
            path = storage.join(target, entry["file"])
            if storage.isfile(path) and storage.size(path) == entry["bytes"]:
                done[entry["file"]] = entry
    changed = _changed_input(source, target, plan, done)
    if changed:
        if overwrite:
            return _start_over(target, plan_record)
        raise DataError(changed)
    for name in own:  # shards cut short (and `.tmp` files of older versions): never recorded
        if name not in done:
            storage.remove(storage.join(target, name))
    storage.write_text(plan_path, json.dumps(plan_record))
    # Rewritten without the stale lines.
    storage.write_text(progress_path, "".join(json.dumps(entry) + "\n" for entry in done.values()))
    return done


def _changed_input(source, target, plan, done):
    """A message naming the first source file of a finished shard that changed since, or None."""
    tasks = {task["file"]: task for task in plan}
    checks = []
    for name, entry in done.items():
        task = tasks[name]
        inputs = source.splits[task["split"]].inputs
        paths = inputs(task["start"], task["stop"]) if inputs else []
        recorded = entry.get("inputs", [])
        if len(recorded) != len(paths):
            return (f"{storage.join(target, name)}: finished shard without a record of its source files; "
                    "pass --overwrite to convert again from scratch")
        checks += [(path, expected, name) for path, expected in zip(paths, recorded)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        found = pool.map(lambda check: _fingerprint_or_none(check[0]), checks)
        for (path, expected, name), now in zip(checks, found):
            if now != expected:
                what = "is gone or unreadable" if now is None else "changed (size, time or content)"
                return (f"{path}: {what} since it was converted into {storage.join(target, name)}; "
                        "finishing would mix old and new images: pass --overwrite to convert again "
                        "from scratch")
    return None


def _fingerprint_or_none(path):
    try:
        return fingerprint(path)
    except DataError:
        return None


def _start_over(target, plan_record):
    """Deletes a previous run's files in `target` and records the new plan; nothing is finished."""
    for name in storage.listdir(target):
        if _OWN_FILE.match(name) or name in (MANIFEST_NAME + TEMP_SUFFIX, PLAN_NAME, PROGRESS_NAME):
            storage.remove(storage.join(target, name))
    storage.write_text(storage.join(target, PLAN_NAME), json.dumps(plan_record))
    return {}


def _build_manifest(source, plan, done):
    splits, skipped = {}, []
    train_shards = [done[task["file"]] for task in plan if task["split"] == "train"]
    for task in plan:
        entry = dict(done[task["file"]])
        skipped += entry.pop("skipped", [])
        entry.pop("inputs", None)
        entry.pop("pixel_sums", None)
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
        **_pixel_statistics(train_shards, source.image_shape),  # of the training split
        "source": source.description,
        "skipped": skipped,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
