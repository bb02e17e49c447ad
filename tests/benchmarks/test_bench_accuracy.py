"""benchmarks/bench_accuracy.py: one row per seed, then mean and spread per configuration."""

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_accuracy.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_rows_give_mean_sample_std_and_range_and_skip_diverged_runs():
    rows = [dict(head="gap", preset="default", seed=s, top1=t, top5=t / 2, seconds=60.0)
            for s, t in ((0, 0.1), (1, 0.2), (2, 0.3))]
    rows += [dict(head="gm-sop-16-8", preset="paper", seed=0, top1=0.9, top5=0.5, seconds=None),
             dict(head="gm-sop-16-8", preset="paper", seed=1, diverged=True, seconds=30.0)]
    lines = _bench().format_table(rows).splitlines()
    assert lines[2] == "| `gap` | default | 0 | 10.00% | 5.00% | 1.0 min |"
    assert lines[5] == "| `gm-sop-16-8` | paper | 0 | 90.00% | 50.00% | (earlier run) |"
    assert lines[6] == "| `gm-sop-16-8` | paper | 1 | diverged | | |"
    # 10, 20, 30: mean 20, sample standard deviation 10; top-5 5, 10, 15: 10 +- 5.
    assert "| `gap` | default | 3 | 20.00% ± 10.00 | 10.00% - 30.00% | 10.00% ± 5.00 |" in lines
    assert "| `gm-sop-16-8` | paper | 1 (+1 diverged) | 90.00% | 90.00% - 90.00% | 50.00% |" in lines


def test_seeds_in_one_call_train_one_run_each_and_summarise_them(tiny_synthetic, tmp_path):
    args = [sys.executable, SCRIPT, "--dataset", tiny_synthetic, "--heads", "gap", "--seeds", "0", "1",
            "--stages", "1", "--steps-per-epoch", "2", "--validation-steps", "2", "--batch-size", "8",
            "--workdir", str(tmp_path)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = []
    for seed in (0, 1):
        with open(tmp_path / "synthetic" / f"gap-default-seed{seed}" / "metrics.json") as f:
            errors.append(100 * json.load(f)["top1_error"])
        assert re.search(rf"^\| `gap` \| default \| {seed} \| {errors[-1]:.2f}% \| .* min \|$", done.stdout, re.M)
    mean, std = statistics.fmean(errors), statistics.stdev(errors)
    low, high = min(errors), max(errors)
    assert f"| `gap` | default | 2 | {mean:.2f}% ± {std:.2f} | {low:.2f}% - {high:.2f}% |" in done.stdout
    # A second call reads the finished runs back instead of training them again.
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("(earlier run)") == 2, again.stderr[-3000:]
    assert f"| `gap` | default | 2 | {mean:.2f}% ± {std:.2f} |" in again.stdout
