"""Files on a local disk or on any file system TensorFlow handles, behind one small set of calls.

A path is either a plain local path or a URL with a scheme: `gs://bucket/runs/a`, `hdfs://...`,
`s3://...` (with TensorFlow's S3 plugin installed), `file:///abs/path`, `ram://name` (in memory,
for tests). Plain paths go to `os`, so a command that only touches local files answers before
TensorFlow loads; URLs go to `tf.io.gfile`, imported on first use. Errors come back as `OSError`
(`FileNotFoundError` for a missing file) on both kinds, so callers catch one thing.

Object stores have no atomic rename (on GCS a "rename" is a copy and a delete), so completion in
this project never relies on one: a payload is written under its final name and a small marker
(or manifest) written after it says it is complete. A single small object write is atomic on object
stores; on local disks every whole-file write goes through `written_aside` (write aside, rename,
remove the temporary file on any failure; `pipelines.write_aside`), which is cheap there.

Keras' own `save`, `save_weights`, `load_model`, `load_weights` and `export` route every path with
a scheme (`.*://`) to `tf.io.gfile` themselves (Keras 3.15, `file_utils.is_remote_path`): checked
for `file://` and `ram://`, so they take these paths as they are.
"""

import contextlib
import fnmatch
import os
import posixpath
import re
import shutil

from pipelines.startup import load_tensorflow
from pipelines.write_aside import errno_of, naming_path, written_aside as _written_aside

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path):
    """Whether `path` names a file system by a scheme (`gs://...`, `file://...`, `ram://...`)."""
    return bool(_URL.match(str(path)))


def _gfile():
    return load_tensorflow().io.gfile


@contextlib.contextmanager
def _as_os_errors(path):
    """TensorFlow's file-system errors as the `OSError`s that `os` raises."""
    tf = load_tensorflow()
    try:
        yield
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(2, error.message.split("\n")[0], str(path)) from None
    except tf.errors.OpError as error:
        raise OSError(errno_of(error.message), error.message.split("\n")[0], str(path)) from None


def join(path, *names):
    """`os.path.join` for local paths; `/`-joined for URLs."""
    if is_url(path):
        return posixpath.join(str(path), *names)
    return os.path.join(path, *names)


def basename(path):
    return posixpath.basename(str(path).rstrip("/")) if is_url(path) else os.path.basename(os.path.normpath(path))


def dirname(path):
    """The folder holding `path` (absolute for local paths)."""
    if is_url(path):
        return posixpath.dirname(str(path).rstrip("/"))
    return os.path.dirname(os.path.abspath(path))


def absolute(path):
    """An absolute local path, or the URL unchanged."""
    return str(path) if is_url(path) else os.path.abspath(path)


def exists(path):
    if not is_url(path):
        return os.path.exists(path)
    with _as_os_errors(path):
        return _gfile().exists(path)


def isdir(path):
    if not is_url(path):
        return os.path.isdir(path)
    with _as_os_errors(path):
        return _gfile().isdir(path)


def isfile(path):
    if not is_url(path):
        return os.path.isfile(path)
    gfile = _gfile()
    with _as_os_errors(path):
        return gfile.exists(path) and not gfile.isdir(path)


def makedirs(path):
    """Creates `path` and its parents; nothing when it exists. (Object stores have no real folders.)"""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        return
    with _as_os_errors(path):
        _gfile().makedirs(path)


def listdir(path):
    """Names in the folder `path` (no trailing `/` on sub-folders); FileNotFoundError if there is none."""
    if not is_url(path):
        return os.listdir(path)
    with _as_os_errors(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]


def glob(pattern):
    """Paths matching `pattern` (`*`, `?` in the last component), sorted; as in a shell, hidden names
    (a temporary file of `written_aside` among them) only for a pattern starting with `.`."""
    folder, name = (posixpath.split(pattern) if is_url(pattern) else os.path.split(pattern))
    if not isdir(folder):
        return []
    return sorted(join(folder, found) for found in listdir(folder)
                  if fnmatch.fnmatchcase(found, name) and (name.startswith(".") or not found.startswith(".")))


