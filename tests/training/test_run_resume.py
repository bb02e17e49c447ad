"""Resuming a run directory as a user would, each `fit` a fresh process: a target below what was
trained, the same paths spelled differently, a run whose first epoch failed, a damaged backup."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from gmsop_keras.training.run_directory import canonical_path
from tests.run_signals import signal_when

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
TINY = ["--backbone", "resnet18", "--head", "gap", "--lr", "0.01", "--seed", "0", "--batch-size", "16",
        "--verbose", "2"]


def fit(data, model_dir, epochs, *extra, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "gmsop_keras.fit", "--dataset", str(data), "--model-dir",
                           str(model_dir), "--epochs", str(epochs), *TINY, *extra],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def epochs_in(model_dir):
    with open(os.path.join(model_dir, "log.csv")) as f:
        return [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]


def error_line(result):
    """The one line a refused command prints (nothing else on stderr, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tiny_synthetic, tmp_path_factory):
    """A run of 2 epochs of 2 steps that finished; it keeps the backups of epochs 1 and 2."""
    model_dir = tmp_path_factory.mktemp("runs") / "finished"
    result = fit(tiny_synthetic, model_dir, 2, "--steps-per-epoch", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_fewer_epochs_than_a_killed_run_trained_are_refused_before_training(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    command = [sys.executable, "-m", "gmsop_keras.fit", "--dataset", tiny_synthetic, "--model-dir", str(model_dir),
               "--epochs", "6", "--steps-per-epoch", "2", *TINY]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_when(process, model_dir / "backup" / "epoch-00002.json")  # epoch 2's backup is complete
    process.wait()
    trained = max(int(name[6:11]) for name in os.listdir(model_dir / "backup") if name.endswith(".json"))
    assert 2 <= trained < 6
    backup = sorted(os.listdir(model_dir / "backup"))

    result = fit(tiny_synthetic, model_dir, 1, "--steps-per-epoch", "2")
    assert error_line(result) == (
        f"error: {model_dir} holds a run trained for {trained} epochs, more than --epochs 1; give --epochs "
        f"{trained} or more to continue it, or another --model-dir to train 1 epoch from the start")
    assert sorted(os.listdir(model_dir / "backup")) == backup and not (model_dir / "metrics.json").exists()

    # The first way on: --epochs as many as were trained ends the run there, and says so truthfully.
    result = fit(tiny_synthetic, model_dir, trained, "--steps-per-epoch", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"after epoch {trained} of {trained}" in result.stdout and "Epoch " not in result.stdout
    assert epochs_in(model_dir) == list(range(1, trained + 1))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs"] == trained and len(metrics["history"]["loss"]) == trained


def test_fewer_epochs_than_a_finished_run_are_refused(finished, tiny_synthetic):
    before = (finished / "metrics.json").read_text()
    result = fit(tiny_synthetic, finished, 1, "--steps-per-epoch", "2")
    assert error_line(result) == (
        f"error: {finished} holds a run trained for 2 epochs, more than --epochs 1; give --epochs 2 or more "
        "to continue it, or another --model-dir to train 1 epoch from the start")
    assert (finished / "metrics.json").read_text() == before


def test_a_damaged_newest_backup_is_named_and_the_run_resumes_from_the_one_before(finished, tiny_synthetic,
                                                                                  tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(finished, model_dir)
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    (model_dir / "config.yaml").write_text(yaml.safe_dump(dict(config, model_dir=str(model_dir))))  # moved
    damaged = model_dir / "backup" / "epoch-00002.weights.h5"
    damaged.write_bytes(damaged.read_bytes()[:100])
    result = fit(tiny_synthetic, model_dir, 3, "--steps-per-epoch", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: backup {damaged} is damaged (")
    assert warnings[0].endswith("); resuming from the backup of epoch 1"), warnings
    assert "after epoch 1 of 3" in result.stdout and "Epoch 2/3" in result.stdout and "Epoch 1/3" not in result.stdout
    assert epochs_in(model_dir) == [1, 2, 3]  # epoch 2 trained again, its old row replaced
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and len(metrics["history"]["loss"]) == 3
    assert sorted(os.listdir(model_dir / "backup"))[-2:] == ["epoch-00003.json", "epoch-00003.weights.h5"]


def test_the_same_paths_spelled_differently_resume_the_run(tiny_synthetic, tmp_path):
    data = os.path.relpath(tiny_synthetic, tmp_path)
    result = fit(data, "runs/x", 1, "--steps-per-epoch", "1", "--validation-steps", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "runs" / "x" / "config.yaml").read_text())
    assert (saved["model_dir"], saved["dataset"]) == (str(tmp_path / "runs" / "x"), tiny_synthetic)

    # Another working directory, absolute paths with a trailing slash and a ./ in them.
    result = fit(tiny_synthetic + "/", f"{tmp_path}/./runs/x/", 2, "--steps-per-epoch", "1",
                 "--validation-steps", "1", cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after epoch 1 of 2" in result.stdout and epochs_in(tmp_path / "runs" / "x") == [1, 2]

    # A config.yaml of an older version recorded the paths as given: relative ones resume from the same
    # working directory, however they are spelled now.
    config = tmp_path / "runs" / "x" / "config.yaml"
    config.write_text(yaml.safe_dump(dict(saved, model_dir="runs/x", dataset=data, epochs=2)))
    result = fit(f"./{data}/", "./runs/x/", 2, "--steps-per-epoch", "1", "--validation-steps", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds a finished run of 2 epochs" in result.stdout


def test_canonical_paths_of_urls_keep_scheme_and_bucket():
    assert canonical_path("gs://bucket//runs//x/") == canonical_path("gs://bucket/runs/x") == "gs://bucket/runs/x"
    assert canonical_path("gs://bucket/") == "gs://bucket"
    assert canonical_path("gs://other/runs/x") != canonical_path("gs://bucket/runs/x")
    assert canonical_path("file:///tmp//x/") == "file:///tmp/x"
    assert canonical_path("runs/x/") == os.path.join(os.getcwd(), "runs", "x")


def _edited_copy(tiny_synthetic, folder, edit):
    shutil.copytree(tiny_synthetic, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(edit(manifest))
    return folder


def test_a_manifest_that_names_too_few_classes_stops_in_one_line_and_pins_nothing(tiny_synthetic, tmp_path):
    def two_classes(manifest):  # consistent in itself: only the records show that it is wrong
        return json.dumps(dict(manifest, num_classes=2, class_names=manifest["class_names"][:2]))

    edited = _edited_copy(tiny_synthetic, tmp_path / "edited", two_classes)
    model_dir = tmp_path / "run"
    result = fit(edited, model_dir, 1, "--steps-per-epoch", "1", "--validation-steps", "1")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1] == (
        f"error: {edited}/manifest.json: the records hold label 3, but the manifest names 2 classes (labels 0 to "
        "1); the manifest was edited or belongs to other shards: restore it, or convert the dataset again "
        "(python -m pipelines.convert ... --overwrite)")
    assert not (model_dir / "config.yaml").exists()

    result = fit(tiny_synthetic, model_dir, 1, "--steps-per-epoch", "1", "--validation-steps", "1")
    assert result.returncode == 0, result.stderr[-3000:]  # the corrected command: another dataset, same dir
    assert yaml.safe_load((model_dir / "config.yaml").read_text())["dataset"] == tiny_synthetic


@pytest.mark.parametrize("edit, cause, rerun", [
    (lambda m: json.dumps(m)[:200], "unreadable manifest (Unterminated string", True),
    (lambda m: json.dumps(dict(m, num_classes=3)), "num_classes is 3 but class_names holds 4; the manifest was "
                                                   "edited or damaged: restore it, or re-run the conversion", False),
    (lambda m: json.dumps(dict(m, num_classes="4")), "num_classes must be a positive integer, found '4'", False),
    (lambda m: json.dumps(dict(m, splits={"train": {"shards": []}})), "split 'train' must give num_examples", False),
])
def test_an_invalid_manifest_is_one_line_before_training_and_pins_nothing(edit, cause, rerun, tiny_synthetic,
                                                                          tmp_path):
    edited = _edited_copy(tiny_synthetic, tmp_path / "edited", edit)
    model_dir = tmp_path / "run"
    line = error_line(fit(edited, model_dir, 1, "--steps-per-epoch", "1", "--validation-steps", "1"))
    assert line.startswith(f"error: {edited}/manifest.json: {cause}") and "--overwrite" in line, line
    assert not model_dir.exists()
    if rerun:  # the same command, once the manifest is restored
        shutil.copy(os.path.join(tiny_synthetic, "manifest.json"), edited / "manifest.json")
        result = fit(edited, model_dir, 1, "--steps-per-epoch", "1", "--validation-steps", "1")
        assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("signal_number, code, last_line", [
    (signal.SIGINT, 130, "interrupted: re-run the same command to resume from the last finished epoch"),
    (signal.SIGTERM, -signal.SIGTERM, None),
])
def test_an_interrupted_or_terminated_run_resumes_where_it_stopped(signal_number, code, last_line, tiny_synthetic,
                                                                   tmp_path):
    model_dir = tmp_path / "run"
    command = [sys.executable, "-m", "gmsop_keras.fit", "--dataset", tiny_synthetic, "--model-dir", str(model_dir),
               "--epochs", "3", "--steps-per-epoch", "2", *TINY]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    signal_when(process, model_dir / "backup" / "epoch-00001.json", signal_number)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == code, stderr[-3000:]
    if last_line:
        assert stderr.strip().splitlines()[-1] == last_line and "Traceback" not in stderr
    done = max(int(name[6:11]) for name in os.listdir(model_dir / "backup") if name.endswith(".json"))

    result = fit(tiny_synthetic, model_dir, 3, "--steps-per-epoch", "2")
    assert result.returncode == 0, result.stderr[-3000:]  # the lock is free again
    if done < 3:
        assert f"after epoch {done} of 3" in result.stdout and f"Epoch {done + 1}/3" in result.stdout
    assert epochs_in(model_dir) == [1, 2, 3]
    assert json.loads((model_dir / "metrics.json").read_text())["epochs"] == 3
