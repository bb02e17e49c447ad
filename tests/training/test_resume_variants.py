"""Two faults tried before that had no test of their own, each run as a user runs it (fresh
processes): a mixed-precision run killed after an epoch resumes; unicode folder, class and run
names go through conversion, training and evaluation."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.run_signals import signal_when

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
TINY = ["--backbone", "resnet18", "--head", "gap", "--lr", "0.01", "--seed", "0", "--batch-size", "16",
        "--steps-per-epoch", "2", "--verbose", "2"]


def python_m(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def logged_epochs(model_dir):
    with open(os.path.join(model_dir, "log.csv"), encoding="utf-8") as f:
        return [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]


def test_a_mixed_precision_run_killed_after_an_epoch_resumes_in_mixed_precision(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "mixed"
    command = [sys.executable, "-m", "gmsop_keras.fit", "--dataset", tiny_synthetic, "--model-dir", str(model_dir),
               "--epochs", "3", "--mixed-precision", *TINY]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_when(process, model_dir / "backup" / "epoch-00001.json")  # epoch 1's backup is complete
    process.wait()

    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = result.stdout + result.stderr
    assert "after epoch 1 of 3" in resumed or "after epoch 2 of 3" in resumed, resumed[-2000:]
    assert logged_epochs(model_dir) == [1, 2, 3]  # no epoch lost, none repeated
    with open(model_dir / "metrics.json") as f:
        assert json.load(f)["epochs"] == 3

    import keras

    model = keras.saving.load_model(model_dir / "final.keras", compile=False)
    def walk(layer):
        yield layer
        for inner in getattr(layer, "layers", []):
            yield from walk(inner)

    convolutions = [layer for layer in walk(model) if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and {layer.dtype_policy.name for layer in convolutions} == {"mixed_float16"}
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"  # the logits stay float32


def test_unicode_folder_class_and_run_names(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "données photos"
    names = ["chat é", "犬", "ørn"]
    for label, name in enumerate(names):
        (source / name).mkdir(parents=True)
        for i in range(10):
            image = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8) + 60 * label  # a class is its brightness
            Image.fromarray(image.astype(np.uint8)).save(source / name / f"ïmage {i}.png")
    data = tmp_path / "jeu de données"
    result = python_m("pipelines.convert", "folder", "--source", source, "--size", "16", "--output", data,
                      "--validation-fraction", "0.2", "--min-shards", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(data / "manifest.json", encoding="utf-8") as f:
        assert sorted(json.load(f)["class_names"]) == sorted(names)

    run = tmp_path / "exécutions" / "модель"
    result = python_m("gmsop_keras.fit", "--dataset", data, "--model-dir", run, "--epochs", "1", "--backbone", "resnet18",
                      "--head", "gap", "--lr", "0.01", "--seed", "0", "--batch-size", "8", "--verbose", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "metrics.json", encoding="utf-8") as f:
        trained = json.load(f)

    result = python_m("gmsop_keras.evaluate", run)  # the run's own dataset, from its config.yaml
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(data) in result.stderr
    assert abs(json.loads(result.stdout)["top1_error"] - trained["top1_error"]) < 1e-6
