"""A whole run from Python, without argparse: `training.config.resolve` then `training.trainer.run`."""

import json

from gmsop_keras.training import config, trainer


def test_a_run_from_python_trains_writes_its_files_and_returns_its_metrics(tiny_synthetic, tmp_path, capsys):
    model_dir = tmp_path / "run"
    run_config = config.resolve({"dataset": tiny_synthetic, "model_dir": str(model_dir), "epochs": 1,
                                 "batch_size": 16, "backbone": "resnet18", "head": "gap", "lr": 0.01,
                                 "verbose": "2"})
    summary = trainer.run(run_config)
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert summary.pop("manifest")["num_classes"] == 4
    assert summary == metrics and metrics["epochs"] == 1 and metrics["history"]["loss"] and len(metrics["history"]["loss"]) == 1
    assert 0.0 <= metrics["top1_error"] <= 1.0
    assert {"config.yaml", "best.keras", "final.keras", "log.csv"} <= {p.name for p in model_dir.iterdir()}
    # The same configuration again: the run is finished, nothing is trained, its metrics come back.
    assert trainer.run(run_config)["top1_error"] == metrics["top1_error"]
    assert "nothing to do" in capsys.readouterr().out
