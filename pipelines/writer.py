"""Writes a `Source` as sharded TFRecords: plan, resume, parallel shard writing, manifest last.

Files in the output folder while a conversion runs:

- `.convert-plan.json`: the shard plan and the source description. A re-run with the same plan
  resumes; a different one (other source or shard size) is refused unless `--overwrite`.
- `train-00003-of-00016.tfrecord`: a shard, written on a URL under its final name (no rename: object
  stores have none), on a local disk aside as `.train-00003-of-00016.tfrecord.tmp-<pid>` and renamed.
  It counts only once the progress file lists it with its size; a shard file that is not listed
  (a write cut short) and a temporary file a killed run left are deleted on resume.
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
import os
import threading

from tqdm import tqdm

from pipelines import storage
from pipelines.errors import DataError
from pipelines.manifest import FORMAT_VERSION, MANIFEST_NAME, has_manifest, write_manifest
from pipelines.pixel_statistics import pixel_statistics
from pipelines.resume import OWN_FILE, PLAN_NAME, PROGRESS_NAME, resume_state
from pipelines.shards import group_jobs, plan_shards, write_task

STAGING_NAME = ".convert-staging"


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
    done = resume_state(source, target, plan, plan_record, overwrite)
    todo = [task for task in plan if task["file"] not in done]
    jobs = group_jobs(source, todo)
    lock = threading.Lock()
    stop = threading.Event()
    bar = tqdm(total=sum(t["stop"] - t["start"] for t in todo), unit="img", disable=not progress,
               desc=f"{source.dataset} -> {storage.basename(storage.absolute(output_dir))}",
               dynamic_ncols=True)

    def run_job(tasks):
        for task in tasks:
            if stop.is_set():
                return
            entry = write_task(source, target, task)
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
        if OWN_FILE.match(name) and (name not in staged or storage.exists(storage.join(staging, name))):
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
        **pixel_statistics(train_shards, source.image_shape),  # of the training split
        "source": source.description,
        "skipped": skipped,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
