"""`python -m pipelines.convert` on a disk that fills: one line naming the file and the cause, exit 2,
no partial file beside the finished shards, and the same command resumes once there is space."""

import json
import os
import re
import subprocess
import sys
import textwrap

from pipelines import verify_manifest
from tests.small_disk import hidden_files, small_disk

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC = ["synthetic", "--num-classes", "4", "--train-per-class", "200", "--val-per-class", "10",
             "--image-size", "16", "--min-shards", "4", "--workers", "1", "--no-progress"]
# The hook: TensorFlow's writer fails like a full disk (after writing part of it) in the third shard.
FULL_AT_THIRD_SHARD = """
import runpy, sys
import tensorflow as tf
Real = tf.io.TFRecordWriter
opened = []
class Filling(Real):
    def __init__(self, path, *args):
        super().__init__(path, *args)
        opened.append(path)
    def write(self, record):
        super().write(record)
        if len(opened) == 3:
            self.flush()
            raise tf.errors.ResourceExhaustedError(None, None, opened[-1] + "; No space left on device")
tf.io.TFRecordWriter = Filling
sys.argv = ["pipelines.convert"] + sys.argv[1:]
runpy.run_module("pipelines.convert", run_name="__main__")
"""


def convert(*args, hook=None):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    command = ["-c", textwrap.dedent(hook)] if hook else ["-m", "pipelines.convert"]
    return subprocess.run([sys.executable, *command, *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_a_disk_filling_in_a_shard_names_it_keeps_the_finished_ones_and_resumes(tmp_path):
    output = tmp_path / "out"
    result = convert(*SYNTHETIC, "--output", output, hook=FULL_AT_THIRD_SHARD)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {output}/train-00002-of-00004.tfrecord: No space left on device; free space on "
        "that disk, or choose another --output; finished shards are kept, run the same command again to resume")
    assert hidden_files(output) == [".convert-plan.json", ".convert-progress.jsonl"]
    assert sorted(n for n in os.listdir(output) if not n.startswith(".")) == [
        "train-00000-of-00004.tfrecord", "train-00001-of-00004.tfrecord"]
    kept = {n: os.stat(output / n).st_mtime_ns for n in os.listdir(output) if n.endswith(".tfrecord")}

    result = convert(*SYNTHETIC, "--output", output)
    assert result.returncode == 0, result.stderr
    assert all(os.stat(output / n).st_mtime_ns == t for n, t in kept.items())  # not written again
    assert verify_manifest(str(output), checksums=True)["splits"]["train"]["num_examples"] == 800


def test_a_real_full_disk_during_the_shards(tmp_path):
    with small_disk(tmp_path / "disk", "400k") as disk:
        output = os.path.join(disk, "out")
        result = convert(*SYNTHETIC, "--output", output)  # about 900 kB of shards
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert re.fullmatch(re.escape(f"error: cannot write {output}/") + r"[\w.-]+" + re.escape(
            ": No space left on device; free space on that disk, or choose another --output; finished "
            "shards are kept, run the same command again to resume"), line), line
        assert [n for n in hidden_files(output) if ".tmp-" in n] == []
        assert not os.path.exists(os.path.join(output, "manifest.json"))
        progress = open(os.path.join(output, ".convert-progress.jsonl")).read().splitlines()
        finished = {json.loads(row)["file"] for row in progress}
        assert {n for n in os.listdir(output) if n.endswith(".tfrecord")} == finished
