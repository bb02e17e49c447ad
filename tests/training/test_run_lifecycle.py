"""A run's whole life as separate processes: kills at the moments that matter, re-runs, mistakes.

Every `fit` here is a fresh `python -m gmsop_keras.fit` process. Where the moment of a kill must
be exact (inside a checkpoint write, between final.keras and metrics.json), the process runs
the same module through a small launcher that stops it right there, and the test then kills
it with a real SIGKILL.
"""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
TINY = ["--backbone", "resnet18", "--head", "gap", "--lr", "0.01", "--seed", "0"]


def fit_args(data, model_dir, epochs, *extra, batch_size=16):
    """Flags of a tiny run; flags in `extra` come last, so they win over the same flag before."""
    return ["--dataset", data, "--model-dir", str(model_dir), "--epochs", str(epochs), "--verbose", "2",
            "--batch-size", str(batch_size)] + TINY + list(extra)


def fit(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gmsop_keras.fit", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def launch_with_hook(patch, args, ready_file=None):
    """`python -m gmsop_keras.fit ARGS` with `patch` applied to gmsop_keras first (a fresh process)."""
    script = textwrap.dedent("""
        import os, runpy, signal, sys
        from gmsop_keras.training import recipes, run_directory
        READY = os.environ.get("HOOK_READY")
        {patch}
        sys.argv = ["gmsop_keras.fit"] + sys.argv[1:]
        runpy.run_module("gmsop_keras.fit", run_name="__main__")
    """).format(patch=textwrap.dedent(patch).strip())
    env = dict(ENV, HOOK_READY=str(ready_file or ""))
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, process, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.exists(path):
            return
        if process.poll() is not None:
            raise AssertionError(f"process ended first ({process.returncode}): {process.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def epochs_in(path):
    with open(path) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def assert_quiet(stderr):
    for noise in ("oneDNN", "cuInit", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in stderr, stderr


@pytest.fixture(scope="module")
def finished_run(tiny_synthetic, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("runs") / "finished"
    result = fit(*fit_args(tiny_synthetic, model_dir, 2))
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def test_a_finished_run_is_complete_and_quiet(finished_run):
    model_dir, result = finished_run
    assert_quiet(result.stderr)
    assert result.stdout.splitlines()[-1].endswith(f"model dir {model_dir}")
    metrics = json.loads((model_dir / "metrics.json").read_text())  # strict JSON: no NaN
    assert metrics["epochs"] == 2 and len(metrics["history"]["loss"]) == 2
    assert epochs_in(model_dir / "log.csv") == [1, 2]
    best = json.loads((model_dir / "best.json").read_text())
    assert best["value"] == max(metrics["history"]["val_top1"])
    assert best["epoch"] == metrics["history"]["val_top1"].index(best["value"]) + 1  # the first of ties


def test_rerunning_a_finished_run_trains_nothing(finished_run, tiny_synthetic):
    model_dir, _ = finished_run
    before = {name: digest(model_dir / name) for name in ("final.keras", "best.keras", "log.csv", "metrics.json")}
    started = time.time()
    result = fit(*fit_args(tiny_synthetic, model_dir, 2))
    assert result.returncode == 0, result.stderr
    assert "finished run of 2 epochs" in result.stdout and "Epoch" not in result.stdout
    assert time.time() - started < 30  # answered before TensorFlow loads
    assert {name: digest(model_dir / name) for name in before} == before


def test_more_epochs_continue_and_best_survives_the_resume(finished_run, tiny_synthetic, tmp_path):
    model_dir, _ = finished_run
    # As if epoch 1 had been perfect: no later epoch may replace best.keras, before or after a resume.
    best = json.loads((model_dir / "best.json").read_text())
    (model_dir / "best.json").write_text(json.dumps(dict(best, value=1.0)))
    best_digest = digest(model_dir / "best.keras")
    result = fit(*fit_args(tiny_synthetic, model_dir, 3))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 3/3" in result.stdout and "Epoch 1/3" not in result.stdout and "Epoch 2/3" not in result.stdout
    assert epochs_in(model_dir / "log.csv") == [1, 2, 3]
    assert digest(model_dir / "best.keras") == best_digest
    assert json.loads((model_dir / "metrics.json").read_text())["epochs"] == 3


def test_kill_inside_a_checkpoint_write_resumes_from_the_one_before(tiny_synthetic, tmp_path):
    model_dir, ready = tmp_path / "run", tmp_path / "ready"
    # The weights of epoch 2 are written, cut short as by a kill mid-write, and the process stops
    # there until the test kills it; the marker of epoch 2 is never written.
    patch = """
        original = run_directory.RunDirectory.save_checkpoint
        def save_checkpoint(self, model, epoch):
            if epoch == 2:
                model.save_weights(self._weights(epoch), overwrite=True)
                with open(self._weights(epoch), "r+b") as f:
                    f.truncate(96)
                open(READY, "w").close()
                signal.pause()
            return original(self, model, epoch)
        run_directory.RunDirectory.save_checkpoint = save_checkpoint
    """
    args = fit_args(tiny_synthetic, model_dir, 3)
    process = launch_with_hook(patch, args, ready)
    wait_for(ready, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert os.path.getsize(model_dir / "backup" / "epoch-00002.weights.h5") == 96

    result = fit(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout and "after epoch 1 of 3" in result.stdout
    assert "Epoch 2/3" in result.stdout and "Epoch 1/3" not in result.stdout
    assert epochs_in(model_dir / "log.csv") == [1, 2, 3]  # epoch 2's row of the killed process is gone
    assert sorted(os.listdir(model_dir / "backup"))[-2:] == ["epoch-00003.json", "epoch-00003.weights.h5"]


def test_crash_between_final_model_and_metrics_does_not_retrain(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    args = fit_args(tiny_synthetic, model_dir, 2)
    process = launch_with_hook("""
        def write_metrics(self, metrics):
            os.kill(os.getpid(), signal.SIGKILL)
        run_directory.RunDirectory.write_metrics = write_metrics
    """, args)
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert (model_dir / "final.keras").exists() and not (model_dir / "metrics.json").exists()

    result = fit(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after epoch 2 of 2" in result.stdout and "Epoch 1/2" not in result.stdout
    assert epochs_in(model_dir / "log.csv") == [1, 2]
    assert json.loads((model_dir / "metrics.json").read_text())["epochs"] == 2


def test_a_second_fit_on_the_same_directory_is_refused_and_a_killed_one_leaves_no_lock(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    args = fit_args(tiny_synthetic, model_dir, 2)
    first = subprocess.Popen([sys.executable, "-m", "gmsop_keras.fit", *args], cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock, deadline = model_dir / ".lock", time.time() + 120
    while not (lock.exists() and lock.read_text()):
        assert first.poll() is None, "the first fit ended before it held the lock"
        assert time.time() < deadline, "the first fit never took the lock"
        time.sleep(0.05)
    second = fit(*args)
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "in use by another fit" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = fit(*args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert epochs_in(model_dir / "log.csv") == [1, 2]


def test_divergence_stops_at_once_and_keeps_the_last_good_epoch(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    # Epoch 1 trains at a sane rate; from the first step of epoch 2 the rate is absurd.
    patch = """
        import keras
        def step_schedule(lr, stages, steps_per_epoch, lr_decay=0.1):
            return keras.optimizers.schedules.PiecewiseConstantDecay([steps_per_epoch - 1], [lr, 1e12])
        recipes.step_schedule = step_schedule
    """
    process = launch_with_hook(patch, fit_args(tiny_synthetic, model_dir, 3))
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 3, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("error: the loss became") and "at epoch 2, step" in error
    assert "checkpoint of epoch 1" in error
    assert not (model_dir / "final.keras").exists() and not (model_dir / "metrics.json").exists()
    assert sorted(os.listdir(model_dir / "backup")) == ["epoch-00001.json", "epoch-00001.weights.h5"]
    assert json.loads((model_dir / "best.json").read_text())["epoch"] == 1


def test_divergence_at_the_first_steps_exits_non_zero(tiny_synthetic, tmp_path):
    result = fit(*fit_args(tiny_synthetic, tmp_path / "run", 2, "--lr", "1e8"))
    assert result.returncode == 3
    assert "at epoch 1, step" in result.stderr and "no epoch had finished" in result.stderr
    assert not (tmp_path / "run" / "best.keras").exists() and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("flags, yaml_text, message", [
    (["--epochs", "0"], None, "epochs must be >= 1, got 0"),
    (["--epochs", "-1"], None, "epochs must be >= 1, got -1"),
    (["--batch-size", "0"], None, "batch_size must be >= 1"),
    (["--lr", "0"], None, "lr must be > 0"),
    (["--momentum", "1"], None, "momentum must be < 1"),
    ([], 'epochs: "one"\n', "epochs must be an integer, got 'one'"),
    ([], 'lr: "0.1"\n', "lr must be a finite number, got '0.1'"),
    ([], "stages: 3\n", "stages must be a list of integers"),
    ([], 'mixed_precision: "no"\n', "mixed_precision must be true or false, got 'no'"),
    ([], "gsop_stages: [1, 7]\n", "gsop_stages must be a list of integers; 7 must be <= 4"),
    ([], "heads: gap\n", "unknown keys"),
    ([], "- a list\n", "must hold a mapping"),
    (["--head", "vlad"], None, "Unknown head: 'vlad'"),
    (["--backbone", "resnet101"], None, "gsop1-resnet50"),
    (["--dataset", "/nonexistent/folder"], None, "does not exist"),
])
def test_mistakes_answer_in_one_line_before_tensorflow_and_write_nothing(flags, yaml_text, message, tmp_path):
    args = list(flags) + ["--model-dir", str(tmp_path / "run")]
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        args += ["-c", str(tmp_path / "c.yaml")]
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "gmsop_keras.fit", *args], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and lines == [lines[0]] and lines[0].startswith("error: "), result.stderr[-2000:]
    assert message in lines[0]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "tensorflow" not in imported and "keras" not in imported
    assert not (tmp_path / "run").exists()


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path):
    from gmsop_keras.cli.arguments import resolve_config

    (tmp_path / "c.yaml").write_text("lr: 1e-3\nweight_decay: 5E-4\nstages: [2, 1]\nmixed_precision: false\n")
    config = resolve_config(["-c", str(tmp_path / "c.yaml"), "--dataset", "imagenet64"])
    assert config["lr"] == 1e-3 and config["weight_decay"] == 5e-4 and config["epochs"] == 3
    # A flag switches off what the file switched on.
    (tmp_path / "c.yaml").write_text("mixed_precision: true\n")
    assert resolve_config(["-c", str(tmp_path / "c.yaml"), "--no-mixed-precision"])["mixed_precision"] is False


def test_a_failed_start_writes_nothing_so_the_corrected_command_runs(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    result = fit(*fit_args(tiny_synthetic, model_dir, 1, batch_size=1000))
    assert result.returncode == 2 and "larger than the training set" in result.stderr, result.stderr
    assert not model_dir.exists()
    result = fit(*fit_args(tiny_synthetic, model_dir, 1))
    assert result.returncode == 0, result.stderr[-3000:]


def test_progress_lines_every_n_steps_when_not_on_a_terminal(tiny_synthetic, tmp_path):
    args = fit_args(tiny_synthetic, tmp_path / "run", 1)
    args[args.index("--verbose") + 1] = "auto"
    result = fit(*args, "--log-every", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [line for line in result.stdout.splitlines() if line.startswith("epoch 1/1 step")]
    assert [line.split(":")[0] for line in steps] == ["epoch 1/1 step 2/4", "epoch 1/1 step 4/4"]
    assert "img/s" in steps[0] and "loss" in steps[0]
