"""A conversion's record in its output folder, and what a re-run resumes from it.

`.convert-plan.json` holds the shard plan and the source description; `.convert-progress.jsonl`
one line per finished shard (`pipelines.shards.write_task`'s record). A re-run with the same plan
keeps the shards the progress file lists with their size, once their source files are unchanged
(same fingerprints), and deletes every other shard file of this tool (a write cut short);
`pipelines.writer` describes the whole protocol.
"""

import concurrent.futures
import json
import re

from pipelines import storage
from pipelines.errors import DataError
from pipelines.fingerprint import fingerprint_or_none
from pipelines.manifest import MANIFEST_NAME
from pipelines.tfrecord import TEMP_SUFFIX
from pipelines.write_aside import is_temporary

PLAN_NAME = ".convert-plan.json"
PROGRESS_NAME = ".convert-progress.jsonl"
# The shard files this tool writes (and the `.tmp` files of its older versions).
OWN_FILE = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$")


def resume_state(source, target, plan, plan_record, overwrite):
    """Checks a previous run's plan and inputs, deletes its partial files, returns its finished shards.

    With `overwrite`, a previous run with another plan or changed inputs is discarded instead of
    refused; one with the same plan and unchanged inputs resumes.
    """
    plan_path = storage.join(target, PLAN_NAME)
    progress_path = storage.join(target, PROGRESS_NAME)
    names = storage.listdir(target)
    for name in names:  # a shard or record a killed run was writing aside (`pipelines.write_aside`)
        if is_temporary(name):
            storage.remove(storage.join(target, name), missing_ok=True)
    own = [name for name in names if OWN_FILE.match(name)]
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
        found = pool.map(lambda check: fingerprint_or_none(check[0]), checks)
        for (path, expected, name), now in zip(checks, found):
            if now != expected:
                what = "is gone or unreadable" if now is None else "changed (size, time or content)"
                return (f"{path}: {what} since it was converted into {storage.join(target, name)}; "
                        "finishing would mix old and new images: pass --overwrite to convert again "
                        "from scratch")
    return None


def _start_over(target, plan_record):
    """Deletes a previous run's files in `target` and records the new plan; nothing is finished."""
    for name in storage.listdir(target):
        if OWN_FILE.match(name) or name in (MANIFEST_NAME + TEMP_SUFFIX, PLAN_NAME, PROGRESS_NAME):
            storage.remove(storage.join(target, name))
    storage.write_text(storage.join(target, PLAN_NAME), json.dumps(plan_record))
    return {}
