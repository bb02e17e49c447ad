"""What `fit` leaves, used as it is: evaluate and predict on a run directory (its own dataset, its class
names), predict from best.keras and from the export alike, and a damaged best.keras named as damaged."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_module(module, *args, cwd=ROOT):
    """`python -m MODULE ARGS` in a fresh interpreter that has imported nothing of the project."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def ok(result):
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def lines(stream, prefix):
    return [line for line in stream.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def run_dir(tiny_synthetic, tmp_path_factory):
    """A run directory as `python -m gmsop_keras.fit` leaves it: 4 classes of 16x16, one short epoch."""
    model_dir = tmp_path_factory.mktemp("runs") / "tiny"
    ok(run_module("gmsop_keras.fit", "--dataset", tiny_synthetic, "--head", "gap", "--epochs", "1",
                  "--steps-per-epoch", "2", "--batch-size", "16", "--model-dir", model_dir))
    assert {"best.keras", "final.keras", "config.yaml", "metrics.json"} <= set(os.listdir(model_dir))
    return model_dir


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    paths = [str(folder / "a.png"), str(folder / "b.png")]
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(paths[1])
    return paths


def test_evaluate_on_a_run_dir_uses_the_runs_own_dataset(run_dir, tiny_synthetic):
    result = ok(run_module("gmsop_keras.evaluate", run_dir))
    assert result.stderr.strip().splitlines() == [
        f"evaluating on {tiny_synthetic} (validation split, from {run_dir / 'config.yaml'})"]
    reported = json.loads(result.stdout)
    metrics = json.loads((run_dir / "metrics.json").read_text())  # fit's own evaluation of the same model
    assert reported["model"] == str(run_dir / "best.keras") and reported["num_examples"] == 32
    assert reported["top1_error"] == pytest.approx(metrics["top1_error"], abs=1e-6)


def test_evaluate_names_the_runs_dataset_when_it_is_gone(run_dir, tmp_path):
    moved = tmp_path / "run"
    moved.mkdir()
    shutil.copy(run_dir / "best.keras", moved)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (moved / "config.yaml").write_text(yaml.safe_dump(dict(config, dataset=str(tmp_path / "gone"))))
    result = run_module("gmsop_keras.evaluate", moved / "best.keras")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines(result.stderr, "error:") == [
        f"error: the dataset of {moved / 'config.yaml'}, {tmp_path / 'gone'}, does not exist (moved or deleted); "
        "pass --data-dir with the dataset to evaluate on"]


def test_predict_from_the_run_dir_its_best_keras_and_its_export_agree(run_dir, tiny_synthetic, image_files,
                                                                       tmp_path):
    import pipelines
    from gmsop_keras.cli.errors import run_cli
    from gmsop_keras.export import main as export_main

    class_names = pipelines.read_manifest(tiny_synthetic)["class_names"]
    saved = tmp_path / "saved_models" / "tiny"
    assert run_cli(export_main, [str(run_dir), "--output", str(saved)]) == 0
    answers = {}
    for name, model in (("run dir", run_dir), ("best.keras", run_dir / "best.keras"), ("export", saved / "1")):
        result = ok(run_module("gmsop_keras.predict", model, *image_files, "--json"))
        assert result.stderr == "", result.stderr
        answers[name] = json.loads(result.stdout)
    for name, answer in answers.items():
        assert [a["path"] for a in answer] == image_files, name
        for image, expected in zip(answer, answers["export"]):
            got = image["predictions"]
            assert len(got) == 4 and [p["name"] for p in got] == [class_names[p["class"]] for p in got], name
            assert [p["class"] for p in got] == [p["class"] for p in expected["predictions"]], name
            np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in expected["predictions"]],
                                       atol=1e-5, err_msg=name)
            assert sum(p["score"] for p in got) == pytest.approx(1.0, abs=1e-5)  # all 4 classes: the whole softmax


def damaged_copy(run_dir, folder, best=None, final=True):
    """A copy of `run_dir` whose best.keras holds `best` (bytes) and without final.keras unless `final`."""
    folder.mkdir()
    for name in ("best.json", "config.yaml", "metrics.json", "final.keras"):
        if name != "final.keras" or final:
            shutil.copy(run_dir / name, folder)
    (folder / "best.keras").write_bytes(best)
    return folder


