"""The one write helper: aside, renamed on success, removed on any failure, errors naming the file."""

import errno
import os

import pytest

from pipelines import storage
from pipelines.write_aside import is_temporary, temporary_path, write_failure, written_aside
from tests.small_disk import small_disk


def test_a_failed_write_removes_its_partial_file_and_names_the_final_path(tmp_path):
    path = str(tmp_path / "best.keras")
    storage.write_bytes(path, b"good")
    with pytest.raises(OSError) as raised:
        with written_aside(path, suffix=".keras") as temp:
            with open(temp, "wb") as f:
                f.write(b"half a fi")
            raise OSError(errno.ENOSPC, "No space left on device")  # as zipfile raises it: no file name
    assert (raised.value.errno, raised.value.strerror, raised.value.filename) == (
        errno.ENOSPC, "No space left on device", path)
    assert sorted(os.listdir(tmp_path)) == ["best.keras"]
    assert open(path, "rb").read() == b"good"


def test_the_temporary_name_is_hidden_and_no_glob_takes_it_for_a_finished_file(tmp_path):
    temp = temporary_path(str(tmp_path / "best.keras"), ".keras")
    assert os.path.basename(temp) == f".best.keras.tmp-{os.getpid()}.keras"
    assert is_temporary(temp) and is_temporary(".train-00000-of-00004.tfrecord.tmp-77")
    assert not is_temporary("best.keras") and not is_temporary(".lock") and not is_temporary("x.tmp-1")
    open(temp, "wb").close()
    storage.write_bytes(str(tmp_path / "final.keras"), b"x")
    assert storage.glob(str(tmp_path / "*.keras")) == [str(tmp_path / "final.keras")]


def test_write_failure_is_one_line_naming_the_file_the_cause_and_the_fix():
    full = OSError(errno.ENOSPC, "ignored", "/runs/a/best.keras")
    assert write_failure(full, "--model-dir") == (
        "cannot write /runs/a/best.keras: No space left on device; free space on that disk, "
        "or choose another --model-dir")
    assert write_failure(PermissionError(errno.EACCES, "x", "/ro/.lock")) == (
        "cannot write /ro/.lock: Permission denied; make the folder writable, or write elsewhere")
    assert write_failure(FileNotFoundError(errno.ENOENT, "x", "/a")) is None
    assert write_failure(ValueError("x")) is None


def test_a_real_full_disk_keeps_the_old_file_and_leaves_nothing_beside_it(tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        path = os.path.join(disk, "manifest.json")
        storage.write_text(path, "old\n")
        with pytest.raises(OSError) as raised:
            storage.write_text(path, "x" * 200_000)
        assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, path)
        assert os.listdir(disk) == ["manifest.json"]
        assert storage.read_text(path) == "old\n"
        with pytest.raises(OSError) as raised:
            storage.append_text(os.path.join(disk, "log.csv"), "y" * 200_000)
        assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, os.path.join(disk, "log.csv"))


def test_a_conversion_deletes_the_temporary_files_a_killed_run_left(tmp_path):
    from pipelines.resume import PLAN_NAME, resume_state

    left = tmp_path / ".train-00001-of-00004.tfrecord.tmp-999999"
    left.write_bytes(b"half a shard")
    (tmp_path / "notes.txt").write_text("the user's")
    assert resume_state(None, str(tmp_path), [], {"shards": []}, False) == {}
    assert sorted(os.listdir(tmp_path)) == [PLAN_NAME, "notes.txt"]
