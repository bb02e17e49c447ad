"""pipelines.storage: the same calls on local paths, `ram://` (in memory) and `file://` URLs."""

import csv
import io
import os
import uuid

import pytest

from pipelines import storage


@pytest.fixture(params=["local", "file", "ram"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    if request.param == "file":
        return "file://" + str(tmp_path)
    return f"ram://storage-{uuid.uuid4().hex}"


def test_is_url_tells_schemes_from_paths():
    assert [storage.is_url(p) for p in ("gs://b/x", "file:///t", "ram://a", "s3://b", "/tmp/a", "runs/a",
                                        "C:/x")] == [True, True, True, True, False, False, False]
    assert storage.join("gs://b/runs", "a", "b.json") == "gs://b/runs/a/b.json"
    assert storage.basename("gs://b/runs/a/") == "a" and storage.dirname("gs://b/runs/a") == "gs://b/runs"


def test_files_folders_and_listing(root):
    folder = storage.join(root, "a", "b")
    assert not storage.exists(folder) and not storage.isdir(folder)
    storage.makedirs(folder)
    storage.makedirs(folder)  # again: nothing
    assert storage.isdir(folder) and not storage.isfile(folder)
    path = storage.join(folder, "x.json")
    storage.write_text(path, '{"a": 1}\n')
    storage.write_text(path, '{"a": 2}\n')  # replaced whole
    assert storage.read_text(path) == '{"a": 2}\n' and storage.isfile(path)
    assert storage.size(path) == 9
    with storage.open_file(storage.join(folder, "y.bin"), "wb") as f:
        f.write(bytes(range(256)))
    assert storage.read_bytes(storage.join(folder, "y.bin")) == bytes(range(256))
    with storage.open_file(storage.join(folder, "log.txt"), "a") as f:
        f.write("one\n")
    with storage.open_file(storage.join(folder, "log.txt"), "a") as f:
        f.write("two\n")
    with storage.open_file(storage.join(folder, "log.txt")) as f:
        assert list(f) == ["one\n", "two\n"]
    assert sorted(storage.listdir(folder)) == ["log.txt", "x.json", "y.bin"]
    assert sorted(storage.listdir(storage.join(root, "a"))) == ["b"]
    assert storage.glob(storage.join(folder, "*.json")) == [path]
    storage.copy(path, storage.join(folder, "z.json"))
    assert storage.read_text(storage.join(folder, "z.json")) == '{"a": 2}\n'
    storage.remove(path)
    storage.remove(path, missing_ok=True)
    with pytest.raises(FileNotFoundError):
        storage.remove(path)
    with pytest.raises(FileNotFoundError):
        storage.read_text(path)
    with pytest.raises(FileNotFoundError):
        storage.listdir(storage.join(root, "nowhere"))
    storage.rmtree(storage.join(root, "a"))
    storage.rmtree(storage.join(root, "a"))  # gone: nothing
    assert not storage.exists(folder)


def test_csv_round_trip_keeps_rows(root):
    rows = [["epoch", "loss"], ["1", "0.5"], ["2", "0.25"]]
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    storage.makedirs(root)
    path = storage.join(root, "log.csv")
    storage.write_text(path, text.getvalue(), newline="")
    with storage.open_file(path, newline="") as f:
        assert list(csv.reader(f)) == rows


def test_copy_across_file_systems_and_local_path(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"\x00\x01payload")
    remote = f"ram://copy-{uuid.uuid4().hex}/a.bin"
    storage.makedirs(storage.dirname(remote))
    storage.copy(str(source), remote)
    with storage.local_path(remote, ".bin") as local:
        assert not storage.is_url(local) and open(local, "rb").read() == b"\x00\x01payload"
    assert not os.path.exists(local)  # the temporary copy is gone
    with storage.local_path(str(source)) as same:
        assert same == str(source)


def test_local_paths_do_not_load_tensorflow(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from pipelines import storage; storage.makedirs(sys.argv[1] + '/d'); "
            "storage.write_text(sys.argv[1] + '/d/x', 'y'); assert storage.listdir(sys.argv[1] + '/d') == ['x']; "
            "print('tensorflow' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": root}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
