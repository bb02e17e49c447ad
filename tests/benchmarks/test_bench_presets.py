"""benchmarks/bench_presets.py: the side-by-side table it prints."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_presets", os.path.join(ROOT, "benchmarks", "bench_presets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_has_one_column_per_preset_and_the_switches_each_set():
    metrics = dict(top1_error=0.125, top5_error=0.0, loss=0.5)
    rows = [("paper", metrics, dict(weight_decay_mode="coupled", gate_input_norm=False, stages=[3, 1],
                                    representation_gamma=1.0), 90.0),
            ("default", dict(metrics, top1_error=0.25), dict(weight_decay_mode="decoupled", gate_input_norm=True,
                                                              stages=[3, 1], representation_gamma=None), 60.0)]
    lines = _bench().format_table(rows).splitlines()
    assert lines[0] == "| | `paper` | `default` |"
    assert "| top-1 error | 12.5% | 25.0% |" in lines
    assert "| `weight_decay_mode` | coupled | decoupled |" in lines
    assert "| `gate_input_norm` | False | True |" in lines
    assert "| `representation_gamma` | 1 | model default |" in lines
    assert "| `stages` | 3 1 | 3 1 |" in lines and lines[-1] == "| wall time | 1.5 min | 1.0 min |"
