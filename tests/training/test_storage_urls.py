"""The commands with every path a `file://` URL: TensorFlow's file-system code path, across processes.

`file://` goes through `tf.io.gfile` exactly as `gs://` does (`pipelines.storage`), so these tests
run the remote code path on this machine: convert, fit, a real SIGKILL after the first checkpoint,
resume, evaluate, export and predict, compared with the same run on plain paths.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One thread per op and no oneDNN rewrites: two processes on the same data compute the same bits.
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1", TF_NUM_INTRAOP_THREADS="1",
           TF_NUM_INTEROP_THREADS="1", TF_ENABLE_ONEDNN_OPTS="0", TF_DETERMINISTIC_OPS="1")
TINY = ["--backbone", "resnet18", "--head", "gap", "--lr", "0.01", "--seed", "0", "--batch-size", "16",
        "--verbose", "2"]


def run(*args, timeout=300):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result


def convert(output):
    run("-m", "pipelines.convert", "synthetic", "--output", output, "--num-classes", "4", "--train-per-class", "16",
        "--val-per-class", "8", "--image-size", "16", "--min-shards", "2", "--no-progress")


def test_fit_on_file_urls_finishes_and_a_rerun_trains_nothing(tmp_path):
    import pipelines

    data, model_dir = f"file://{tmp_path}/data", f"file://{tmp_path}/run"
    pipelines.ensure_synthetic(data, num_classes=4, train_per_class=16, val_per_class=8, image_size=16, min_shards=2)
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["splits"]["train"]["num_examples"] == 64
    args = ["-m", "gmsop_keras.fit", "--dataset", data, "--model-dir", model_dir, "--epochs", "1", *TINY]
    run(*args)
    names = set(os.listdir(tmp_path / "run"))
    assert {"config.yaml", "log.csv", "best.keras", "best.json", "final.keras", "metrics.json", "backup"} <= names
    assert not [name for name in names if ".tmp" in name]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1
    again = run(*args)
    assert "holds a finished run of 1 epochs" in again.stdout and "Epoch" not in again.stdout


def _records(path):
    import tensorflow as tf

    from pipelines.tfrecord import decode_example

    return [(image.tobytes(), label) for image, label in
            (decode_example(record.numpy()) for record in tf.data.TFRecordDataset(str(path)))]


def _killed_then_resumed(data, model_dir, local_dir, ready):
    """`fit` for 3 epochs, SIGKILLed right after its first checkpoint, then run again to the end."""
    args = ["--dataset", data, "--model-dir", model_dir, "--epochs", "3", *TINY]
    hook = textwrap.dedent("""
        import os, runpy, signal, sys
        from gmsop_keras.training import run_directory
        original = run_directory.RunDirectory.save_checkpoint
        def save_checkpoint(self, model, epoch):
            original(self, model, epoch)
            if epoch == 1:
                open(os.environ["HOOK_READY"], "w").close()
                signal.pause()
        run_directory.RunDirectory.save_checkpoint = save_checkpoint
        sys.argv = ["gmsop_keras.fit"] + sys.argv[1:]
        runpy.run_module("gmsop_keras.fit", run_name="__main__")
    """)
    process = subprocess.Popen([sys.executable, "-c", hook, *args], cwd=ROOT, env=dict(ENV, HOOK_READY=str(ready)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ready.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert sorted(os.listdir(local_dir / "backup")) == ["epoch-00001.json", "epoch-00001.weights.h5"]
    assert not (local_dir / "metrics.json").exists()
    resumed = run("-m", "gmsop_keras.fit", *args)
    assert "after epoch 1 of 3" in resumed.stdout and "Epoch 1/3" not in resumed.stdout


@pytest.mark.slow
def test_convert_fit_kill_resume_evaluate_export_predict_on_file_urls_equals_plain_paths(tmp_path):
    from PIL import Image

    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(image)
    outputs = {}
    for kind in ("plain", "url"):
        local = tmp_path / kind
        local.mkdir()
        base = str(local) if kind == "plain" else f"file://{local}"
        data, model_dir, saved = f"{base}/data", f"{base}/run", f"{base}/saved"
        convert(data)
        _killed_then_resumed(data, model_dir, local / "run", local / "ready")
        evaluated = run("-m", "gmsop_keras.evaluate", model_dir, "--data-dir", data, "--output", f"{base}/eval.json")
        exported = run("-m", "gmsop_keras.export", model_dir, "--output", saved, "--data-dir", data)
        assert exported.stdout.strip().splitlines()[-1] == f"{saved}/1"
        assert sorted(os.listdir(local / "saved" / "1")) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
        predicted = run("-m", "gmsop_keras.predict", saved, image, "--json")
        outputs[kind] = {
            "metrics": json.loads((local / "run" / "metrics.json").read_text()),
            "evaluate": {k: v for k, v in json.loads(evaluated.stdout).items() if k != "model"},
            "eval.json": json.loads((local / "eval.json").read_text())["top1_error"],
            "predict": json.loads(predicted.stdout)[0]["predictions"],
            "shards": json.loads((local / "data" / "manifest.json").read_text())["splits"],
        }
    plain, url = outputs["plain"], outputs["url"]
    # The same records; not the same bytes: protobuf writes an Example's feature map in an order
    # that varies between processes, so the checksums differ even between two local conversions.
    for split in ("train", "validation"):
        files = [shard["file"] for shard in plain["shards"][split]["shards"]]
        assert files == [shard["file"] for shard in url["shards"][split]["shards"]]
        for name in files:
            assert _records(tmp_path / "url" / "data" / name) == _records(tmp_path / "plain" / "data" / name)
    assert url["metrics"]["history"].keys() == plain["metrics"]["history"].keys()
    # Same seed, same data, the same kill point, one thread per op: the same arithmetic, so the
    # same numbers to the last bit (a tolerance would hide a lost or repeated epoch only barely).
    assert url["metrics"] == plain["metrics"]
    assert url["evaluate"] == plain["evaluate"] and url["eval.json"] == plain["eval.json"]
    assert url["predict"] == plain["predict"]
    assert len(url["metrics"]["history"]["loss"]) == 3
