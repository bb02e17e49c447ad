"""python -m tuning.search with its study folder given as a `file://` URL (TensorFlow's file-system path)."""

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_one_trial_grid_in_a_file_url_folder(tiny_synthetic, tmp_path):
    folder = tmp_path / "alpha"
    result = subprocess.run(
        [sys.executable, "-m", "tuning.search", "alpha", "--dataset", tiny_synthetic, "--directory", f"file://{folder}",
         "--alphas", "100", "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "2", "--lr", "0.02",
         "--seed", "0", "--verbose", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 trials (1 run by this command, 0 not completed)" in result.stdout
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    trials = sorted(name for name in os.listdir(folder / "keras_tuner") if name.startswith("trial_"))
    assert len(rows) == 1 and trials == [f"trial_{rows[0]['trial_id']}"]
    trial = json.load(open(folder / "keras_tuner" / trials[0] / "trial.json"))
    assert float(rows[0]["val_top1_error"]) == pytest.approx(1.0 - trial["score"], abs=1e-6)
    assert json.load(open(folder / "study.json"))["study"] == "alpha"
    with open(folder / "keras_tuner" / trials[0] / "component_usage.csv", newline="") as f:
        usage = list(csv.DictReader(f))
    # 2 steps of 16 samples, each routed to K = 4 of the 16 components.
    assert sum(int(v) for k, v in usage[-1].items() if k.startswith("component_")) == 2 * 16 * 4
    assert (folder / "error_vs_alpha.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [name for name in os.listdir(folder) if ".tmp" in name]
