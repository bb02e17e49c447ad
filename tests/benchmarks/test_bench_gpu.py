"""benchmarks/bench_gpu.py --smoke: every head trains under JAX alone, and the table's numbers add up."""

import json
import os
import subprocess
import sys

import pytest

from gmsop_keras import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADS = ("gap", "gap-512", "sr-sop", "gm-gap-16-8", "ave-sop-16", "gm-sop-16-8")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_gpu")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--smoke", "--json", str(folder / "r.json"),
         "--output", str(folder / "r.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
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
