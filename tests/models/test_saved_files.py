"""Files that users saved with gmsop_keras 0.2.0 (before the package took its layered form) keep working.

`tests/fixtures/v0.2.0/` was written by that version (`tests/fixtures/make_v0_2_fixtures.py` says
how): a model with every serializable class of the package, and a `fit` run killed by SIGKILL
after its first epoch's backup. Both are read here by today's code, in fresh processes as a user
would: the models load and give the outputs they gave then, and the run resumes from its backup.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "v0.2.0")
RUN = os.path.join(FIXTURES, "run-resnet18-gm-sop-4-2")
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
TINY_SET = dict(num_classes=4, train_per_class=16, val_per_class=8, image_size=16, min_shards=2)

# A user's script: import the package, load a file, predict.
LOAD_AND_PREDICT = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    import gmsop_keras  # registers the package's classes with Keras

    model_path, arrays, output = sys.argv[1:]
    model = keras.saving.load_model(model_path)
    np.save(output, np.asarray(model(np.load(arrays)["inputs"], training=False)))
""")


def _load_and_predict(model_path, arrays, tmp_path):
    output = tmp_path / "outputs.npy"
    result = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, model_path, arrays, str(output)],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(output)


@pytest.mark.parametrize("model_file, arrays", [
    ("every_layer.keras", "every_layer.npz"),
    (os.path.join("run-resnet18-gm-sop-4-2", "best.keras"), "run.npz"),
])
def test_models_saved_by_0_2_load_and_predict_the_same(model_file, arrays, tmp_path):
    expected = np.load(os.path.join(FIXTURES, arrays))["outputs"]
    outputs = _load_and_predict(os.path.join(FIXTURES, model_file), os.path.join(FIXTURES, arrays), tmp_path)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_a_run_killed_under_0_2_resumes_from_its_backup(tmp_path):
    import pipelines

    # The run was made on another machine: its data is re-made here (the same tiny synthetic set) and
    # config.yaml's two paths point at the new places, as a user who moved both folders would do.
    data = str(pipelines.ensure_synthetic(str(tmp_path / "data"), **TINY_SET))
    model_dir = tmp_path / "run"
    shutil.copytree(RUN, model_dir)
    config_path = model_dir / "config.yaml"
    lines = config_path.read_text().splitlines()
    lines = [f"dataset: {data}" if line.startswith("dataset:") else
             f"model_dir: {model_dir}" if line.startswith("model_dir:") else line for line in lines]
    config_path.write_text("\n".join(lines) + "\n")
    with open(RUN + "/log.csv") as f:
        epoch_1 = f.read().splitlines()[1]

    # The same command, in a fresh process that records the model's outputs when training starts
    # (after the resume restored the backup): they must be the saved epoch-1 model's.
    at_start = tmp_path / "at_start.npy"
    hook = textwrap.dedent(f"""
        import runpy, sys
        import keras, numpy as np
        original_fit = keras.Model.fit
        def fit(self, *args, **kwargs):
            images = np.load({os.path.join(FIXTURES, "run.npz")!r})["inputs"]
            np.save({str(at_start)!r}, np.asarray(self(images, training=False)))
            return original_fit(self, *args, **kwargs)
        keras.Model.fit = fit
        sys.argv = ["gmsop_keras.fit"] + sys.argv[1:]
        runpy.run_module("gmsop_keras.fit", run_name="__main__")
    """)
    args = ["--dataset", data, "--model-dir", str(model_dir), "--epochs", "2", "--verbose", "2",
            "--batch-size", "16", "--backbone", "resnet18", "--head", "gm-sop-4-2", "--lr", "0.01", "--seed", "0"]
    result = subprocess.run([sys.executable, "-c", hook, *args], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "after epoch 1 of 2" in result.stdout, result.stdout

    np.testing.assert_allclose(np.load(at_start), np.load(os.path.join(FIXTURES, "run.npz"))["outputs"],
                               rtol=1e-5, atol=1e-5)
    with open(model_dir / "log.csv") as f:
        rows = f.read().splitlines()
    assert rows[1] == epoch_1  # the first epoch's row is kept as it was
    with open(model_dir / "log.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2]
    with open(model_dir / "metrics.json") as f:
        assert json.load(f)["epochs"] == 2
    assert os.path.exists(model_dir / "backup" / "epoch-00002.json")