def test_a_truncated_best_keras_is_named_and_final_keras_used(run_dir, tiny_synthetic, tmp_path):
    data = (run_dir / "best.keras").read_bytes()
    folder = damaged_copy(run_dir, tmp_path / "truncated", best=data[:len(data) // 2])
    result = ok(run_module("gmsop_keras.evaluate", folder, "--data-dir", tiny_synthetic))
    assert result.stderr.strip().splitlines() == [
        f"warning: {folder / 'best.keras'} is damaged (truncated zip: {len(data) // 2} bytes, no end of central "
        f"directory); using {folder / 'final.keras'}"]
    reported = json.loads(result.stdout)
    assert reported["model"] == str(folder / "final.keras")
    assert reported["top1_error"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["top1_error"])


def test_an_empty_best_keras_without_final_keras_is_refused_naming_both(run_dir, tmp_path):
    folder = damaged_copy(run_dir, tmp_path / "empty", best=b"", final=False)
    result = run_module("gmsop_keras.export", folder, "--output", tmp_path / "saved")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines(result.stderr, "error:") == [
        f"error: {folder / 'best.keras'} is damaged (empty file) and {folder / 'final.keras'} is missing; "
        "retrain the model (python -m gmsop_keras.fit), or pass an intact .keras file"]
    assert not (tmp_path / "saved").exists()


def test_a_best_keras_whose_config_does_not_load_falls_back_to_final(run_dir, image_files, tmp_path):
    import zipfile

    rewritten = tmp_path / "rewritten.keras"
    with zipfile.ZipFile(run_dir / "best.keras") as source, zipfile.ZipFile(rewritten, "w") as target:
        for member in source.namelist():  # an intact zip whose config names a class nobody registered
            data = source.read(member)
            target.writestr(member, b'{"class_name": "NoSuchLayer", "config": {}}' if member == "config.json" else data)
    folder = damaged_copy(run_dir, tmp_path / "config", best=rewritten.read_bytes())
    result = ok(run_module("gmsop_keras.predict", folder, image_files[0], "--json"))
    warnings = lines(result.stderr, "warning:")
    assert len(warnings) == 1 and result.stderr.strip() == warnings[0], result.stderr
    assert warnings[0].startswith(f"warning: {folder / 'best.keras'} is damaged (Keras cannot load it: Could not "
                                  "locate class 'NoSuchLayer'")
    assert warnings[0].endswith(f"; using {folder / 'final.keras'}")
    assert len(json.loads(result.stdout)[0]["predictions"]) == 4


def test_what_is_wrong_with_a_keras_file_is_told_without_loading_it(run_dir, tmp_path, capsys):
    from gmsop_keras.serving.paths import keras_file_damage, resolve_model_path
    from gmsop_keras.training.errors import UsageError

    data = bytearray((run_dir / "best.keras").read_bytes())
    cases = {
        "intact": (bytes(data), None),
        "empty": (b"", "empty file"),
        "text": (b"not a model", "not a zip file (11 bytes that do not start as one)"),
        "cut": (bytes(data[:-10]), f"truncated zip: {len(data) - 10} bytes, no end of central directory"),
    }
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the weights, the largest member
    cases["flipped"] = (bytes(flipped), "zip member model.weights.h5 fails its CRC check")
    for name, (content, expected) in cases.items():
        (tmp_path / f"{name}.keras").write_bytes(content)
        assert keras_file_damage(str(tmp_path / f"{name}.keras")) == expected, name
    with pytest.raises(UsageError) as info:
        resolve_model_path(str(tmp_path / "cut.keras"))
    assert str(info.value) == (f"{tmp_path / 'cut.keras'} is damaged ({cases['cut'][1]}); retrain the model "
                               "(python -m gmsop_keras.fit), or pass an intact .keras file")
    # best.keras missing (no epoch validated yet, say), final.keras used without a word.
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(tmp_path / "intact.keras", folder / "final.keras")
    assert resolve_model_path(str(folder)) == str(folder / "final.keras")
    assert capsys.readouterr().err == ""
