"""`fit` where files cannot be written: a full disk during a save, a read-only model directory.

Each is a fresh `python -m gmsop_keras.fit` process; the failure is injected at the moment that
matters (always run), and also made real where this machine allows it (a small tmpfs, a folder
made read-only for a process without CAP_DAC_OVERRIDE), else skipped with the reason.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.small_disk import hidden_files, small_disk

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
TINY = ["--backbone", "resnet18", "--head", "gap", "--lr", "0.01", "--seed", "0", "--verbose", "2",
        "--batch-size", "16"]
# The second .keras save writes part of its file, then the disk is full (as zipfile reports it: no
# file name). The hook records best.keras as it was and the file Keras was given.
FULL_AT_SECOND_SAVE = """
import errno, hashlib, json, os, runpy, sys
import keras
real_save, calls = keras.Model.save, []
def save(self, path, *args, **kwargs):
    calls.append(path)
    if len(calls) < 2:
        return real_save(self, path, *args, **kwargs)
    best = os.path.join(os.path.dirname(path), "best.keras")
    with open(os.environ["HOOK_STATE"], "w") as f:
        json.dump({"temp": path, "best": hashlib.sha256(open(best, "rb").read()).hexdigest()}, f)
    with open(path, "wb") as f:
        f.write(b"PK\\x03\\x04 half a zip")
    raise OSError(errno.ENOSPC, "No space left on device")
keras.Model.save = save
sys.argv = ["gmsop_keras.fit"] + sys.argv[1:]
runpy.run_module("gmsop_keras.fit", run_name="__main__")
"""
# The lock file cannot be created, as in a folder that is not writable.
LOCK_REFUSED = """
import builtins, errno, runpy, sys
real_open = builtins.open
def refusing_open(file, *args, **kwargs):
    if str(file).endswith("/.lock"):
        raise PermissionError(errno.EACCES, "Permission denied", str(file))
    return real_open(file, *args, **kwargs)
builtins.open = refusing_open
sys.argv = ["gmsop_keras.fit"] + sys.argv[1:]
runpy.run_module("gmsop_keras.fit", run_name="__main__")
"""


def fit(data, model_dir, epochs, hook=None, prefix=(), env=None):
    command = ["-c", textwrap.dedent(hook)] if hook else ["-m", "gmsop_keras.fit"]
    args = ["--dataset", data, "--model-dir", str(model_dir), "--epochs", str(epochs), *TINY]
    return subprocess.run([*prefix, sys.executable, *command, *args], cwd=ROOT, env=dict(ENV, **(env or {})),
                          capture_output=True, text=True, timeout=300)


def assert_permission_denied(result, named):
    """`fit` ended in the one line naming the file it could not write, without a traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {named}: Permission denied; make the folder writable, "
        "or choose another --model-dir")
    assert "Traceback" not in result.stderr


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_full_disk_during_a_save_is_one_line_and_keeps_best_keras(tiny_synthetic, tmp_path):
    model_dir, state = tmp_path / "run", tmp_path / "state.json"
    # One epoch: best.keras is the first save, final.keras the second.
    result = fit(tiny_synthetic, model_dir, 1, hook=FULL_AT_SECOND_SAVE, env={"HOOK_STATE": str(state)})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    hook = json.loads(state.read_text())
    assert re.fullmatch(r"\.final\.keras\.tmp-\d+\.keras", os.path.basename(hook["temp"])), hook
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {model_dir}/final.keras: No space left on device; free space on that disk, "
        "or choose another --model-dir")
    assert hidden_files(model_dir) == []  # the half-written file is gone
    assert digest(model_dir / "best.keras") == hook["best"]  # the best model is untouched
    assert not (model_dir / "metrics.json").exists() and not (model_dir / "final.keras").exists()

    result = fit(tiny_synthetic, model_dir, 1)  # space again: the same command finishes the run
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((model_dir / "metrics.json").read_text())["epochs"] == 1
    assert digest(model_dir / "best.keras") == hook["best"]


def test_a_real_small_disk_filling_during_a_save(tiny_synthetic, tmp_path):
    # The tiny run's checkpoint and best.keras are 5.8 and 5.9 MB: epoch 1's fit in 14 MB, epoch 2's do not.
    with small_disk(tmp_path / "disk", "14M") as disk:
        model_dir = os.path.join(disk, "run")
        result = fit(tiny_synthetic, model_dir, 2)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        # Epoch 2 writes its checkpoint, or first best.keras aside when it is better: neither fits.
        assert result.stderr.strip().splitlines()[-1] in [
            f"error: cannot write {model_dir}/{name}: No space left on device; free space on that disk, "
            "or choose another --model-dir" for name in ("backup/epoch-00002.weights.h5", "best.keras")]
        assert hidden_files(model_dir) == []
        import keras

        import gmsop_keras  # noqa: F401 (registers the layers)

        assert json.loads(open(os.path.join(model_dir, "best.json")).read())["epoch"] == 1
        keras.saving.load_model(os.path.join(model_dir, "best.keras"))


def test_a_lock_file_that_cannot_be_created_is_one_line(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    result = fit(tiny_synthetic, model_dir, 1, hook=LOCK_REFUSED)
    assert_permission_denied(result, f"{model_dir}/.lock")


def test_a_read_only_model_dir_for_real(tiny_synthetic, tmp_path):
    prefix = []
    if os.geteuid() == 0:  # root ignores permissions unless it gives up CAP_DAC_OVERRIDE
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and setpriv(1) (util-linux) is missing to drop CAP_DAC_OVERRIDE")
        drop = "-dac_override,-dac_read_search"
        prefix = [setpriv, "--bounding-set", drop, "--inh-caps", drop]
    existing, parent = tmp_path / "existing", tmp_path / "parent"
    existing.mkdir()
    parent.mkdir()
    for folder in (existing, parent):
        folder.chmod(0o555)
    try:
        for model_dir, named in ((existing, existing / ".lock"), (parent / "new", parent / "new")):
            result = fit(tiny_synthetic, model_dir, 1, prefix=prefix)
            assert_permission_denied(result, named)
    finally:
        for folder in (existing, parent):
            folder.chmod(0o755)


def test_taking_the_lock_deletes_the_temporary_files_a_killed_fit_left(tmp_path):
    from gmsop_keras.training.run_directory import RunDirectory

    (tmp_path / "backup").mkdir()
    left = [tmp_path / ".best.keras.tmp-999999.keras", tmp_path / "backup" / ".epoch-00002.weights.h5.tmp-999999"]
    kept = [tmp_path / "best.keras", tmp_path / ".notes", tmp_path / "backup" / "epoch-00001.json"]
    for path in left + kept:
        path.write_bytes(b"x")
    with RunDirectory(str(tmp_path)).lock():
        assert [path.exists() for path in left + kept] == [False, False, True, True, True]
