"""A training run's state in its model directory, and the order in which it is written.

    model_dir/
      .lock                          held (flock) by the `fit` process training here
      config.yaml                    the resolved configuration, written once the first epoch finished
      backup/epoch-00005.weights.h5  weights and optimizer state after 5 epochs
      backup/epoch-00005.json        its completion marker, written after the weights
      best.keras, best.json          the best model so far, then its metric (written after it)
      log.csv, component_usage.csv   one row per finished epoch, counted from 1
      final.keras                    the model after the last epoch
      metrics.json                   written last: the run is finished

The protocol needs no atomic rename (which object stores do not have): a checkpoint is written
under a new, epoch-numbered name and counts only once its marker exists, so a process killed
while writing leaves a weights file without a marker, which the next start ignores and removes.
Each new checkpoint removes the ones before the previous. A resumed run restores the newest
complete checkpoint (falling back to the previous one, with a warning naming the damaged file,
if its weights cannot be read), drops the log rows of epochs after it, and takes the best metric
so far from `best.json`, so that `best.keras` is only replaced by a strictly better epoch. A run is finished when `metrics.json`
exists and records the configured number of epochs; the backup is kept, so a larger `--epochs`
continues from the last epoch.

The model directory may be a URL (`gs://...`, `file://...`; `pipelines.storage`). The small
files (`best.json`, `metrics.json`, `config.yaml`, the CSV logs) are one object write each, which
object stores make visible whole or not at all. On a local disk every file here is written aside
under a hidden temporary name (`.best.keras.tmp-<pid>.keras`) and renamed into place, the
temporary file removed on any failure (`pipelines.write_aside`); one a killed process left is
deleted when the next `fit` takes the lock.
A `.keras` payload is complete only once the file written after it exists: `best.keras` once
`best.json` exists (on a URL, `best.json` is deleted before `best.keras` is replaced, so a kill
in between leaves no best model, and the next finished epoch writes one), and `final.keras` once
`metrics.json` exists. The lock is described at `gmsop_keras.training.run_lock`.
"""

import contextlib
import csv
import datetime
import io
import math
import os
import re
import sys

from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.run_lock import (  # noqa: F401 (the lock's constants stay importable from here)
    LOCK_FILE, LOCK_REFRESH_SECONDS, LOCK_STALE_SECONDS, read_json, run_lock, write_json,
)
from pipelines import storage
from pipelines.write_aside import is_temporary

BACKUP_DIR = "backup"
METRICS_FILE = "metrics.json"
BEST_MODEL = "best.keras"
BEST_FILE = "best.json"
FINAL_MODEL = "final.keras"
LOG_FILES = ("log.csv", "component_usage.csv")
_CHECKPOINT = re.compile(r"^epoch-(\d{5})\.(weights\.h5|json)$")


