"""Fingerprints of source files, so that a resumed conversion notices a file that changed meanwhile.

A fingerprint is `"<size>:<mtime_ns>:<digest>"`, the digest the first 16 hex digits of the SHA-256
of the file's first and last 64 KiB (with the size and mtime in it: the whole content for files of
up to 128 KiB, i.e. almost every image; for the 1.6 GB ImageNet-64 release files, their head and
tail blocks). It costs one stat and at most 128 KiB of reading per file, from the page cache when
the file was just read for conversion.
"""

import hashlib

from pipelines import storage
from pipelines.errors import DataError

BLOCK_BYTES = 64 << 10


def fingerprint(path):
    """`"size:mtime_ns:digest"` of the file at `path`; DataError naming it when it cannot be read."""
    try:
        size, mtime = storage.size(path), storage.mtime_ns(path)
        digest = hashlib.sha256()
        with storage.open_file(path, "rb") as f:
            digest.update(f.read(BLOCK_BYTES))
            if size > 2 * BLOCK_BYTES:
                f.seek(size - BLOCK_BYTES)
            digest.update(f.read(BLOCK_BYTES))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); restore it, or convert again "
                        "with --overwrite") from None
    return f"{size}:{mtime}:{digest.hexdigest()[:16]}"


def fingerprint_or_none(path):
    """`fingerprint(path)`, or None when the file cannot be read (the reader reports it, or skips it)."""
    try:
        return fingerprint(path)
    except DataError:
        return None
