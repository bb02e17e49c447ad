"""python -m gmsop_keras.fit: what it writes, resuming after a crash, clear errors, recipes, config."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from gmsop_keras.cli.errors import run_cli
from gmsop_keras.fit import main as fit_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--backbone", "resnet18", "--batch-size", "16", "--lr", "0.01", "--seed", "0"]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("runs") / "gm-gap")
    code = run_cli(fit_main, ["--dataset", tiny_synthetic, "--head", "gm-gap-4-2", "--epochs", "2",
                              "--model-dir", model_dir, "--verbose", "0"] + TINY)
    assert code == 0
    return model_dir


def test_model_dir_holds_everything(trained):
    for name in ("config.yaml", "log.csv", "final.keras", "best.keras", "best.json", "metrics.json", "component_usage.csv"):
        assert os.path.isfile(os.path.join(trained, name)), name
    assert os.path.isdir(os.path.join(trained, "tensorboard"))
    # The last two checkpoints stay, so that a larger --epochs can continue the run.
    assert sorted(os.listdir(os.path.join(trained, "backup"))) == [
        "epoch-00001.json", "epoch-00001.weights.h5", "epoch-00002.json", "epoch-00002.weights.h5"]
    assert [row["epoch"] for row in read_csv(os.path.join(trained, "log.csv"))] == ["1", "2"]  # counted from 1
    config = yaml.safe_load(open(os.path.join(trained, "config.yaml")))
    assert config["head"] == "gm-gap-4-2" and config["batch_size"] == 16 and config["epochs"] == 2
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert 0.0 <= metrics["top1_error"] <= 1.0 and metrics["top5_error"] <= metrics["top1_error"]


def test_component_usage_counts_every_routed_sample(trained):
    rows = read_csv(os.path.join(trained, "component_usage.csv"))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    steps_per_epoch = 64 // 16
    for row in rows:
        counts = [int(row[f"component_{i}"]) for i in range(1, 5)]
        assert sum(counts) == steps_per_epoch * 16 * 2  # every sample picks K = 2 components
    pngs = sorted(os.listdir(os.path.join(trained, "component_usage")))
    assert len(pngs) == 2 and all(p.endswith(".png") for p in pngs)
    with open(os.path.join(trained, "component_usage", pngs[0]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_reports_the_same_error_as_fit(trained, tiny_synthetic, capsys):
    from gmsop_keras.evaluate import main as evaluate_main

    assert run_cli(evaluate_main, [os.path.join(trained, "final.keras"), "--data-dir", tiny_synthetic]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert result["num_examples"] == 32
    assert result["top1_error"] == pytest.approx(metrics["top1_error"], abs=1e-6)
    assert result["top5_error"] == pytest.approx(metrics["top5_error"], abs=1e-6)


def test_ten_crop_averages_the_ten_crops():
    import keras

    from gmsop_keras.serving.loading import predict_probabilities

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    images = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 3)).astype("uint8")
    got = predict_probabilities(model, images, ten_crop_size=4)
    crops = [images[:, y:y + 4, x:x + 4] for y, x in [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]]
    crops += [c[:, :, ::-1] for c in crops]
    expected = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(model(c.astype("float32")))) for c in crops], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_different_configuration_in_the_same_model_dir_is_refused(trained, tiny_synthetic, capsys):
    code = run_cli(fit_main, ["--dataset", tiny_synthetic, "--head", "gap", "--epochs", "2",
                              "--model-dir", trained, "--verbose", "0"] + TINY)
    assert code == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "head" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--head", "gm-sop-4-8"], "top_k"),
        (["--head", "vlad"], "gm-sop-N-K"),
        (["--backbone", "resnet101"], "resnet18"),
        (["--dataset", "imagenet64"], "--data-dir"),
        (["--dataset", "/nonexistent/folder"], "does not exist"),
    ],
)
def test_clear_one_line_errors(args, message, capsys, tmp_path):
    code = run_cli(fit_main, args + ["--model-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("error: ")


def test_yaml_config_is_overridden_by_flags(tmp_path):
    from gmsop_keras.cli.arguments import resolve_config

    path = tmp_path / "c.yaml"
    path.write_text("head: gm-gap-16-8\nbatch-size: 128\nlr: 0.5\n")
    config = resolve_config(["-c", str(path), "--lr", "0.2", "--dataset", "imagenet64"])
    assert config["head"] == "gm-gap-16-8" and config["batch_size"] == 128 and config["lr"] == 0.2
    assert config["stages"] == [50, 15, 10] and config["epochs"] == 75  # the paper's GM-GAP recipe
    path.write_text("heads: gap\n")
    with pytest.raises(Exception, match="unknown keys"):
        resolve_config(["-c", str(path)])


def test_killed_run_resumes_from_the_last_finished_epoch(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "gmsop_keras.fit", "--dataset", tiny_synthetic, "--head", "gap",
           "--epochs", "6", "--model-dir", str(model_dir), "--verbose", "2"] + TINY
    log = model_dir / "log.csv"
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if (model_dir / "backup" / "epoch-00001.json").exists():  # epoch 1's checkpoint is complete
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    markers = [name for name in os.listdir(model_dir / "backup") if name.endswith(".json")]
    done_before = max(int(name[6:11]) for name in markers)
    assert 1 <= done_before < 6, "the run should have been killed after its first epoch"

    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = [int(row["epoch"]) for row in read_csv(log)]
    assert epochs == list(range(1, 7)), epochs  # no epoch lost, none repeated
    assert f"Epoch {done_before + 1}/6" in result.stdout and "Epoch 1/6" not in result.stdout
    assert "validation: top-1 error" in result.stdout.splitlines()[-1]


def test_fit_accepts_the_seed_family_names(capsys, tmp_path):
    from gmsop_keras.cli.arguments import resolve_config

    config = resolve_config(["--backbone", "gsop2-resnet50", "--head", "isqrt-256", "--dataset", "imagenet64"])
    assert config["backbone"] == "gsop2-resnet50" and config["head"] == "isqrt-256"
    code = run_cli(fit_main, ["--backbone", "resnet152", "--model-dir", str(tmp_path / "m")])
    assert code == 2 and "gsop1-resnet50" in capsys.readouterr().err


def test_seed_family_options_reach_build_model():
    from gmsop_keras.cli.arguments import resolve_config
    from gmsop_keras.training.config import model_options

    config = resolve_config(["--gsop-stages", "1", "2", "3", "--gaussian-pooling", "--dataset", "imagenet64"])
    assert model_options(config) == {"gsop_stages": [1, 2, 3], "gaussian_pooling": True}


def test_coupled_weight_decay_trains_saves_and_loads_back(tiny_synthetic, tmp_path):
    model_dir = tmp_path / "coupled"
    cmd = [sys.executable, "-m", "gmsop_keras.fit", "--dataset", tiny_synthetic, "--head", "gap", "--epochs", "1",
           "--weight-decay-mode", "coupled", "--decay-norms-and-biases", "--model-dir", str(model_dir),
           "--verbose", "0", "--steps-per-epoch", "2"] + TINY
    result = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert saved["weight_decay_mode"] == "coupled" and saved["decay_norms_and_biases"] is True
    assert saved["stages"] == [1] and "scaled to --epochs 1: 1" in result.stdout  # the synthetic row's 4 2
    import keras

    import gmsop_keras  # noqa: F401  (registers the layers and the optimizer)

    optimizer = keras.saving.load_model(model_dir / "final.keras").optimizer
    assert type(optimizer).__name__ == "CoupledWeightDecaySGD" and optimizer.l2 == 5e-4 and optimizer.l2_exempt == ()


def test_fresh_fit_process_doubles_the_epoch_and_normalises_with_the_manifest(tiny_synthetic, tmp_path):
    """`--augment chrabaszcz` reaches the input (an epoch of 2 x 64 images = 8 batches of 16) and the
    model normalises with the manifest's per-channel statistics, not ImageNet's."""
    import keras

    import gmsop_keras.layers  # noqa: F401
    from pipelines import read_manifest

    model_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "gmsop_keras.fit", "--dataset", tiny_synthetic, "--head", "gap", "--epochs", "1",
           "--augment", "chrabaszcz", "--model-dir", str(model_dir), "--verbose", "2"] + TINY
    result = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 epochs of 8 steps (batch 16)" in result.stdout, result.stdout
    with open(model_dir / "config.yaml") as f:
        assert yaml.safe_load(f)["augment"] == "chrabaszcz"
    manifest = read_manifest(tiny_synthetic)
    normalization = keras.saving.load_model(model_dir / "final.keras").get_layer("normalization").get_config()
    np.testing.assert_allclose(np.ravel(normalization["mean"]), manifest["pixel_mean"], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(normalization["variance"]), np.square(manifest["pixel_std"]), rtol=1e-5)
    assert abs(manifest["pixel_mean"][0] - 123.675) > 1.0  # the synthetic set's own statistics differ


def test_fit_refuses_an_unknown_augmentation(capsys, tmp_path):
    with pytest.raises(SystemExit):
        fit_main(["--augment", "rotate", "--model-dir", str(tmp_path / "m")])
    assert "chrabaszcz" in capsys.readouterr().err
