"""`fit --deterministic`: two fresh processes with the same flags end with the same numbers and weights."""

import csv
import json
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from gmsop_keras.training.errors import UsageError
from gmsop_keras.training.saved_config import check_model_dir, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")


def fit(data, model_dir, *extra):
    # A gated mixture: the gate's noise and the data order are drawn from the seed too.
    args = ["--dataset", data, "--model-dir", str(model_dir), "--head", "gm-sop-4-2", "--stages", "1", "1",
            "--lr", "0.05", "--batch-size", "16", "--seed", "3", "--verbose", "2", *extra]
    done = subprocess.run([sys.executable, "-m", "gmsop_keras.fit", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def validation_columns(model_dir):
    with open(os.path.join(model_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k == "epoch" or k.startswith("val_")} for row in rows]


def final_weights(model_dir):
    """Every weight array of final.keras, read from the archive's HDF5 file without Keras."""
    arrays = {}
    with zipfile.ZipFile(os.path.join(model_dir, "final.keras")) as archive:
        with archive.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
            h5.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_two_deterministic_processes_end_with_the_same_error_and_weights(tiny_synthetic, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    fit(tiny_synthetic, first, "--deterministic")
    fit(tiny_synthetic, second, "--deterministic")
    log = validation_columns(first)
    assert [row["epoch"] for row in log] == ["1", "2"]
    assert log == validation_columns(second)  # the logged strings, digit for digit
    with open(first / "metrics.json") as a, open(second / "metrics.json") as b:
        metrics_a, metrics_b = json.load(a), json.load(b)
    assert (metrics_a["top1_error"], metrics_a["loss"]) == (metrics_b["top1_error"], metrics_b["loss"])
    weights_a, weights_b = final_weights(first), final_weights(second)
    assert len(weights_a) > 20 and weights_a.keys() == weights_b.keys()
    for name, value in weights_a.items():
        np.testing.assert_array_equal(value, weights_b[name], err_msg=name)
    with open(first / "config.yaml") as f:
        assert "deterministic: true\n" in f.read()


def test_a_run_is_not_resumed_with_the_other_determinism(tmp_path):
    config = {"model_dir": str(tmp_path), "head": "gap", "seed": 0, "deterministic": True}
    write_config(config)
    check_model_dir(dict(config))  # the same setting resumes
    with pytest.raises(UsageError, match=r"deterministic: True there, False now"):
        check_model_dir(dict(config, deterministic=False))


def test_a_run_saved_before_the_option_existed_resumes_without_it(tmp_path):
    config = {"model_dir": str(tmp_path), "head": "gap", "seed": 0}
    write_config(config)  # no `deterministic` key: the run was not deterministic
    check_model_dir(dict(config, deterministic=False))
    with pytest.raises(UsageError, match="different configuration"):
        check_model_dir(dict(config, deterministic=True))