class RunDirectory:
    """The files of one run (one process's model directory): lock, checkpoints, best, logs, metrics."""

    def __init__(self, path):
        self.path = path
        self.backup_dir = storage.join(path, BACKUP_DIR)

    def file(self, name):
        return storage.join(self.path, name)

    # The lock.

    @contextlib.contextmanager
    def lock(self):
        """Holds `.lock` while training; a second `fit` on the same directory is refused (`run_lock`)."""
        with run_lock(self.path):
            self._remove_temporaries()
            yield self

    def _remove_temporaries(self):
        """Deletes what a process killed while writing left (`written_aside`); no other writes here now."""
        if storage.is_url(self.path):
            return
        for folder in (self.path, self.backup_dir):
            for name in (os.listdir(folder) if os.path.isdir(folder) else []):
                if is_temporary(name):
                    storage.remove(os.path.join(folder, name), missing_ok=True)

    # Checkpoints.

    def checkpoints(self):
        """Epochs with a complete checkpoint (weights and marker), newest first."""
        if not storage.isdir(self.backup_dir):
            return []
        found = {}
        for name in storage.listdir(self.backup_dir):
            match = _CHECKPOINT.match(name)
            if match:
                found.setdefault(int(match[1]), set()).add(match[2])
        return sorted((epoch for epoch, kinds in found.items() if kinds == {"weights.h5", "json"}), reverse=True)

    def save_checkpoint(self, model, epoch):
        """Weights and optimizer state after `epoch` finished epochs; the marker last."""
        storage.makedirs(self.backup_dir)
        save_weights(model, self._weights(epoch))
        _write_json(self._marker(epoch), {"epoch": epoch, "time": _now()})
        for older in self.checkpoints()[2:]:
            self._remove_checkpoint(older)

    def restore(self, model):
        """Loads the newest readable checkpoint into `model`; returns its epoch (0 when there is none).

        Weights files without a marker (a write that was cut short) are removed. The model must
        be compiled; its optimizer is built here if needed, so that its state can be loaded.
        """
        complete = self.checkpoints()
        if storage.isdir(self.backup_dir):
            for name in storage.listdir(self.backup_dir):
                match = _CHECKPOINT.match(name)
                if match and int(match[1]) not in complete:
                    storage.remove(storage.join(self.backup_dir, name), missing_ok=True)
        if not complete:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        failures = []
        for epoch in complete:
            try:
                model.load_weights(self._weights(epoch))
            except (OSError, ValueError) as error:
                failures.append((self._weights(epoch), " ".join(str(error).split())[:200]))
                continue
            for path, cause in failures:
                print(f"warning: backup {path} is damaged ({cause}); resuming from the backup of epoch {epoch}",
                      file=sys.stderr, flush=True)
            return epoch
        failures = [f"{path}: {cause}" for path, cause in failures]
        raise UsageError(f"no checkpoint in {self.backup_dir} can be read ({'; '.join(failures)}); "
                         "delete that folder to start the run again")

    def _weights(self, epoch):
        return storage.join(self.backup_dir, f"epoch-{epoch:05d}.weights.h5")

    def _marker(self, epoch):
        return storage.join(self.backup_dir, f"epoch-{epoch:05d}.json")

    def _remove_checkpoint(self, epoch):
        for path in (self._marker(epoch), self._weights(epoch)):  # the marker first
            storage.remove(path, missing_ok=True)

    # The best model.

    def best_value(self):
        """The monitored value of `best.keras`, or None when there is no best model yet."""
        record = read_json(self.file(BEST_FILE))
        if record is None or not storage.isfile(self.file(BEST_MODEL)):
            return None
        return record.get("value")

    def save_best(self, model, epoch, monitor, value):
        if storage.is_url(self.path):  # best.keras counts only with best.json, written after it
            storage.remove(self.file(BEST_FILE), missing_ok=True)
        save_model(model, self.file(BEST_MODEL))
        _write_json(self.file(BEST_FILE), {"epoch": epoch, "monitor": monitor, "value": value, "time": _now()})

    # Logs and the end of the run.

    def trim_logs(self, epoch):
        """Drops the rows of epochs after `epoch` from the CSV logs (epochs counted from 1)."""
        for name in LOG_FILES:
            path = self.file(name)
            if not storage.isfile(path):
                continue
            with storage.open_file(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows or "epoch" not in rows[0]:
                continue
            column = rows[0].index("epoch")
            kept = [rows[0]] + [row for row in rows[1:] if len(row) > column and _int(row[column]) <= epoch]
            if len(kept) != len(rows):
                text = io.StringIO(newline="")
                csv.writer(text).writerows(kept)
                storage.write_text(path, text.getvalue(), newline="")

    def history(self):
        """{column: [value per epoch]} from log.csv."""
        path = self.file("log.csv")
        if not storage.isfile(path):
            return {}
        with storage.open_file(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: [_finite(_float(row[key])) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}

    def finished(self):
        """metrics.json of a finished run, or None."""
        return read_json(self.file(METRICS_FILE))

    def write_metrics(self, metrics):
        _write_json(self.file(METRICS_FILE), metrics)


def canonical_path(path):
    """One spelling of a local path or URL, so that two spellings of the same place compare equal:
    a local path made absolute and normalised against the working directory (`runs/x`, `./runs/x/`
    and `/home/me/runs/x` are one); a URL keeps its scheme and bucket and loses the repeated and
    trailing slashes of its path (`gs://b//runs/x/` is `gs://b/runs/x`)."""
    path = str(path)
    if storage.is_url(path):
        scheme, rest = path.split("://", 1)
        bucket, _, tail = rest.partition("/")
        tail = re.sub("/+", "/", tail).strip("/")
        return f"{scheme}://{bucket}/{tail}" if tail else f"{scheme}://{bucket}"
    return os.path.abspath(os.path.expanduser(path))


def save_model(model, path):
    """Saves a `.keras` file: on a local disk written aside and renamed over the old one; on a URL
    written in place (Keras copies it up whole), completed by the marker the caller writes after it."""
    if storage.is_url(path):
        storage.remove(path, missing_ok=True)  # TensorFlow's ram:// would append to the old file
    with storage.written_aside(path, suffix=".keras") as temp:  # Keras insists on the suffix
        model.save(temp)


def save_weights(model, path):
    """Saves a `.weights.h5` file (weights and optimizer state) whole or not at all.

    Locally it is built in memory and written through `storage.write_bytes` (aside, renamed): HDF5
    writing straight to a full disk prints its own tracebacks while freeing the file and crashes the
    process at exit; a Python write fails with one `OSError` naming `path`. Keras takes an
    `io.BytesIO` whose `str` ends in `.weights.h5` (Keras 3.15, `saving_lib.H5IOStore`). On a URL
    Keras writes it in place, completed by the marker the caller writes after it.
    """
    if storage.is_url(path):
        model.save_weights(path, overwrite=True)
        return
    buffer = _NamedBuffer(path)
    model.save_weights(buffer, overwrite=True)
    storage.write_bytes(path, buffer.getvalue())


class _NamedBuffer(io.BytesIO):
    def __init__(self, name):
        super().__init__()
        self.name = name

    def __str__(self):
        return self.name


def _write_json(path, value):
    write_json(path, _finite(value))


def _finite(value):
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _int(text):
    try:
        return int(float(text))
    except ValueError:
        return math.inf


def _float(text):
    try:
        return float(text)
    except ValueError:
        return math.nan
