"""A real small file system for the full-disk tests: a tmpfs mounted for the test, or a skip saying why."""

import contextlib
import os
import shutil
import subprocess

import pytest


@contextlib.contextmanager
def small_disk(path, size):
    """Mounts a tmpfs of `size` (e.g. "1M") at the new folder `path`; skips the test where mount is refused."""
    os.makedirs(path)
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip(f"a full disk needs a small file system: mount -t tmpfs needs root and mount(8) "
                    f"(euid {os.geteuid()}, mount {mount})")
    result = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs was refused here: {result.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def hidden_files(folder):
    """Names starting with `.` under `folder` other than the run lock: temporary files left behind."""
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder)
                  for n in names if n.startswith(".") and n not in (".lock",))
