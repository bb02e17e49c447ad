"""The one way this project writes a local file: aside under a hidden temporary name, then renamed.

`written_aside(path)` yields a temporary path beside `path`; the caller writes the whole file
there, and on success it is renamed over `path` (`os.replace`, atomic on one file system), so a
reader sees the old file or the new one, never a part. On any failure (a full disk, a read-only
folder, an exception in the caller, Ctrl-C) the temporary file is removed and the error raised
again as an `OSError` naming `path` and the cause (`No space left on device`, `Permission
denied`, ...), which the commands print as one line (`write_failure`).

The temporary name is hidden and does not end in the final extension, so that no glob or
listing takes it for a finished file: `best.keras` is written as `.best.keras.tmp-<pid>` (plus
the `suffix` a writer insists on, `.keras` for Keras' `model.save`). `is_temporary` recognises
these names, so that a process killed while writing leaves nothing that is read, and a later run
can delete what it left. URLs are not handled here: `pipelines.storage.written_aside` writes them
in place (object stores have no rename), completed by the marker the caller writes after them.
"""

import contextlib
import errno
import os
import re

# Errors that mean "this place cannot take the file", not a bug: each with the fix a user can make.
WRITE_ERRNOS = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EACCES: "make the folder writable",
    errno.EPERM: "make the folder writable",
    errno.EROFS: "the file system is mounted read-only",
}
_TEMPORARY = re.compile(r"^\..+\.tmp-\d+(\.[A-Za-z0-9.]+)?$")


def temporary_path(path, suffix=""):
    """`dir/.name.tmp-<pid><suffix>`: hidden, per process, not ending in `name`'s extension."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")


def is_temporary(name):
    """Whether the file name `name` is a temporary file of `written_aside` (of any process)."""
    return bool(_TEMPORARY.match(os.path.basename(name)))


@contextlib.contextmanager
def written_aside(path, suffix=""):
    """Yields a temporary local path to write `path` at; renames it over `path` on success.

    On any failure the temporary file is removed; an `OSError` is raised again naming `path`
    (the file the user asked for, not the temporary one) with its errno and cause.
    """
    temp = temporary_path(path, suffix)
    try:
        with naming_path(path):
            yield temp
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


@contextlib.contextmanager
def naming_path(path):
    """Raises an `OSError` from the block again naming `path` (`f.write` on a full disk names none)."""
    try:
        yield
    except OSError as error:
        if error.errno is None or error.filename == path:
            raise
        raise OSError(error.errno, os.strerror(error.errno), path) from error


def errno_of(message, default=errno.EIO):
    """The errno a file-system error message (TensorFlow's, which carry none) stands for."""
    for code in WRITE_ERRNOS:
        if os.strerror(code) in message:
            return code
    return default


def write_failure(error, flag=None):
    """The one line (without `error: `) for an `OSError` that means "cannot write here", else None.

    `flag` names the command's option for the output place (`--model-dir`, `--output`), for the hint.
    """
    code = getattr(error, "errno", None)
    if not isinstance(error, OSError) or code not in WRITE_ERRNOS:
        return None
    cause = os.strerror(code)  # h5py's strerror is a paragraph
    where = f" {error.filename}" if error.filename else ""
    hint = WRITE_ERRNOS[code] + (f", or choose another {flag}" if flag else ", or write elsewhere")
    return f"cannot write{where}: {cause}; {hint}"
