"""benchmarks/bench_gpu.py --smoke: every head trains under JAX alone, and the table's numbers add up;
--profile prints the per-part breakdown."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from gmsop_keras import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("flops", os.path.join(ROOT, "benchmarks", "flops.py"))
flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flops)
ENV = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
HEADS = ("gap", "gap-512", "sr-sop", "gm-gap-16-8", "ave-sop-16", "gm-sop-16-8")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_gpu")
    env = ENV
    completed = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--json", str(folder / "r.json"),
         "--output", str(folder / "r.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,  # minutes of CPU on a busy shared machine
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(folder / "r.json") as f:
        return json.load(f), (folder / "r.md").read_text(), completed.stdout


def test_smoke_trains_every_head_with_jax_alone(smoke):
    results, _, _ = smoke
    assert results["environment"]["backend"] == "jax"
    runs = {(r["head"], r["precision"], r["xla"]): r for r in results["results"]}
    expected = {(h, "float32", "on") for h in HEADS}
    expected |= {("gm-sop-16-8", "mixed_float16", "on"), ("gm-sop-16-8", "float32", "off")}
    assert set(runs) == expected and not results["skipped"]
    for key, run in runs.items():
        assert "error" not in run, (key, run)
        assert not run["tensorflow_imported"], key  # Keras, NumPy and JAX were enough
        assert 0 < run["loss"] < 20, (key, run["loss"])
        assert run["images_per_s"] == pytest.approx(4 / run["step_s"])
    # The benchmark trained the named heads: parameter counts as build_model gives them.
    for head in HEADS:
        model = build_model("resnet18", head, num_classes=10, input_shape=(32, 32, 3))
        assert runs[(head, "float32", "on")]["params"] == model.count_params(), head


def test_smoke_table_gives_the_ratios_to_gap_and_sr_sop(smoke):
    results, table, stdout = smoke
    assert table in stdout
    rate = {r["head"]: r["images_per_s"] for r in results["results"] if r["xla"] == "on" and r["precision"] == "float32"}
    rows = {line.split("|")[1].strip(" `"): line.split("|") for line in table.splitlines()
            if line.startswith("| `") and "| float32 | on |" in line}
    for head in HEADS:
        cells = rows[head]
        assert float(cells[6]) == pytest.approx(rate[head] / rate["gap"], abs=0.006), head
        assert float(cells[7]) == pytest.approx(rate[head] / rate["sr-sop"], abs=0.006), head


def test_smoke_reports_achieved_tflops_from_the_counted_flops(smoke):
    results, table, stdout = smoke
    for run in results["results"]:
        head = run["head"]
        model = build_model("resnet18", head, num_classes=10, input_shape=(32, 32, 3))
        parts, _ = flops.count_flops(model)
        assert run["train_gflop_per_image"] == pytest.approx(flops.total(parts) / 1e9), head
        assert run["tflops"] == pytest.approx(run["train_gflop_per_image"] * run["images_per_s"] / 1e3), head
        assert (run["peak_tflops"], run["peak_of"], run["fraction_of_peak"]) == (None, "peak unknown", None)
        assert run["tf32"] == "on"
        shown = f"{head} {run['precision']} {run['xla']}: {run['images_per_s']:.0f} img/s, {run['tflops']:.3g} TFLOPS"
        assert shown in stdout, shown  # printed per head as it runs
    assert "TF32 on (jax_default_matmul_precision=tensorfloat32)" in table
    row = next(line for line in table.splitlines() if line.startswith("| `gm-sop-16-8` | float32 | on |"))
    cells = [c.strip() for c in row.split("|")]
    run = next(r for r in results["results"] if (r["head"], r["precision"], r["xla"]) == ("gm-sop-16-8", "float32", "on"))
    assert cells[-4:-1] == [f"{run['train_gflop_per_image']:.3f}", f"{run['tflops']:.3g}", "peak unknown"]


@pytest.mark.slow  # about 40 s of CPU: a training step and eight compiled parts
def test_profile_prints_the_share_of_every_part():
    completed = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--profile", "--heads", "gm-sop-16-8"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert "timed in isolation (forward + backward of each part alone at the step's shapes); shares of their sum, " \
        "not of a real step" in out
    rows = dict(re.findall(r"^\| ([a-z ]+) \| [0-9.]+ \| ([0-9.]+)% \|$", out, re.M))
    parts = ["backbone", "gate", "dispatch", "covariance", "square root", "vectorise", "classifier", "optimizer"]
    assert list(rows) == parts + ["sum of the parts"]
    assert sum(float(rows[p]) for p in parts) == pytest.approx(100.0, abs=0.3)
    assert re.search(r"^\| a real training step \(measured\) \| [0-9.]+ \| - \|$", out, re.M)
    assert re.search(r"^gm-sop-16-8, float32, XLA on, batch 4, 32x32: \d+ img/s, [0-9.e-]+ TFLOPS \(peak unknown\)$",
                     out, re.M)