def remove(path, missing_ok=False):
    """Deletes a file."""
    try:
        if not is_url(path):
            os.remove(path)
            return
        with _as_os_errors(path):
            _gfile().remove(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def rmtree(path):
    """Deletes a folder and everything in it; nothing when it does not exist."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    if exists(path):
        with _as_os_errors(path):
            _gfile().rmtree(path)


def size(path):
    """Size in bytes."""
    if not is_url(path):
        return os.path.getsize(path)
    with _as_os_errors(path):
        return _gfile().stat(path).length


def mtime_ns(path):
    """Modification time in nanoseconds (0 where the file system keeps none, such as `ram://`)."""
    if not is_url(path):
        return os.stat(path).st_mtime_ns
    with _as_os_errors(path):
        return int(_gfile().stat(path).mtime_nsec)


@contextlib.contextmanager
def open_file(path, mode="r", newline=None, encoding="utf-8"):
    """`open` for local paths, `tf.io.gfile.GFile` for URLs; modes r, w, a, with b for bytes.

    Appending to an object on an object store rewrites it: append only to small files.
    """
    if not is_url(path):
        kwargs = {} if "b" in mode else {"newline": newline, "encoding": encoding}
        with open(path, mode, **kwargs) as f:
            yield f
        return
    with _as_os_errors(path):
        if "w" in mode and path.startswith("ram://") and _gfile().exists(path):
            _gfile().remove(path)  # TensorFlow's ram:// appends on "w" instead of truncating
        f = _gfile().GFile(path, mode)
        with f:
            if "b" in mode:
                yield f
            else:
                yield _Text(f, newline)


class _Text:
    """A text view of a GFile: GFile reads `str` in text mode but writes whatever it is given."""

    def __init__(self, f, newline):
        self._f = f
        self._newline = newline

    def read(self, n=-1):
        text = self._f.read(n)
        return text if self._newline == "" else text.replace("\r\n", "\n")

    def readline(self):
        return self._f.readline()

    def __iter__(self):
        return iter(self.read().splitlines(keepends=True))

    def write(self, text):
        self._f.write(text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self._f.write(line)

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def flush(self):
        self._f.flush()


def read_text(path):
    with open_file(path) as f:
        return f.read()


def read_bytes(path):
    with open_file(path, "rb") as f:
        return f.read()


def write_text(path, text, newline=None):
    """Writes a small text file so that a reader sees the old content or the new, never a part.

    Local: written aside, then renamed over the old one. URL: one object write, which object
    stores make visible whole or not at all (no rename there: on GCS it would be copy + delete).
    """
    _write_whole(path, text, "w", newline=newline)


def write_bytes(path, data):
    """`write_text` for bytes: a reader sees the old content or the new, never a part."""
    _write_whole(path, data, "wb")


def _write_whole(path, data, mode, newline=None):
    with written_aside(path) as temp, open_file(temp, mode, newline=newline) as f:
        f.write(data)


@contextlib.contextmanager
def written_aside(path, suffix=""):
    """Yields where to write the whole file `path`: on a local disk a hidden temporary file that is
    renamed over `path` on success and removed on any failure (`pipelines.write_aside`); on a URL
    `path` itself, written in place, which the caller's marker written after it completes."""
    if is_url(path):
        yield path
        return
    with _written_aside(path, suffix) as temp:
        yield temp


def append_text(path, text):
    """Adds `text` at the end of a small text file (creating it). Local: an append. URL: the file
    is read and written again whole, since object stores cannot append."""
    if not is_url(path):
        with naming_path(path), open(path, "a", newline="", encoding="utf-8") as f:
            f.write(text)
        return
    old = read_text(path) if exists(path) else ""
    with open_file(path, "w") as f:
        f.write(old + text)


def copy(source, target, overwrite=True):
    """Copies a file between any two file systems (local paths and URLs mixed)."""
    if not is_url(source) and not is_url(target):
        if not overwrite and os.path.exists(target):
            raise FileExistsError(17, "File exists", target)
        shutil.copyfile(source, target)
        return
    with _as_os_errors(source):
        _gfile().copy(source, target, overwrite=overwrite)


@contextlib.contextmanager
def local_path(path, suffix=""):
    """A local file holding the content of `path` (itself when it is local), for readers that need one."""
    if not is_url(path):
        yield path
        return
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "file" + suffix)
        copy(path, local)
        yield local
