"""fit under MirroredStrategy (2 logical CPU devices) and MultiWorkerMirroredStrategy (2 processes on loopback)."""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--backbone", "resnet18", "--lr", "0.01", "--seed", "0", "--verbose", "2"]

MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from gmsop_keras.errors import run_cli
    from gmsop_keras.fit import main
    sys.exit(run_cli(main, sys.argv[1:]))
    """
)


def run(args, env=None, script=None, timeout=400):
    cmd = [sys.executable] + (["-c", script] if script else ["-m", "gmsop_keras.fit"]) + args
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_mirrored_strategy_on_two_logical_devices(tiny_synthetic, tmp_path):
    model_dir = str(tmp_path / "mirrored")
    bad = run(["--dataset", tiny_synthetic, "--head", "gm-gap-4-2", "--strategy", "mirrored",
               "--batch-size", "15", "--model-dir", model_dir] + COMMON, script=MIRRORED)
    assert bad.returncode == 2 and "not divisible by the 2 replicas" in bad.stderr
    assert "Traceback" not in bad.stderr

    good = run(["--dataset", tiny_synthetic, "--head", "gm-gap-4-2", "--strategy", "mirrored",
                "--batch-size", "16", "--epochs", "2", "--model-dir", model_dir] + COMMON, script=MIRRORED)
    assert good.returncode == 0, good.stderr[-3000:]
    assert "validation: top-1 error" in good.stdout
    with open(os.path.join(model_dir, "component_usage.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # both replicas' samples are counted: 4 steps x 16 samples x K = 2
        assert sum(int(row[f"component_{i}"]) for i in range(1, 5)) == 4 * 16 * 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_on_loopback_train_the_same_model(tiny_synthetic, tmp_path):
    import keras

    import gmsop_keras  # noqa: F401

    model_dir = str(tmp_path / "multi")
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    args = ["--dataset", tiny_synthetic, "--head", "gm-gap-4-2", "--strategy", "multi-worker",
            "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "3", "--model-dir", model_dir] + COMMON
    env = dict(os.environ, PYTHONPATH=ROOT)
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gmsop_keras.fit"] + args, cwd=ROOT, text=True,
            env=dict(env, TF_CONFIG=json.dumps(tf_config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "validation: top-1 error" in out
    chief = keras.saving.load_model(os.path.join(model_dir, "final.keras"))
    other = keras.saving.load_model(os.path.join(model_dir, "workers", "worker_1", "final.keras"))
    # Synchronous training: every learned parameter is identical on both workers. (BatchNorm's
    # moving statistics are not learned: each worker averages its own batches, as Keras'
    # per-replica BatchNorm does; the chief's are the ones saved and exported.)
    for a, b in zip(chief.trainable_weights, other.trainable_weights):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)
    moved = keras.saving.load_model(os.path.join(model_dir, "final.keras"))
    fresh = gmsop_keras.build_model("resnet18", "gm-gap-4-2", num_classes=4, input_shape=(16, 16, 3))
    assert len(fresh.trainable_weights) == len(moved.trainable_weights)
    metrics = [json.load(open(os.path.join(d, "metrics.json")))
               for d in (model_dir, os.path.join(model_dir, "workers", "worker_1"))]
    # Each worker's metrics.json describes its own saved file (its own BatchNorm statistics).
    assert all(0.0 <= m["top1_error"] <= 1.0 and m["top5_error"] <= m["top1_error"] for m in metrics)
