"""The lock of a run directory: one `fit` trains in a model directory at a time.

On a local disk (a plain path or a `file://` URL) `.lock` is held with an advisory `flock`,
which the operating system releases however the process ends. Object stores have no locks:
there `.lock` is an object naming its holder, refreshed while training (`_object_lock`).
"""

import contextlib
import datetime
import errno
import json
import os
import socket
import threading
import time

from gmsop_keras.training.errors import UsageError
from pipelines import storage

LOCK_FILE = ".lock"
LOCK_REFRESH_SECONDS = 60
LOCK_STALE_SECONDS = 600


@contextlib.contextmanager
def run_lock(path):
    """Holds `path/.lock` while training; a second `fit` on the same directory is refused.

    On a local disk, and on a `file://` URL (a local disk too), an advisory `flock`: the
    operating system releases it when the process ends, however it ends, so a killed run
    never leaves the directory locked. Other URLs (object stores) have no locks: there `.lock`
    is an object naming its holder, rewritten every `LOCK_REFRESH_SECONDS` while training and
    deleted at the end (`_object_lock`).
    """
    local = _local_path(path)
    if local is None:
        with _object_lock(path, storage.join(path, LOCK_FILE)):
            yield
        return
    import fcntl

    os.makedirs(local, exist_ok=True)
    with open(os.path.join(local, LOCK_FILE), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UsageError(f"{path} is in use by another fit ({holder}); wait for it to finish, "
                             "or train in another --model-dir") from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _local_path(path):
    """The local folder of a plain path or a `file://` URL; None for other URLs."""
    if not storage.is_url(path):
        return path
    return path[len("file://"):] if path.startswith("file://") else None


@contextlib.contextmanager
def _object_lock(path, lock_path):
    """The lock of a run directory on an object store: an object naming its holder.

    `.lock` holds `{"host", "pid", "started", "refreshed"}` and is rewritten every
    `LOCK_REFRESH_SECONDS` by a background thread while training, and deleted at the end. Another
    fit is refused while the object exists, unless it is stale: not refreshed for
    `LOCK_STALE_SECONDS` (its holder was killed or lost), or held by a process of this host
    that no longer runs; a stale lock is taken over with a note. Object stores offer no atomic
    create here, so two fits started within the same moment on two hosts may both start: the
    lock guards against the common mistake (a second command on a running directory), and the
    written lock is read back so that the later of two writers at least is refused.
    """
    holder = read_json(lock_path)
    if holder is not None:
        age = time.time() - float(holder.get("refreshed", 0))
        dead = holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid"))
        if age < LOCK_STALE_SECONDS and not dead:
            raise UsageError(
                f"{path} is in use by another fit (pid {holder.get('pid')} on {holder.get('host')}, started "
                f"{holder.get('started')}, last seen {age:.0f} s ago); wait for it to finish, or train in "
                f"another --model-dir; if no fit runs there, delete {lock_path}")
        print(f"note: taking over the stale lock {lock_path} (pid {holder.get('pid')} on {holder.get('host')}, "
              f"last seen {age:.0f} s ago)", flush=True)
    storage.makedirs(path)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": started, "refreshed": time.time()}
    write_json(lock_path, record)
    if read_json(lock_path) != record:
        raise UsageError(f"{path} was locked by another fit at the same moment; wait for it to finish, or "
                         "train in another --model-dir")
    stop = threading.Event()

    def refresh():
        while not stop.wait(LOCK_REFRESH_SECONDS):
            with contextlib.suppress(OSError):
                write_json(lock_path, {**record, "refreshed": time.time()})

    thread = threading.Thread(target=refresh, name="run-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        storage.remove(lock_path, missing_ok=True)


def write_json(path, record):
    """A run's small JSON record (the lock holder, a checkpoint marker, best.json, metrics.json) as
    one object write; its numbers must be finite."""
    storage.write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")


def read_json(path):
    """The JSON record at `path`, or None where there is none (or it is torn)."""
    try:
        return json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return None


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
