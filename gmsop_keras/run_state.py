"""A training run's state in its model directory, and the order in which it is written.

    model_dir/
      .lock                          held (flock) by the `fit` process training here
      config.yaml                    the resolved configuration, written once the inputs checked out
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
complete checkpoint (falling back to the previous one if its weights cannot be read), drops the
log rows of epochs after it, and takes the best metric so far from `best.json`, so that
`best.keras` is only replaced by a strictly better epoch. A run is finished when `metrics.json`
exists and records the configured number of epochs; the backup is kept, so a larger `--epochs`
continues from the last epoch.
"""

import contextlib
import csv
import datetime
import errno
import json
import math
import os
import re
import socket

from gmsop_keras.errors import UsageError

BACKUP_DIR = "backup"
LOCK_FILE = ".lock"
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
        self.backup_dir = os.path.join(path, BACKUP_DIR)

    def file(self, name):
        return os.path.join(self.path, name)

    # The lock.

    @contextlib.contextmanager
    def lock(self):
        """Holds `.lock` while training; a second `fit` on the same directory is refused.

        An advisory `flock`: the operating system releases it when the process ends, however
        it ends, so a killed run never leaves the directory locked.
        """
        import fcntl

        os.makedirs(self.path, exist_ok=True)
        with open(self.file(LOCK_FILE), "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise UsageError(f"{self.path} is in use by another fit ({holder}); wait for it to finish, "
                                 "or train in another --model-dir") from None
            f.seek(0)
            f.truncate()
            started = datetime.datetime.now().isoformat(timespec="seconds")
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
            f.flush()
            try:
                yield self
            finally:
                f.seek(0)
                f.truncate()
                fcntl.flock(f, fcntl.LOCK_UN)

    # Checkpoints.

    def checkpoints(self):
        """Epochs with a complete checkpoint (weights and marker), newest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = {}
        for name in os.listdir(self.backup_dir):
            match = _CHECKPOINT.match(name)
            if match:
                found.setdefault(int(match[1]), set()).add(match[2])
        return sorted((epoch for epoch, kinds in found.items() if kinds == {"weights.h5", "json"}), reverse=True)

    def save_checkpoint(self, model, epoch):
        """Weights and optimizer state after `epoch` finished epochs; the marker last."""
        os.makedirs(self.backup_dir, exist_ok=True)
        model.save_weights(self._weights(epoch), overwrite=True)
        _write_json(self._marker(epoch), {"epoch": epoch, "time": _now()})
        for older in self.checkpoints()[2:]:
            self._remove_checkpoint(older)

    def restore(self, model):
        """Loads the newest readable checkpoint into `model`; returns its epoch (0 when there is none).

        Weights files without a marker (a write that was cut short) are removed. The model must
        be compiled; its optimizer is built here if needed, so that its state can be loaded.
        """
        complete = self.checkpoints()
        if os.path.isdir(self.backup_dir):
            for name in os.listdir(self.backup_dir):
                match = _CHECKPOINT.match(name)
                if match and int(match[1]) not in complete:
                    os.remove(os.path.join(self.backup_dir, name))
        if not complete:
            return 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        failures = []
        for epoch in complete:
            try:
                model.load_weights(self._weights(epoch))
                return epoch
            except (OSError, ValueError) as error:
                failures.append(f"{self._weights(epoch)}: {' '.join(str(error).split())[:200]}")
        raise UsageError(f"no checkpoint in {self.backup_dir} can be read ({'; '.join(failures)}); "
                         "delete that folder to start the run again")

    def _weights(self, epoch):
        return os.path.join(self.backup_dir, f"epoch-{epoch:05d}.weights.h5")

    def _marker(self, epoch):
        return os.path.join(self.backup_dir, f"epoch-{epoch:05d}.json")

    def _remove_checkpoint(self, epoch):
        for path in (self._marker(epoch), self._weights(epoch)):  # the marker first
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    # The best model.

    def best_value(self):
        """The monitored value of `best.keras`, or None when there is no best model yet."""
        record = _read_json(self.file(BEST_FILE))
        if record is None or not os.path.isfile(self.file(BEST_MODEL)):
            return None
        return record.get("value")

    def save_best(self, model, epoch, monitor, value):
        save_model(model, self.file(BEST_MODEL))
        _write_json(self.file(BEST_FILE), {"epoch": epoch, "monitor": monitor, "value": value, "time": _now()})

    # Logs and the end of the run.

    def trim_logs(self, epoch):
        """Drops the rows of epochs after `epoch` from the CSV logs (epochs counted from 1)."""
        for name in LOG_FILES:
            path = self.file(name)
            if not os.path.isfile(path):
                continue
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows or "epoch" not in rows[0]:
                continue
            column = rows[0].index("epoch")
            kept = [rows[0]] + [row for row in rows[1:] if len(row) > column and _int(row[column]) <= epoch]
            if len(kept) != len(rows):
                with open(path + ".tmp", "w", newline="") as f:
                    csv.writer(f).writerows(kept)
                os.replace(path + ".tmp", path)

    def history(self):
        """{column: [value per epoch]} from log.csv."""
        path = self.file("log.csv")
        if not os.path.isfile(path):
            return {}
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: [_finite(_float(row[key])) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}

    def finished(self):
        """metrics.json of a finished run, or None."""
        return _read_json(self.file(METRICS_FILE))

    def write_metrics(self, metrics):
        _write_json(self.file(METRICS_FILE), metrics)


def save_model(model, path):
    """Saves a `.keras` file by writing it aside and renaming it over the old one."""
    temp = path + ".tmp.keras"
    model.save(temp)
    os.replace(temp, path)


def _write_json(path, value):
    temp = path + ".tmp"
    with open(temp, "w") as f:
        json.dump(_finite(value), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(temp, path)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
